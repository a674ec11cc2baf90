"""Every example in examples/ runs (briefly) and says what it did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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


def interrupt_example(name: str, wait_for: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example in a session of its own, and once it printed ``wait_for``, press Ctrl-C
    (SIGINT to its whole process group, as a terminal does, workers included)."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if wait_for in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "wait_for", "args"),
    [
        ("hello_timers.py", "heartbeat", ("--seconds", "30")),
        ("worker_process.py", "timer ran at", ("30",)),
    ],
)
def test_ctrl_c_stops_an_example_cleanly_with_exit_code_130(
    name: str, wait_for: str, args: tuple[str, ...]
) -> None:
    result = interrupt_example(name, wait_for, *args)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "KeyboardInterrupt" not in result.stderr
    assert result.stderr.strip().endswith("interrupted")


def test_cluster_nodes_run_each_grid_point_once_and_survive_a_kill() -> None:
    proc = run_example("cluster_nodes.py", "--seconds", "3", "--kill-after", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert "node-a killed (SIGKILL)" in proc.stdout
    summary = next(line for line in proc.stdout.splitlines() if "grid points ran" in line)
    assert ", 0 twice;" in summary, summary
    assert int(summary.split()[0]) >= 10, summary
    assert "last runs per timer" in proc.stdout


def test_cron_timers_runs_a_dst_night_and_wall_clock_steps() -> None:
    proc = run_example("cron_timers.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("nightly      Sun 02:30 CEST") == 1  # the fall-back night: once, not twice
    assert "nightly      Sun 02:30 CET" not in out
    assert "half-hourly  Sun 02:30 CET" in out  # a wildcard runs on the real timeline
    assert "(skipped 47)" in out  # a day's jump forward: one run, the rest counted missed
