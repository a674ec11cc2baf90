"""The runnable example of dedicated timer processes runs, and shows what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_the_worker_process_example_runs_and_reports_both_timers() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worker_process.py"), "1.2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for index in (0, 1):
        assert f"cleaner[{index}]" in out
        assert f"worker {index}: pid" in out
    assert "sync timer ran at 500 ms" in out
    assert "sync timer ran at 1000 ms" in out
    assert "basic timer ran at 500 ms" in out
    assert "'sync':" in out
