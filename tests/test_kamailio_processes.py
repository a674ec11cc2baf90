"""aiotimer.kamailio: dedicated timer processes (register_basic_timers, fork_*_timer).

Inline workers (``use_scheduler(s, inline_processes=True)``) run on the test's virtual clock;
one test forks a real process. Interval 1 s, each run working 300 ms (virtual)::

    sync  (fork_sync_timer):   |1000===   |2000===   |3000===
    basic (fork_basic_timer):  |1000===      |2300===      |3600===

Worker processes import what they run, so the callbacks here are module-level functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiotimer
from aiotimer import kamailio
from aiotimer.kamailio import (
    PROC_MAIN,
    PROC_TIMER,
    fork_basic_timer,
    fork_basic_timer_w,
    fork_basic_utimer,
    fork_basic_utimer_w,
    fork_dummy_timer,
    fork_sync_timer,
    fork_sync_utimer,
    register_basic_timers,
    register_dummy_timers,
    register_sync_timers,
    register_timer_process,
)
from aiotimer.process import TimerProcess, WorkerInfo, send_to_parent
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

RUNS: list[tuple[str, int, int]] = []
"""(what, ticks the callback got, virtual ms when it ran)."""
CLOCK: list[VirtualClock] = []


def now_ms() -> int:
    return CLOCK[0].now_ns() // 1_000_000


async def work(ticks: int, param: tuple[str, int]) -> None:
    """``f(ticks, param)``: record, then work ``param[1]`` virtual ms."""
    name, work_ms = param
    RUNS.append((name, ticks, now_ms()))
    await CLOCK[0].sleep(work_ms / 1000)


def record(ticks: int, param: str) -> None:
    RUNS.append((param, ticks, now_ms()))


def record_w(ticks: int, worker: int, param: str) -> None:
    RUNS.append((f"{param}[{worker}]", ticks, now_ms()))


def record_get_ticks(ticks: int, param: str) -> None:
    RUNS.append((param, kamailio.get_ticks(), now_ms()))


def report(ticks: int, param: str) -> None:
    """In a real worker process: tell the parent."""
    send_to_parent((param, ticks, os.getpid()))


@pytest.fixture(autouse=True)
def inline(virtual_clock: VirtualClock) -> Iterator[aiotimer.Scheduler]:
    RUNS.clear()
    CLOCK[:] = [virtual_clock]
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    with kamailio.use_scheduler(scheduler, inline_processes=True):
        yield scheduler
    RUNS.clear()


def runs(name: str) -> list[tuple[int, int]]:
    return [(ticks, ms) for n, ticks, ms in RUNS if n == name]


async def test_a_basic_timer_drifts_by_the_run_time_and_a_sync_timer_keeps_its_grid(
    virtual_clock: VirtualClock, inline: aiotimer.Scheduler
) -> None:
    assert register_basic_timers(1) == 0
    assert register_sync_timers(1) == 0
    fork_basic_timer(PROC_TIMER, "basic", 1, work, ("basic", 300), 1)
    fork_sync_timer(PROC_TIMER, "sync", 1, work, ("sync", 300), 1)
    async with inline:
        await virtual_clock.advance(4.5)  # no run in progress: the stop has nothing to wait for
    assert runs("sync") == [(1, 1000), (2, 2000), (3, 3000), (4, 4000)]
    assert [ms for _, ms in runs("basic")] == [1000, 2300, 3600]


async def test_utimers_take_microseconds_rounded_up_to_whole_ms_and_pass_raw_ticks(
    virtual_clock: VirtualClock, inline: aiotimer.Scheduler
) -> None:
    register_basic_timers(2)
    fork_basic_utimer(PROC_TIMER, "basic-u", 0, record, "basic-u", 1500)  # 1.5 ms -> 2 ms
    fork_sync_utimer(PROC_TIMER, "sync-u", 0, record, "sync-u", 3000)  # 3 ms
    async with inline:
        await virtual_clock.advance_ms(9.5)
    assert runs("basic-u") == [(2, 2), (4, 4), (6, 6), (8, 8)]
    assert runs("sync-u") == [(3, 3), (6, 6), (9, 9)]


async def test_the_w_variants_pass_the_worker_index(
    virtual_clock: VirtualClock, inline: aiotimer.Scheduler
) -> None:
    register_dummy_timers(3)
    for worker in range(2):  # rtimer's mode=2: the same work in two processes
        fork_basic_timer_w(PROC_TIMER, f"rtimer-{worker}", 1, record_w, worker, "rt", 1)
    fork_basic_utimer_w(PROC_TIMER, "rtimer-u", 1, record_w, 7, "u", 10_000)
    async with inline:
        await virtual_clock.advance(1)
    assert sorted(n for n, _, _ in RUNS if n.startswith("rt")) == ["rt[0]", "rt[1]"]
    assert runs("u[7]") == [(10, 10), (20, 20)] + [(t, t) for t in range(30, 1001, 10)]


async def test_fork_returns_an_id_with_the_process_named_by_desc(
    inline: aiotimer.Scheduler,
) -> None:
    register_basic_timers(2)
    first = fork_dummy_timer(PROC_TIMER, "MY MOD TIMER", 1, record, "x", 1)
    second = fork_basic_timer(PROC_MAIN, "OTHER", 0, record, "y", 2)
    assert (first, second) == (0, 1)
    assert first >= 0  # Kamailio's callers test `< 0`
    assert isinstance(first.process, TimerProcess)
    assert first.process.name == "MY MOD TIMER"
    assert first.process.scheduler is inline
    assert second.process.timers[0].spec.describe() == "every 2 s"


async def test_get_ticks_in_a_worker_callback_reads_the_workers_scheduler(
    virtual_clock: VirtualClock, inline: aiotimer.Scheduler
) -> None:
    register_basic_timers(1)
    fork_sync_timer(PROC_TIMER, "ticks", 0, record_get_ticks, "t", 1)
    await virtual_clock.advance(5)  # the parent's scheduler has not started: its ticks are 0
    async with inline:
        await virtual_clock.advance(2)
    assert runs("t") == [(1, 6000), (2, 7000)]


async def test_register_timer_process_reserves_and_forks_in_one_call(
    virtual_clock: VirtualClock, inline: aiotimer.Scheduler
) -> None:
    pid = register_timer_process(record, "p", 1)
    assert pid.process.name == f"{__name__}.record"
    async with inline:
        await virtual_clock.advance(2)
    assert runs("p") == [(1, 1000), (2, 2000)]


def test_forking_more_than_reserved_is_refused_naming_desc_and_counts(
    inline: aiotimer.Scheduler,
) -> None:
    with pytest.raises(
        RuntimeError,
        match=r"fork_basic_timer\('MY MOD TIMER'\): 0 timer process\(es\) reserved on scheduler "
        r"'aiotimer' and 0 already forked; call register_basic_timers\(1\)",
    ):
        fork_basic_timer(PROC_TIMER, "MY MOD TIMER", 1, record, None, 1)
    register_basic_timers(1)
    fork_basic_timer(PROC_TIMER, "MY MOD TIMER", 1, record, None, 1)
    with pytest.raises(
        RuntimeError,
        match=r"fork_sync_timer\('SECOND'\): 1 timer process\(es\) reserved on scheduler "
        r"'aiotimer' and 1 already forked \('MY MOD TIMER'\); call register_basic_timers\(2\)",
    ):
        fork_sync_timer(PROC_TIMER, "SECOND", 1, record, None, 1)


def test_reservations_are_per_scheduler(inline: aiotimer.Scheduler) -> None:
    register_basic_timers(1)
    with (
        kamailio.use_scheduler(aiotimer.Scheduler(name="other")),
        pytest.raises(RuntimeError, match="0 timer process"),
    ):
        fork_basic_timer(PROC_TIMER, "X", 1, record, None, 1)
    fork_basic_timer(PROC_TIMER, "X", 1, record, None, 1)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: fork_basic_timer(PROC_TIMER, "L", 1, lambda t, p: None, None, 1),
            TypeError,
            r"fork_basic_timer\('L'\): f .*<lambda> is a lambda; a worker process imports",
        ),
        (
            lambda: fork_basic_timer(PROC_TIMER, "P", 1, record, lambda: 0, 1),
            TypeError,
            r"fork_basic_timer\('P'\): param must pickle to reach a worker process",
        ),
        (
            lambda: fork_basic_timer(PROC_TIMER, "", 1, record, None, 1),
            TypeError,
            r"fork_basic_timer: desc \(the process name\) must be a non-empty str, got ''",
        ),
        (
            lambda: fork_basic_timer("timer", "D", 1, record, None, 1),  # type: ignore[arg-type]
            TypeError,
            "fork_basic_timer: child_id must be an int",
        ),
        (
            lambda: fork_basic_timer(PROC_TIMER, "D", None, record, None, 1),  # type: ignore[arg-type]
            TypeError,
            r"fork_basic_timer\('D'\): make_sock must be an int or bool, got None",
        ),
        (
            lambda: fork_basic_timer(PROC_TIMER, "D", 1, record, None, 0),
            ValueError,
            "timer 'test_kamailio_processes.record': interval_s must be finite and > 0, got 0",
        ),
        (
            lambda: fork_basic_utimer(PROC_TIMER, "D", 1, record, None, 0),
            ValueError,
            r"fork_basic_utimer: uinterval \(µs\) must be > 0, got 0",
        ),
        (
            lambda: fork_basic_timer_w(PROC_TIMER, "D", 1, record_w, -1, None, 1),
            ValueError,
            "fork_basic_timer_w: worker must be >= 0, got -1",
        ),
        (
            lambda: fork_basic_timer(PROC_TIMER, "D", 1, None, None, 1),  # type: ignore[arg-type]
            TypeError,
            "fork_basic_timer: f must be callable, got NoneType None",
        ),
        (lambda: register_basic_timers(-1), ValueError, "must be >= 0, got -1"),
        (lambda: register_sync_timers("2"), TypeError, "must be an int, got '2'"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_at_once_and_consume_no_reservation(
    inline: aiotimer.Scheduler, call: Any, error: type[Exception], match: str
) -> None:
    register_basic_timers(1)
    with pytest.raises(error, match=match):
        call()
    fork_basic_timer(PROC_TIMER, "still free", 1, record, None, 1)


def test_a_desc_already_used_on_the_scheduler_is_refused(inline: aiotimer.Scheduler) -> None:
    register_basic_timers(2)
    fork_basic_timer(PROC_TIMER, "SAME", 1, record, None, 1)
    with pytest.raises(ValueError, match="a timer process named 'SAME' is already attached"):
        fork_basic_timer(PROC_TIMER, "SAME", 1, record, None, 1)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_real_worker_process_runs_the_callback(anyio_backend: str) -> None:
    scheduler = aiotimer.Scheduler(name="real")
    got: list[tuple[WorkerInfo, Any]] = []
    with kamailio.use_scheduler(scheduler):
        register_basic_timers(1)
        pid = fork_basic_utimer(PROC_TIMER, "KAM REAL", 0, report, "hello", 50_000)
    arrived = anyio.Event()

    def on_message(info: WorkerInfo, obj: Any) -> None:
        got.append((info, obj))
        arrived.set()

    pid.process.on_message(on_message)
    async with scheduler:
        with anyio.fail_after(20):
            await arrived.wait()
    info, (param, ticks, child_pid) = got[0]
    assert param == "hello"
    assert ticks >= 50  # raw ticks (ms) of the worker's own scheduler
    assert child_pid != os.getpid()
    assert info.pid == child_pid
    assert info.name == "KAM REAL"


def test_the_facade_imports_the_process_layer_only_when_processes_are_used() -> None:
    code = (
        "import sys; from aiotimer import kamailio; "
        "assert 'aiotimer.process' not in sys.modules; "
        "kamailio.register_basic_timers(1); "
        "assert 'aiotimer.process' in sys.modules"
    )
    root = str(Path(aiotimer.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": root})
