"""Inline workers: a timer process's spec unit-tested on the parent's loop and virtual clock.

Basic and sync timers, 100 ms interval, each run working 30 ms (virtual)::

    sync  (grid):              |100===   |200===   |300===   |400===
    basic (sleep after run):   |100===          |230===          |360===
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import process_targets as pt
import pytest

import aiotimer
from aiotimer.process import (
    TimerProcess,
    WorkerInfo,
    WorkerState,
    asend_to_parent,
    attach,
    current_worker,
    send_to_parent,
)
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

MS = 1_000_000


@pytest.fixture(autouse=True)
def clear_runs() -> Iterator[None]:
    pt.RUNS.clear()
    yield
    pt.RUNS.clear()


async def start_failure(scheduler: aiotimer.Scheduler) -> BaseException:
    """The error ``scheduler.start()`` raises, out of the exception group it may come in."""
    try:
        await scheduler.start()
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc
    raise AssertionError("start() did not fail")


def runs_of(name: str, index: int = 0) -> list[int]:
    """Start times (ms of the virtual clock) of a timer's runs in one worker."""
    return [t // MS for n, i, t in pt.RUNS if n == name and i == index]


async def test_sync_timers_stay_on_the_grid_and_basic_timers_drift_by_the_run_time(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("drift", inline=True)
    proc.add_every_ms(100, pt.record_then_work, name="sync", param=30)
    proc.add_basic_ms(100, pt.record_then_work, name="basic", param=30)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    scheduler.add_process(proc)
    await scheduler.start()
    await virtual_clock.advance_ms(450)
    assert runs_of("sync") == [100, 200, 300, 400]
    assert runs_of("basic") == [100, 230, 360]
    await scheduler.stop()


async def test_basic_seconds_drift_by_the_exact_run_time_not_whole_seconds(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("drift-s", inline=True)
    proc.add_every_s(1, pt.record_then_work, name="sync", param=300)
    proc.add_basic_s(1, pt.record_then_work, name="basic", param=300)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    proc.run_inline(scheduler)
    await scheduler.start()
    await virtual_clock.advance(4)
    assert runs_of("sync") == [1000, 2000, 3000, 4000]
    assert runs_of("basic") == [1000, 2300, 3600]
    await scheduler.stop(grace_s=0)  # the run of 4000 works until 4300 of a clock held still


async def test_a_sync_basic_callback_and_a_threaded_one_rearm_after_each_run(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("basic", inline=True)
    proc.add_basic_ms(100, pt.record, name="inline")
    proc.add_basic_ms(100, pt.record, name="thread", thread=True)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    await virtual_clock.advance_ms(350)
    assert runs_of("inline") == [100, 200, 300]
    assert runs_of("thread") == [100, 200, 300]
    await scheduler.stop()


async def test_each_worker_runs_every_timer_and_knows_its_index(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("rtimer", workers=3, inline=True)
    proc.add_every_ms(50, pt.record, name="t")
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    await virtual_clock.advance_ms(100)
    assert sorted(i for _, i, _ in pt.RUNS) == [0, 0, 1, 1, 2, 2]
    assert [w.state for w in proc.workers] == [WorkerState.RUNNING] * 3
    await scheduler.stop()
    assert [w.state for w in proc.workers] == [WorkerState.STOPPED] * 3


async def test_messages_go_both_ways_copied_as_across_a_pipe(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("msg", workers=2, inline=True)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_parent_message(pt.async_echo)
    received: list[tuple[WorkerInfo, Any]] = []
    proc.on_message(lambda info, obj: received.append((info, obj)))
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    payload = {"k": [1, 2]}
    await proc.workers[1].send("ping")
    await proc.workers[0].send(payload)
    await virtual_clock.run_until_idle()
    pid = received[0][0].pid
    by_worker = sorted((info.index, repr(obj)) for info, obj in received)
    assert by_worker == [
        (0, repr(("async", {"k": [1, 2]}))),
        (0, repr({"k": [1, 2]})),
        (1, repr(("async", "ping"))),
        (1, repr(("pong", 1, pid))),
    ]
    assert all(obj is not payload for _, obj in received)  # copies, not shared objects
    await scheduler.stop()


async def test_a_message_that_does_not_pickle_is_refused_at_send(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("msg", inline=True)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    with pytest.raises(TypeError, match="cannot send a function"):
        await proc.workers[0].send(lambda: None)
    await scheduler.stop()


async def test_worker_stats_and_callback_errors_appear_in_the_parents_stats(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("stats", inline=True)
    proc.add_every_ms(100, pt.fail, name="bad", param=7)
    proc.add_every_ms(100, pt.noop, name="good")
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    await virtual_clock.advance_ms(250)
    (worker,) = scheduler.stats().as_dict()["services"]["aiotimer.process"]["workers"]["stats"]
    assert worker["state"] == "running"
    assert worker["mode"] == "inline"
    assert worker["callback_errors"] == 2
    assert worker["last_error"]["timer"] == "bad"
    assert "ValueError: boom 7" in worker["last_error"]["traceback"]
    timers = worker["stats"]["timers"]
    assert timers["good"]["runs"] == 2
    assert timers["bad"]["errors"] == 2
    await scheduler.stop()


async def test_current_worker_and_send_to_parent_refuse_outside_a_worker() -> None:
    with pytest.raises(RuntimeError, match=r"current_worker\(\) called outside an aiotimer worker"):
        current_worker()
    with pytest.raises(RuntimeError, match=r"send_to_parent\(\) called outside"):
        send_to_parent(1)
    with pytest.raises(RuntimeError, match=r"asend_to_parent\(\) called outside"):
        await asend_to_parent(1)


async def test_asend_to_parent_delivers_in_order_inline(virtual_clock: VirtualClock) -> None:
    proc = TimerProcess("flood", inline=True)
    proc.on_parent_message(pt.flood)
    received: list[Any] = []
    proc.on_message(lambda info, obj: received.append(obj))
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    await proc.workers[0].send(("flood-async", 50))
    await virtual_clock.run_until_idle()
    assert [obj[1] for obj in received[:-1]] == list(range(50))
    assert received[-1][:4] == ("done", "flood-async", 50, None)
    await scheduler.stop()


async def test_the_spec_is_frozen_while_it_runs(virtual_clock: VirtualClock) -> None:
    proc = TimerProcess("frozen", inline=True)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    await scheduler.start()
    with pytest.raises(RuntimeError, match="timer process 'frozen' is running"):
        proc.add_every_s(1, pt.noop)
    with pytest.raises(RuntimeError, match="add timer process 'late' before start"):
        attach(scheduler, TimerProcess("late"))
    await scheduler.stop()
    proc.add_every_s(1, pt.noop)  # stopped: open again


async def test_a_scheduler_restarts_its_inline_workers(virtual_clock: VirtualClock) -> None:
    proc = TimerProcess("again", inline=True)
    proc.add_every_ms(100, pt.record, name="t")
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    for _ in range(2):
        await scheduler.start()
        await virtual_clock.advance_ms(100)
        await scheduler.stop()
    assert len(runs_of("t")) == 2


async def test_an_unimportable_spec_fails_start_before_any_worker_runs(
    virtual_clock: VirtualClock,
) -> None:
    proc = TimerProcess("broken", inline=True)
    proc.add_every_s(1, pt.noop, name="n")
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    attach(scheduler, proc)
    original = pt.noop
    pt.noop = lambda: None  # type: ignore[assignment]
    try:
        error = await start_failure(scheduler)
    finally:
        pt.noop = original  # type: ignore[assignment]
    assert isinstance(error, TypeError)
    assert "timer 'n': callback process_targets.noop is not the object" in str(error)
    assert not scheduler.running
    with anyio.fail_after(1):
        await scheduler.start()  # fixed: starts
    await scheduler.stop()
