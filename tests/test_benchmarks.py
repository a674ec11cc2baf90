"""The benchmark suite runs end to end: ``python -m benchmarks memory --quick`` in a subprocess
prints a machine line and well-formed tables, and writes ``results.json`` with measured numbers.

A smoke test, not a performance test: it asserts the shape of the output, never a target.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_smoke import REPO, SMOKE_TIMEOUT_S, cells, run_benchmarks, table_rows

SIDE_BY_SIDE = ["--variant-jobs", "4"]
"""A workload's variants, four at a time: most of each one's time is spent waiting for the
clock (grid points, windows), and these tests assert no number that competition changes."""


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_memory_workload_prints_tables_and_writes_results(tmp_path: Path) -> None:
    proc = run_benchmarks(["benchmarks", "memory", "--quick", *SIDE_BY_SIDE], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    assert "memory: " in proc.stderr  # progress goes to stderr

    header, rows = table_rows(proc.stdout, "memory: 100,000 periodic 1 s timers")
    assert header.split() == [
        "loop",
        "impl",
        "reg",
        "us/timer",
        "RSS",
        "B/timer",
        "tracemalloc",
        "B/timer",
    ]
    assert any(row.split()[:2] == ["asyncio", "aiotimer"] for row in rows)
    assert any(row.split()[:2] == ["asyncio", "call_at"] for row in rows)
    for row in rows:
        assert len(row.split()) == 5, row
    _, targets = table_rows(proc.stdout, "targets")
    assert targets
    assert all(row.split()[-1] in ("met", "MISSED", "n/a") for row in targets)

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    machine = results["machine"]
    assert machine["cpu_model"]
    assert machine["cores"] >= 1
    assert machine["python"]
    memory = results["workloads"]["memory"]
    assert memory["ok"]
    assert memory["quick"]
    aiotimer = memory["variants"]["aiotimer/asyncio"]
    for key in ("register_us_per_timer", "rss_bytes_per_timer", "traced_bytes_per_timer"):
        assert isinstance(aiotimer[key], float), key
        assert math.isfinite(aiotimer[key]), key
    assert aiotimer["register_us_per_timer"] > 0
    assert aiotimer["traced_bytes_per_timer"] > 0
    assert {t["met"] for t in memory["targets"]} <= {True, False, None}
    assert (tmp_path / "memory.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_churn_workload_prints_every_variant_next_to_its_baseline(tmp_path: Path) -> None:
    proc = run_benchmarks(["benchmarks", "churn", "--quick", *SIDE_BY_SIDE], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = table_rows(proc.stdout, "churn: 10,000 pending one-shots")
    assert header.split()[:2] == ["loop", "impl"]
    impls = ["call_later", "cancel+add_once_ms", "reschedule", "kamailio", "pause+reschedule"]
    assert [row.split()[1] for row in rows[:5]] == impls
    for row in rows:
        row_cells = row.split()
        assert len(row_cells) == 7, row
        assert float(row_cells[2]) > 0, row  # CPU s per wall s
    assert [row.split()[3] for row in rows if row.split()[1] == "call_later"] == ["1.00"] * (
        len(rows) // 5
    )

    churn = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["workloads"][
        "churn"
    ]
    assert churn["ok"]
    variant = churn["variants"]["reschedule/asyncio"]
    assert variant["pending"] == 10_000
    assert variant["batches_in_window"] == 3  # the window holds whole batches
    # Each slot armed once at most: the re-arms keep one one-shot per slot (the few that
    # fired, not re-armed in time, wait for their slot's next pick).
    assert 9_000 < variant["pending_at_end"] <= 10_000
    assert variant["fires_per_s"] > 0  # (it starts in its steady state: some are due at once)
    assert math.isfinite(variant["cpu_per_wall_s"])


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_churn_memory_check_samples_rss_of_every_variant(tmp_path: Path) -> None:
    proc = run_benchmarks(
        ["benchmarks.churn", "--minutes", "0.05", "--sample-s", "1", "--quick"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, rows = table_rows(proc.stdout, "churn memory: 10,000 pending one-shots")
    assert [row.split()[0] for row in rows] == [
        f"{impl}/asyncio"
        for impl in (
            "call_later",
            "cancel+add_once_ms",
            "reschedule",
            "kamailio",
            "pause+reschedule",
        )
    ]
    results = json.loads((tmp_path / "churn_memory.json").read_text(encoding="utf-8"))
    for variant in results["variants"].values():
        samples = variant["samples"]
        assert [at for at, _, _ in samples] == [0.0, 1.0, 2.0, 3.0]
        assert all(rss > 0 for _, rss, _ in samples)


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_cluster_workload_claims_every_batch_once_on_every_store(tmp_path: Path) -> None:
    proc = run_benchmarks(["benchmarks", "cluster", "--quick", *SIDE_BY_SIDE], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = table_rows(proc.stdout, "cluster: claim cost per batch")
    assert header.split()[:3] == ["store", "nodes", "timers"]
    stores = {row.split()[0] for row in rows}
    assert "sqlite" in stores  # the servers' rows appear when they are reachable
    if os.environ.get("AIOTIMER_REQUIRE_SERVICES") == "1":
        assert stores == {"sqlite", "postgres", "redis"}, proc.stdout
    for row in rows:
        row_cells = row.split()
        assert row_cells[-2:] == ["0", "0"], f"duplicates or gaps: {row}"
        assert row_cells[6] == "1.00", f"not one round trip per batch: {row}"
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["workloads"]["cluster"]["ok"]


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_policies_measures_coroutine_and_thread_paths_next_to_their_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variants of the floor table, each in its child as the workload runs them, side by side
    # (they mostly sleep): the report is then built from their results as in a full run.
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import policies

    aiotimer_names = ["fast path", policies.COROUTINE, policies.SUSPENDING, policies.THREAD]
    names = [*aiotimer_names, *policies.FLOORS]
    assert set(names) <= set(policies.variants(quick=True))
    assert "coroutine, eager=False" in set(policies.variants(False)) - set(policies.variants(True))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "benchmarks.policies", "--quick"]
    children = {
        name: subprocess.Popen(
            [*command, "--variant", name, "--result", str(tmp_path / f"{i}.json")],
            cwd=REPO,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i, name in enumerate(names)
    }
    for name, child in children.items():
        assert child.wait(timeout=SMOKE_TIMEOUT_S) == 0, name
    results = {
        name: json.loads((tmp_path / f"{i}.json").read_text(encoding="utf-8"))
        for i, name in enumerate(names)
    }
    for name, r in results.items():
        assert r["floor"] == name.startswith("floor: "), name
        assert r["fires_per_s"] > 0.5 * r["timers"], (name, r)  # one second's fires, at least
        assert math.isfinite(r["cpu_us_per_fire"]), (name, r)
        assert r["cpu_us_per_fire"] > 0, (name, r)
    # a floor does the work of its aiotimer variant's N timers
    assert results[policies.FLOOR_EXECUTOR]["timers"] == results[policies.THREAD]["timers"]
    assert results[policies.FLOOR_SEND]["timers"] == results[policies.COROUTINE]["timers"]
    eager_floor = results[policies.FLOOR_EAGER_SUSPENDING]
    assert eager_floor["timers"] == results[policies.SUSPENDING]["timers"]

    report = policies.report(results, True, tmp_path)
    stdout = "\n\n".join(report.tables)
    _, rows = table_rows(stdout, "policies: CPU per fire")
    assert [cells(row)[0] for row in rows] == aiotimer_names
    _, floor_rows = table_rows(stdout, "policies floors:")
    assert len(floor_rows) == len(policies.PAIRS)
    for row, (variant, floor, _) in zip(floor_rows, policies.PAIRS, strict=True):
        row_cells = cells(row)
        assert row_cells[0] == variant
        assert row_cells[2] == floor.removeprefix("floor: ")
        us, floor_us = results[variant]["cpu_us_per_fire"], results[floor]["cpu_us_per_fire"]
        assert float(row_cells[4].replace(",", "")) == pytest.approx(us / floor_us, rel=0.01)
    assert [(t["target"], t["op"], t["limit"], t["unit"]) for t in report.targets] == [
        ("coroutine (no suspension): CPU per fire", "<=", 1.5, "us"),
        (f"{policies.SUSPENDING} / {policies.FLOOR_TASK_SUSPENDING}", "<=", 1.2, "x"),
        (f"{policies.THREAD} / {policies.FLOOR_EXECUTOR}", "<=", 1.5, "x"),
    ]
    assert all(t["met"] in (True, False) for t in report.targets)
    # the least an eager timer can cost: what any timer does, plus the eager step
    bound = results["fast path"]["cpu_us_per_fire"]
    bound += results[policies.FLOOR_EAGER]["cpu_us_per_fire"]
    assert report.data["eager_bound_us"] == pytest.approx(bound)
    assert any(note.startswith("the least an eager coroutine timer can") for note in report.notes)
    # and one that suspends once: what any timer does, plus the tracked and timed floor
    us = {name: r["cpu_us_per_fire"] for name, r in results.items()}
    least = us["fast path"] + us[policies.FLOOR_LEAST_SUSPENDING]
    assert report.data["suspend_once_bound_ratio"] == pytest.approx(
        least / us[policies.FLOOR_TASK_SUSPENDING]
    )
    assert any(
        note.startswith("the least an eager coroutine timer that suspends once")
        for note in report.notes
    )


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_apscheduler_workload_compares_coroutine_jobs_with_apscheduler(
    tmp_path: Path,
) -> None:
    # APScheduler 3 is the bench extra's baseline: without it the workload runs aiotimer alone.
    apscheduler = importlib.util.find_spec("apscheduler") is not None
    proc = run_benchmarks(["benchmarks", "apscheduler", "--quick", *SIDE_BY_SIDE], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, rows = table_rows(proc.stdout, "apscheduler: 10,000 periodic 1 s jobs")
    assert [row.split()[0].split("[")[0] for row in rows] == [
        "aiotimer/sync",
        "aiotimer/async",
        "floor/eager",
        *(["apscheduler/async"] if apscheduler else []),
    ]
    for row in rows:
        assert len(row.split()) == 9, row
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    aps = results["workloads"]["apscheduler"]
    assert aps["ok"]
    coroutine_jobs = aps["variants"]["aiotimer/async"]
    assert coroutine_jobs["fires_per_s"] > 0.5 * 10_000
    assert math.isfinite(coroutine_jobs["lateness"]["p99_ms"])
    if not apscheduler:
        assert "APScheduler 3 is not installed" in proc.stdout
        return
    _, ratios = table_rows(proc.stdout, "apscheduler ratios")
    assert {row.split()[0] for row in ratios} == {"aiotimer/sync", "aiotimer/async"}
    assert "floor/eager: the eager semantics alone cost" in proc.stdout
    floor = aps["variants"]["floor/eager"]
    assert floor["fires_per_s"] > 0.5 * 10_000
    # a baseline that cannot keep up makes the CPU ratios lower bounds, and the report says so
    saturated = aps["variants"]["apscheduler/async"]["fires_per_s"] < 0.99 * 10_000
    assert saturated == any("are lower bounds" in note for note in aps["notes"])
    assert {(t["target"], t["limit"]) for t in aps["targets"]} == {
        ("aiotimer/sync: CPU, APScheduler / aiotimer", 50),
        ("aiotimer/sync: p99 lateness", 5),
        ("aiotimer/async: CPU, APScheduler / aiotimer", 50),
        ("aiotimer/async: p99 lateness", 10),
    }
