"""Every example in examples/ runs (briefly) and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_hello_timers() -> None:
    proc = run_example("hello_timers.py", "--seconds", "2.2")
    assert proc.returncode == 0, proc.stderr
    assert "heartbeat" in proc.stdout
    assert "one-shot after 2 s" in proc.stdout
    assert "heartbeat: 2 runs" in proc.stdout


def test_policies_prints_each_timeline() -> None:
    proc = run_example("policies.py")
    assert proc.returncode == 0, proc.stderr
    assert "SKIP   [100, 390, 400, 500, 600]" in proc.stdout
    assert "BURST  [100, 390, 390, 400, 500, 600]" in proc.stdout
    assert "DELAY  [100, 390, 490, 590]" in proc.stdout
    assert "Overlap.QUEUE            [100, 360, 620]" in proc.stdout


def test_cluster_nodes_run_each_grid_point_once_and_survive_a_kill() -> None:
    proc = run_example("cluster_nodes.py", "--seconds", "3", "--kill-after", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert "node-a killed (SIGKILL)" in proc.stdout
    summary = next(line for line in proc.stdout.splitlines() if "grid points ran" in line)
    assert ", 0 twice;" in summary, summary
    assert int(summary.split()[0]) >= 10, summary
    assert "last runs per timer" in proc.stdout
