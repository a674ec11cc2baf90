"""Real worker processes: start, stop, supervision, the pipe, and no orphans.

These start real interpreters (about 0.2-0.4 s each on a small VM), so they run on asyncio
(one test on trio) and are marked slow; each is bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import process_targets as pt
import pytest

import aiotimer
from aiotimer.process import (
    TimerProcess,
    WorkerCrashed,
    WorkerInfo,
    WorkerStartError,
    WorkerState,
    attach,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TESTS = Path(__file__).parent
FAST = {"heartbeat_s": 0.1, "heartbeat_timeout_s": 2.0, "stats_interval_s": 0.1}


@pytest.fixture
def anyio_backend() -> object:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Whatever a test leaves behind is killed (and the test fails if it left anything)."""
    yield
    left = multiprocessing.active_children()
    for process in left:
        process.kill()
        process.join(5)
    assert not left, f"processes left running: {left}"


class Inbox:
    """Collects what workers send to the parent (an ``on_message`` handler)."""

    def __init__(self) -> None:
        self.items: list[tuple[WorkerInfo, Any]] = []
        self._changed = anyio.Event()

    def __call__(self, info: WorkerInfo, obj: Any) -> None:
        self.items.append((info, obj))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, pred: Callable[[WorkerInfo, Any], bool], timeout_s: float = 10) -> Any:
        with anyio.fail_after(timeout_s):
            while True:
                for info, obj in self.items:
                    if pred(info, obj):
                        return info, obj
                await self._changed.wait()


class Crashes:
    """An ``on_crash`` hook that can be awaited."""

    def __init__(self) -> None:
        self.items: list[tuple[float, WorkerCrashed]] = []
        self._changed = anyio.Event()

    def __call__(self, exc: WorkerCrashed) -> None:
        self.items.append((time.monotonic(), exc))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, n: int = 1, timeout_s: float = 10) -> WorkerCrashed:
        with anyio.fail_after(timeout_s):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items[n - 1][1]


async def eventually(pred: Callable[[], bool], timeout_s: float = 10, what: str = "") -> None:
    for _ in range(int(timeout_s / 0.02)):
        if pred():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not reached within {timeout_s} s: {what or pred}")


@asynccontextmanager
async def running(proc: TimerProcess) -> AsyncIterator[aiotimer.Scheduler]:
    scheduler = aiotimer.Scheduler(name="parent")
    attach(scheduler, proc)
    with anyio.fail_after(30):
        await scheduler.start()
    try:
        yield scheduler
    finally:
        with anyio.fail_after(30):
            await scheduler.stop(grace_s=1)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


async def test_workers_start_fire_report_their_stats_and_stop() -> None:
    inbox = Inbox()
    proc = TimerProcess("basic", workers=2, **FAST)
    proc.add_every_ms(50, pt.report_tick, name="sync")
    proc.add_basic_ms(50, pt.report_tick, name="basic")
    proc.on_message(inbox)
    async with running(proc) as scheduler:
        assert [w.state for w in proc.workers] == [WorkerState.RUNNING] * 2
        pids = [w.pid for w in proc.workers]
        assert None not in pids
        assert len(set(pids)) == 2
        assert os.getpid() not in pids
        for index in (0, 1):
            for name in ("sync", "basic"):
                await inbox.wait_for(
                    lambda _, o, i=index, n=name: o[:2] == ("tick", i) and o[3] == n
                )

        def reported() -> bool:
            workers = scheduler.stats().as_dict()["services"]["aiotimer.process"]["workers"][
                "basic"
            ]
            return all(
                (w["stats"] or {}).get("timers", {}).get("sync", {}).get("runs", 0) >= 1
                for w in workers
            )

        await eventually(reported, what="worker stats in scheduler.stats()")
        worker = scheduler.stats().as_dict()["services"]["aiotimer.process"]["workers"]["basic"][1]
        assert worker["pid"] == pids[1]
        assert worker["mode"] == proc.context  # the default: see test_start
        assert worker["state"] == "running"
        assert worker["restarts"] == 0
        assert worker["heartbeat_age_s"] < 2
        assert worker["stats"]["scheduler"] == "basic[1]"
        if sys.platform.startswith("linux") and _has_setproctitle():
            assert "aiotimer: basic [1]" in cmdline(pids[1])  # type: ignore[arg-type]
    assert [w.state for w in proc.workers] == [WorkerState.STOPPED] * 2
    assert not any(alive(pid) for pid in pids)  # type: ignore[arg-type]


def _has_setproctitle() -> bool:
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        return False
    return True


