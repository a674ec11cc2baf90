"""The dispatcher: how callbacks are called, what their return values and exceptions do."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import anyio
import anyio.lowlevel
import pytest
from timeline import ms

import aiotimer
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


async def test_coroutine_callbacks_run_as_tasks(virtual_clock: VirtualClock) -> None:
    """every_ms(100) of a coroutine that awaits 30 ms on the clock: starts 100, 200; ends 130."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    events: list[str] = []

    @s.every_ms(100)
    async def work(tick: aiotimer.Tick) -> None:
        events.append(f"start {ms(virtual_clock)}")
        await virtual_clock.sleep(0.03)
        events.append(f"end {ms(virtual_clock)}")

    async with s:
        await virtual_clock.advance_ms(250)
    assert events == ["start 100", "end 130", "start 200", "end 230"]


async def test_decorators_return_the_function_unchanged(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)

    def f() -> int:
        return 42

    assert s.every_s(1)(f) is f
    assert f() == 42


async def test_one_shot_runs_once_and_frees_its_name(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    timer = s.add_once_ms(30, lambda: seen.append(ms(virtual_clock)), name="once")
    async with s:
        await virtual_clock.advance(1)
        assert seen == [30]
        assert timer.state is aiotimer.TimerState.FINISHED
        assert "once" not in s.timers
        s.add_once_s(2, lambda: seen.append(ms(virtual_clock)), name="once")  # name reusable
        await virtual_clock.advance(3)
    assert seen == [30, 3000]


async def test_returns_interval_contract(virtual_clock: VirtualClock) -> None:
    """Returns None (same interval), 30 (next in 30), then 0 (stop):  |10 |20 |50 stop."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    answers = iter([None, 30, 0])
    seen: list[int] = []

    def handler() -> int | None:
        seen.append(ms(virtual_clock))
        return next(answers)

    timer = s.add_every_ms(10, handler, returns_interval=True)
    async with s:
        await virtual_clock.advance(1)
    assert seen == [10, 20, 50]
    assert timer.state is aiotimer.TimerState.FINISHED


async def test_returns_interval_keeps_the_new_interval(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    async def handler() -> int:
        seen.append(ms(virtual_clock))
        return 25

    timer = s.add_every_ms(10, handler, returns_interval=True)
    async with s:
        await virtual_clock.advance_ms(100)
    assert seen == [10, 35, 60, 85]
    assert timer.interval == 25


@pytest.mark.parametrize("bad", [-5, 2.5, "10", True, float("nan")])
async def test_a_bad_returned_interval_is_reported_and_the_schedule_kept(
    virtual_clock: VirtualClock, bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    def handler() -> object:
        seen.append(ms(virtual_clock))
        return bad

    timer = s.add_every_ms(10, handler, returns_interval=True, name="adaptive")
    async with s:
        await virtual_clock.advance_ms(30)
    assert seen == [10, 20, 30]
    assert timer.errors == 3
    assert "timer 'adaptive'" in caplog.text
    assert "returned interval" in caplog.text


async def test_plain_periodic_timers_ignore_return_values(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    def handler() -> int:
        seen.append(ms(virtual_clock))
        return 0

    s.add_every_ms(10, handler)
    async with s:
        await virtual_clock.advance_ms(30)
    assert seen == [10, 20, 30]


async def test_a_failing_callback_is_logged_counted_and_keeps_its_schedule(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    ok: list[int] = []

    @s.every_ms(10, name="flaky")
    def flaky() -> None:
        raise ValueError("boom")

    @s.every_ms(10)
    async def also_flaky() -> None:
        raise KeyError("async boom")

    s.add_every_ms(10, lambda: ok.append(ms(virtual_clock)))
    with caplog.at_level(logging.ERROR, logger="aiotimer"):
        async with s:
            await virtual_clock.advance_ms(50)
    assert ok == [10, 20, 30, 40, 50]
    assert s.timers["flaky"].errors == 5
    assert s.get_timer(aiotimer.TimerSpec(also_flaky, 1, aiotimer.Unit.S).label).errors == 5
    records = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert records
    assert records[0].exc_info is not None
    assert "timer 'flaky' failed: ValueError: boom" in caplog.text


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit(3)"])
def test_keyboard_interrupt_and_system_exit_are_not_swallowed(exc: str) -> None:
    """They end the program (asyncio re-raises them out of the loop), unlike Exception."""
    script = textwrap.dedent(
        f"""
        import asyncio, aiotimer
        from aiotimer.testing import VirtualClock

        async def main():
            clock = VirtualClock()
            s = aiotimer.Scheduler(clock=clock)
            def stop():
                raise {exc}
            s.add_every_ms(10, stop)
            async with s:
                await clock.advance(1)
            print("survived")

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert "survived" not in proc.stdout
    assert proc.returncode != 0
    assert exc.split("(")[0] in proc.stderr or proc.returncode == 3


async def test_sync_callback_with_tick_and_without(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    got: list[object] = []

    class Handler:
        def __call__(self, tick: aiotimer.Tick) -> None:
            got.append(tick.ticks_raw)

    s.add_every_ms(5, Handler())
    s.add_every_ms(5, lambda: got.append("noarg"))
    async with s:
        await virtual_clock.advance_ms(5)
    assert got == [5, "noarg"]


async def test_an_async_callable_object_is_a_coroutine_callback(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    got: list[int] = []

    class Job:
        async def __call__(self) -> None:
            await anyio.lowlevel.checkpoint()
            got.append(ms(virtual_clock))

    s.add_every_ms(5, Job())
    async with s:
        await virtual_clock.advance_ms(10)
    assert got == [5, 10]


async def test_coroutine_timers_of_one_interval_keep_their_policies_in_a_big_batch(
    virtual_clock: VirtualClock,
) -> None:
    """300 coroutine timers of one interval and a sync one share a bucket that the lean loop
    runs (eager runs on asyncio, tasks on trio): completing, suspending, failing and
    overlapping runs keep their counts and their schedule on every backend."""
    s = aiotimer.Scheduler(clock=virtual_clock)

    async def quick(tick: aiotimer.Tick) -> None:
        assert tick.scheduled_ns % (10 * 1_000_000) == 0

    async def suspends() -> None:
        await anyio.lowlevel.checkpoint()

    async def fails() -> None:
        raise ValueError("coroutine failure")

    async def slow() -> None:
        await virtual_clock.sleep(0.025)

    quicks = [s.add_every_ms(10, quick) for _ in range(100)]
    suspenders = [s.add_every_ms(10, suspends) for _ in range(100)]
    failers = [s.add_every_ms(10, fails) for _ in range(50)]
    slows = [s.add_every_ms(10, slow, overlap=aiotimer.Overlap.SKIP) for _ in range(50)]
    syncs: list[int] = []
    s.add_every_ms(10, lambda: syncs.append(1))
    async with s:
        assert s._ms.queue._uniform.get(10) == 10  # one uniform bucket: the lean loop's
        await virtual_clock.advance_ms(70)
        await s.stop(grace_s=0)
    assert {(t.runs, t.errors) for t in quicks} == {(7, 0)}
    assert {t.runs for t in suspenders} == {7}
    assert {(t.runs, t.errors) for t in failers} == {(7, 7)}
    assert {(t.runs, t.overlaps) for t in slows} == {(3, 4)}  # runs at 10, 40, 70
    assert len(syncs) == 7
