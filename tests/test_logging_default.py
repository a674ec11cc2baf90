"""Errors reach stderr when the application configured no logging (no ``NullHandler``):
Python's last-resort handler shows warnings and errors, as it does for asyncio's own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiotimer

ROOT = Path(aiotimer.__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def run_script(code: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that configures no logging at all."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_a_failing_callback_reaches_stderr_with_no_logging_configured() -> None:
    result = run_script(
        """
        import anyio
        import aiotimer

        async def main() -> None:
            async with aiotimer.Scheduler() as s:
                @s.every_ms(20, name="bad")
                def bad() -> None:
                    raise RuntimeError("disk full")

                await anyio.sleep(0.1)

        anyio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "timer 'bad' failed: RuntimeError: disk full" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stdout == ""


def test_the_package_adds_no_handler_of_its_own() -> None:
    result = run_script(
        """
        import logging, aiotimer, aiotimer.process, aiotimer.aiohttp, aiotimer.prometheus
        print([h for h in logging.getLogger("aiotimer").handlers])
        """
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.slow
def test_a_worker_that_gave_up_restarting_reaches_stderr_with_no_logging_configured() -> None:
    result = run_script(
        """
        import anyio
        import aiotimer
        import process_targets as pt
        from aiotimer.process import RestartPolicy, TimerProcess, WorkerState

        proc = TimerProcess(
            "crashy", restart=RestartPolicy(max_restarts=1, backoff_s=0), stats_interval_s=0.1
        )
        proc.add_every_ms(50, pt.exit_3, name="die")

        async def main() -> None:
            scheduler = aiotimer.Scheduler()
            scheduler.add_process(proc)
            with anyio.fail_after(20):
                async with scheduler:
                    while proc.workers[0].state is not WorkerState.FAILED:
                        await anyio.sleep(0.05)

        if __name__ == "__main__":
            anyio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "worker 'crashy'[0]" in result.stderr
    assert "exited with code 3" in result.stderr  # each crash
    assert "giving up after 1 restarts within 60 s" in result.stderr
