"""The ``instructions`` workload counts what it says: ``python -m benchmarks instructions --quick``
under valgrind counts only the batches of each variant (not the interpreter's start-up), divides
by their fires, and pairs aiotimer with its floor. A smoke test: it asserts no target.

In a file of its own: the suite's workers take whole files, and this one spends ~25 s in
valgrind, beside the other benchmark smoke tests rather than after them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from benchmark_smoke import REPO, cells, run_benchmarks, table_rows

TIMEOUT_S = 120


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 15)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_quick_instructions_counts_the_batches_of_aiotimer_and_its_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import instructions

    proc = run_benchmarks(
        ["benchmarks", "instructions", "--quick", "--variant-jobs", "2"], tmp_path, TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "instructions.json").read_text(encoding="utf-8"))
    assert results["ok"]
    assert results["valgrind"].startswith("valgrind")
    n, steps = instructions.TIMERS[1], instructions.STEPS[1]
    variants = results["variants"]
    assert list(variants) == list(instructions.QUICK_VARIANTS)
    for name, r in variants.items():
        # every timer ran once a batch: the counted window held exactly the counted batches
        assert r["fires"] == n * steps, (name, r)
        assert r["per_fire"] == pytest.approx(r["instructions"] / r["fires"])
        # a fire costs thousands of instructions; the interpreter's start-up (~10^9) is not in
        assert 1_000 < r["per_fire"] < 500_000, (name, r)

    rows = [cells(row) for row in table_rows(proc.stdout, "instructions ratios")[1]]
    ours, floor = instructions.QUICK_VARIANTS
    assert [row[0] for row in rows] == [ours]
    assert rows[0][2] == floor.removeprefix("floor: ")
    ratio = variants[ours]["per_fire"] / variants[floor]["per_fire"]
    assert float(rows[0][4]) == pytest.approx(ratio, abs=0.006)
    assert [(t["target"], t["limit"]) for t in results["targets"]] == [
        (f"{ours} / {floor}, in instructions", 1.2)
    ]


def test_without_valgrind_nothing_is_counted_and_the_report_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import instructions

    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert instructions.variants(quick=True) == []
    assert instructions.variants(quick=False) == []
    report = instructions.report({}, True, tmp_path)
    assert report.tables == []
    assert report.targets == []
    assert any("valgrind is not installed" in note for note in report.notes)