async def test_a_worker_ignores_sigint_so_ctrl_c_is_the_parents() -> None:
    inbox = Inbox()
    proc = TimerProcess("sigint", **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        pid = proc.workers[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        await proc.workers[0].send("ping")
        await inbox.wait_for(lambda _, o: o == ("pong", 0, pid))
        assert proc.workers[0].state is WorkerState.RUNNING


async def test_a_sigkilled_worker_is_detected_at_once_and_restarted() -> None:
    crashes = Crashes()
    inbox = Inbox()
    proc = TimerProcess("killme", on_crash=crashes, **FAST)
    proc.add_every_ms(20, pt.report_tick_once, name="t")
    proc.on_message(inbox)
    async with running(proc) as scheduler:
        worker = proc.workers[0]
        old_pid = worker.pid
        assert old_pid is not None
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        crash = await crashes.wait()
        assert crashes.items[0][0] - killed_at < 0.5  # the sentinel, not a poll
        assert (crash.name, crash.index, crash.pid, crash.exitcode) == ("killme", 0, old_pid, -9)
        assert "was killed by SIGKILL" in str(crash)
        await inbox.wait_for(lambda info, o: o[0] == "first" and o[2] != old_pid)
        assert worker.state is WorkerState.RUNNING
        assert worker.pid != old_pid
        stats = scheduler.stats().as_dict()["services"]["aiotimer.process"]["workers"]["killme"][0]
        assert stats["restarts"] == 1
        assert stats["crashes"] == 1
        assert "SIGKILL" in stats["last_crash"]


async def test_a_hung_worker_is_killed_and_restarted() -> None:
    crashes = Crashes()
    inbox = Inbox()
    proc = TimerProcess(
        "hung", on_crash=crashes, heartbeat_s=0.05, heartbeat_timeout_s=0.5, stats_interval_s=1
    )
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        worker = proc.workers[0]
        old_pid = worker.pid
        await worker.send("hang")  # blocks the worker's loop: its heartbeats stop
        crash = await crashes.wait(timeout_s=5)
        assert crash.exitcode == -signal.SIGKILL
        assert "sent no heartbeat for 0.5 s" in crash.reason
        await eventually(lambda: worker.state is WorkerState.RUNNING and worker.pid != old_pid)
        await worker.send("ping")
        await inbox.wait_for(lambda _, o: o == ("pong", 0, worker.pid))


async def test_garbage_on_the_pipe_is_a_protocol_error_the_worker_is_replaced() -> None:
    crashes = Crashes()
    inbox = Inbox()
    proc = TimerProcess("garbage", on_crash=crashes, **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc) as scheduler:
        worker = proc.workers[0]
        old_pid = worker.pid
        await worker.send("garbage")
        crash = await crashes.wait()
        assert "broke the protocol" in crash.reason
        assert "bad frame magic" in crash.reason
        assert worker.protocol_errors == 1
        assert scheduler.running
        await eventually(lambda: worker.state is WorkerState.RUNNING and worker.pid != old_pid)
        await worker.send("ping")
        await inbox.wait_for(lambda _, o: o == ("pong", 0, worker.pid))


async def test_an_unknown_frame_is_counted_and_the_worker_kept() -> None:
    crashes = Crashes()
    inbox = Inbox()
    proc = TimerProcess("unknown", on_crash=crashes, **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        worker = proc.workers[0]
        pid = worker.pid
        await worker.send("unknown-kind")
        await inbox.wait_for(lambda _, o: o == ("after-unknown", 0))
        assert worker.protocol_errors == 1
        assert worker.pid == pid
        assert worker.state is WorkerState.RUNNING
        assert not crashes.items


@pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ],
)
async def test_messages_go_both_ways_in_order() -> None:
    inbox = Inbox()
    proc = TimerProcess("msgs", workers=2, **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_parent_message(pt.async_echo)
    proc.on_message(inbox)
    async with running(proc):
        for i in range(200):
            proc.workers[i % 2].send_nowait(("n", i))
        await proc.workers[0].send({"big": b"x" * 2_000_000})
        await inbox.wait_for(lambda info, o: isinstance(o, dict) and info.index == 0)
        await inbox.wait_for(lambda _, o: o == ("async", ("n", 199)))
        echoed = [
            (info.index, o[1]) for info, o in inbox.items if isinstance(o, tuple) and o[0] == "n"
        ]
        assert [i for w, i in echoed if w == 0] == list(range(0, 200, 2))
        assert [i for w, i in echoed if w == 1] == list(range(1, 200, 2))
        assert all(info.pid == proc.workers[info.index].pid for info, _ in inbox.items)


async def test_log_records_of_a_worker_are_reemitted_on_the_parents_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    proc = TimerProcess("logs", **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    async with running(proc):
        worker = proc.workers[0]
        await worker.send("log")

        def forwarded() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "process_targets"]

        await eventually(lambda: bool(forwarded()), what="a forwarded record")
        (record,) = forwarded()
        assert record.getMessage() == "hello from worker 0"
        assert record.levelno == logging.WARNING
        assert record.process == worker.pid
        assert record.worker == "logs[0]"  # type: ignore[attr-defined]
        assert record.colour == "blue"  # type: ignore[attr-defined]


async def test_callback_errors_reach_the_parent_with_their_traceback() -> None:
    proc = TimerProcess("errors", **FAST)
    proc.add_every_ms(50, pt.fail, name="bad", param=42)
    async with running(proc) as scheduler:
        worker = proc.workers[0]
        await eventually(lambda: worker.callback_errors >= 1)
        assert worker.last_error is not None
        assert worker.last_error["timer"] == "bad"
        assert "ValueError: boom 42" in worker.last_error["traceback"]
        stats = scheduler.stats().as_dict()["services"]["aiotimer.process"]["workers"]["errors"][0]
        assert stats["callback_errors"] >= 1


async def test_a_worker_that_cannot_import_its_timers_fails_start_with_the_reason() -> None:
    ghost = types.ModuleType("ghost_module")  # importable here, unknown to a fresh process

    def vanish() -> None: ...

    vanish.__module__ = "ghost_module"
    vanish.__qualname__ = vanish.__name__ = "vanish"
    ghost.vanish = vanish  # type: ignore[attr-defined]
    sys.modules["ghost_module"] = ghost
    try:
        proc = TimerProcess("ghost", **FAST)
        proc.add_every_s(1, vanish, name="v")
        scheduler = aiotimer.Scheduler()
        attach(scheduler, proc)
        with anyio.fail_after(30):
            error = await _start_failure(scheduler)
    finally:
        del sys.modules["ghost_module"]
    assert isinstance(error, WorkerStartError)
    assert "worker 'ghost'[0] did not start: its timers could not be loaded" in str(error)
    assert "No module named 'ghost_module'" in str(error)
    assert not scheduler.running
    assert proc.workers[0].state is WorkerState.FAILED


async def _start_failure(scheduler: aiotimer.Scheduler) -> BaseException:
    try:
        await scheduler.start()
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc
    raise AssertionError("start() did not fail")


async def test_restarts_stop_after_max_restarts_in_the_window() -> None:
    crashes = Crashes()
    proc = TimerProcess(
        "flaky",
        on_crash=crashes,
        restart=aiotimer.process.RestartPolicy(max_restarts=1, backoff_s=0.05),
        **FAST,
    )
    proc.on_parent_message(pt.echo_to_parent)
    async with running(proc):
        worker = proc.workers[0]
        first_pid = worker.pid
        await worker.send("exit")
        await crashes.wait(1)
        await eventually(lambda: worker.state is WorkerState.RUNNING and worker.pid != first_pid)
        await worker.send("exit")
        crash = await crashes.wait(2)
        assert crash.exitcode == 3
        await eventually(lambda: worker.state is WorkerState.FAILED, what="given up")
        assert worker.restarts == 1
        assert worker.crashes == 2
        with pytest.raises(RuntimeError, match="it is failed"):
            worker.send_nowait("ping")


async def test_restart_never_leaves_a_dead_worker_dead() -> None:
    crashes = Crashes()
    proc = TimerProcess("once", on_crash=crashes, restart="never", **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    async with running(proc):
        await proc.workers[0].send("exit")
        await crashes.wait()
        await eventually(lambda: proc.workers[0].state is WorkerState.FAILED)
        assert proc.workers[0].restarts == 0


async def test_stop_escalates_to_sigterm_for_a_worker_that_does_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = TimerProcess("stubborn", heartbeat_s=0.1, heartbeat_timeout_s=30)
    proc.on_parent_message(pt.echo_to_parent)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    await scheduler.start()
    pid = proc.workers[0].pid
    await proc.workers[0].send("hang")  # its loop will never read STOP
    started = time.monotonic()
    with anyio.fail_after(10):
        await scheduler.stop(grace_s=0.1)
    assert time.monotonic() - started < 5
    assert proc.workers[0].state is WorkerState.STOPPED
    assert not alive(pid)  # type: ignore[arg-type]
    assert any("SIGTERM" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_trio_parent_runs_workers_too() -> None:
    inbox = Inbox()
    proc = TimerProcess("trio-parent", **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        await proc.workers[0].send("ping")
        await inbox.wait_for(lambda _, o: o == ("pong", 0, proc.workers[0].pid))


async def test_forkserver_workers_run_the_same_timers() -> None:
    inbox = Inbox()
    proc = TimerProcess("fs", context="forkserver", **FAST)
    proc.add_every_ms(20, pt.report_tick, name="t")
    proc.on_message(inbox)
    async with running(proc):
        await inbox.wait_for(lambda _, o: o[0] == "tick")
        assert proc.workers[0].stats().mode == "forkserver"


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_workers_exit_within_a_second_of_their_parent_being_killed(context: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    parent = subprocess.Popen(
        [sys.executable, str(TESTS / "process_parent.py"), context],
        stdout=subprocess.PIPE,
        env=env,
        cwd=TESTS,
    )
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        assert ready, "the parent script did not report its workers in time"
        pids = json.loads(parent.stdout.readline())
        assert all(alive(pid) for pid in pids)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.01)
        assert not any(alive(pid) for pid in pids), "workers outlived their parent"
    finally:
        parent.kill()
        parent.wait(5)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
