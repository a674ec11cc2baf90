"""The benchmark suite runs end to end: ``python -m benchmarks memory --quick`` in a subprocess
prints a machine line and well-formed tables, and writes ``results.json`` with measured numbers.

A smoke test, not a performance test: it asserts the shape of the output, never a target.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 45


def _table_rows(stdout: str, title_prefix: str) -> tuple[str, list[str]]:
    """The header and data rows of the table whose title starts with ``title_prefix``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_prefix))
    header, rule = lines[start + 1], lines[start + 2]
    assert set(rule) == {"-"}, f"no rule under the header of {title_prefix!r}: {rule!r}"
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append(line)
    return header, rows


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_memory_workload_prints_tables_and_writes_results(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "memory", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    assert "memory: " in proc.stderr  # progress goes to stderr

    header, rows = _table_rows(proc.stdout, "memory: 100,000 periodic 1 s timers")
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
    _, targets = _table_rows(proc.stdout, "targets")
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


def _run_benchmarks(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", *args, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_churn_workload_prints_every_variant_next_to_its_baseline(tmp_path: Path) -> None:
    proc = _run_benchmarks(["benchmarks", "churn", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = _table_rows(proc.stdout, "churn: 10,000 pending one-shots")
    assert header.split()[:2] == ["loop", "impl"]
    impls = ["call_later", "cancel+add_once_ms", "reschedule", "kamailio"]
    assert [row.split()[1] for row in rows[:4]] == impls
    for row in rows:
        cells = row.split()
        assert len(cells) == 7, row
        assert float(cells[2]) > 0, row  # CPU s per wall s
    assert [row.split()[3] for row in rows if row.split()[1] == "call_later"] == ["1.00"] * (
        len(rows) // 4
    )

    churn = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["workloads"][
        "churn"
    ]
    assert churn["ok"]
    variant = churn["variants"]["reschedule/asyncio"]
    assert variant["pending"] == 10_000
    assert variant["batches_in_window"] == 3  # the window holds whole batches
    assert variant["pending_at_end"] == 10_000  # re-arming keeps every slot armed, once
    assert math.isfinite(variant["cpu_per_wall_s"])


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_churn_memory_check_samples_rss_of_every_variant(tmp_path: Path) -> None:
    proc = _run_benchmarks(
        ["benchmarks.churn", "--minutes", "0.05", "--sample-s", "1", "--quick"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, rows = _table_rows(proc.stdout, "churn memory: 10,000 pending one-shots")
    assert [row.split()[0] for row in rows] == [
        f"{impl}/asyncio" for impl in ("call_later", "cancel+add_once_ms", "reschedule", "kamailio")
    ]
    results = json.loads((tmp_path / "churn_memory.json").read_text(encoding="utf-8"))
    for variant in results["variants"].values():
        samples = variant["samples"]
        assert [at for at, _, _ in samples] == [0.0, 1.0, 2.0, 3.0]
        assert all(rss > 0 for _, rss, _ in samples)


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 15)
def test_quick_cluster_workload_claims_every_batch_once_on_every_store(tmp_path: Path) -> None:
    proc = _run_benchmarks(["benchmarks", "cluster", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = _table_rows(proc.stdout, "cluster: claim cost per batch")
    assert header.split()[:3] == ["store", "nodes", "timers"]
    stores = {row.split()[0] for row in rows}
    assert "sqlite" in stores  # the servers' rows appear when they are reachable
    if os.environ.get("AIOTIMER_REQUIRE_SERVICES") == "1":
        assert stores == {"sqlite", "postgres", "redis"}, proc.stdout
    for row in rows:
        cells = row.split()
        assert cells[-2:] == ["0", "0"], f"duplicates or gaps: {row}"
        assert cells[6] == "1.00", f"not one round trip per batch: {row}"
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["workloads"]["cluster"]["ok"]
