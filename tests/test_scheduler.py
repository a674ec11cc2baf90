"""The Scheduler's lifecycle: start, stop with a grace period, restart, structured serve."""

from __future__ import annotations

import anyio
import pytest

import aiotimer
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

MS = 1_000_000


async def test_start_returns_once_running_and_stop_is_idempotent(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    assert not s.running
    await s.start()
    assert s.running
    assert s.stats().state == "running"
    await s.stop()
    assert not s.running
    await s.stop()  # again: nothing to do


async def test_double_start_is_a_clear_error(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock, name="main")
    async with s:
        with pytest.raises(RuntimeError, match="scheduler 'main' is already running"):
            await s.start()
        async with anyio.create_task_group() as tg:
            with pytest.raises(RuntimeError, match="already running"):
                await tg.start(s.serve)


async def test_stop_waits_for_running_callbacks_within_the_grace(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    events: list[str] = []

    @s.every_s(1)
    async def job() -> None:
        events.append("start")
        await virtual_clock.sleep(0.5)
        events.append("done")

    await s.start()
    await virtual_clock.advance(1.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.stop, 2.0)
        await virtual_clock.advance(0.5)  # the run finishes inside the grace period
    assert events == ["start", "done"]
    assert not s.running


async def test_stop_cancels_what_outlives_the_grace(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    events: list[str] = []

    @s.every_s(1)
    async def job() -> None:
        events.append("start")
        try:
            await virtual_clock.sleep(60)
        except anyio.get_cancelled_exc_class():
            events.append(f"cancelled at {virtual_clock.now_ns() // MS}")
            raise

    await s.start()
    await virtual_clock.advance(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.stop, 2.0)
        await virtual_clock.advance(3)
    assert events == ["start", "cancelled at 3000"]
    assert "still running after the grace period" in caplog.text


async def test_no_runs_after_stop(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None)
    async with s:
        await virtual_clock.advance_ms(50)
    await virtual_clock.advance_ms(50)
    assert t.runs == 5
    assert t.state is aiotimer.TimerState.PENDING


async def test_restart_rearms_timers_from_the_new_start(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    s.add_every_s(1, lambda t: seen.append(t.ticks))
    async with s:
        await virtual_clock.advance(2.5)
    await virtual_clock.advance(10)
    async with s:
        await virtual_clock.advance(2)
    assert seen == [1, 2, 1, 2]


async def test_timers_can_be_added_and_cancelled_before_start(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    kept = s.add_every_ms(10, lambda: None)
    s.add_every_ms(10, lambda: None).cancel()
    async with s:
        await virtual_clock.advance_ms(30)
    assert kept.runs == 3
    assert len(s.timers) == 1


async def test_serve_runs_in_a_task_group_until_stopped(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None)
    async with anyio.create_task_group() as tg:
        await tg.start(s.serve)
        await virtual_clock.advance_ms(20)
        await s.stop()
    assert t.runs == 2


async def test_cancelling_serve_stops_at_once(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    s.add_every_ms(10, lambda: None)
    async with anyio.create_task_group() as tg:
        await tg.start(s.serve)
        await virtual_clock.advance_ms(20)
        tg.cancel_scope.cancel()
    assert not s.running
    await s.start()  # startable again
    await s.stop()


async def test_a_callback_may_stop_its_own_scheduler(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    @s.every_ms(10)
    async def last() -> None:
        seen.append(1)
        await s.stop()  # returns at once: waiting would wait for itself
        seen.append(2)

    await s.start()
    await virtual_clock.advance_ms(50)
    assert seen == [1, 2]
    assert not s.running


async def test_stop_validates_grace(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    with pytest.raises(ValueError, match="grace_s must be >= 0, got -1"):
        await s.stop(-1)


async def test_stats_are_plain_json(virtual_clock: VirtualClock) -> None:
    import json

    s = aiotimer.Scheduler(clock=virtual_clock, name="svc")
    s.add_every_ms(10, lambda: None, name="fast")
    async with s:
        await virtual_clock.advance_ms(100)
        stats = json.loads(json.dumps(s.stats().as_dict()))
    assert stats["scheduler"] == "svc"
    fast = stats["timers"]["fast"]
    assert fast["runs"] == 10
    assert fast["lateness"]["count"] == 10
    assert fast["every"] == "every 10 ms"


async def test_module_level_default_scheduler(virtual_clock: VirtualClock) -> None:
    import aiotimer._default as default

    default._default = aiotimer.Scheduler(clock=virtual_clock, name="default")
    try:
        seen: list[int] = []

        @aiotimer.every_ms(25)
        def tick() -> None:
            seen.append(aiotimer.get_ticks_raw())

        @aiotimer.every_s(1)
        def second() -> None:
            seen.append(aiotimer.get_ticks())

        assert aiotimer.default_scheduler() is default._default
        async with aiotimer.default_scheduler():
            await virtual_clock.advance_ms(1000)
        assert seen[:2] == [25, 50]
        assert 1 in seen
    finally:
        default._default = None


async def test_timer_table_collects_specs_for_later(virtual_clock: VirtualClock) -> None:
    table = aiotimer.TimerTable("lib")
    seen: list[str] = []

    @table.every_ms(10, name="lib.fast")
    def fast() -> None:
        seen.append("fast")

    table.add_once_s(1, lambda: seen.append("once"))
    assert len(table) == 2
    s = aiotimer.Scheduler(clock=virtual_clock)
    timers = s.add_table(table)
    assert next(t.name for t in timers) == "lib.fast"
    async with s:
        await virtual_clock.advance(1)
    assert seen.count("fast") == 100
    assert seen.count("once") == 1
    with pytest.raises(ValueError, match=r"timer 'lib\.fast' of <TimerTable 'lib'"):
        s.add_table(table)


def test_timer_table_refuses_duplicates() -> None:
    table = aiotimer.TimerTable("lib")

    @table.every_s(1, name="a")
    def a() -> None:
        pass

    with pytest.raises(ValueError, match="timer 'a' is already in table 'lib'"):
        table.add_every_s(2, a, name="a")
    with pytest.raises(ValueError, match="is already in table 'lib'"):
        table.every_s(3)(a)


async def test_cancelling_serve_cancels_runs_in_flight(virtual_clock: VirtualClock) -> None:
    """A hard stop (the serving task cancelled: no grace) still ends every run it started."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    events: list[str] = []

    @s.every_ms(10)
    async def long_run() -> None:
        events.append("start")
        try:
            await virtual_clock.sleep(60)
        finally:
            events.append("ended")

    async with anyio.create_task_group() as tg:
        await tg.start(s.serve)
        await virtual_clock.advance_ms(10)
        assert events == ["start"]
        tg.cancel_scope.cancel()
    await virtual_clock.run_until_idle()
    assert events == ["start", "ended"]
    assert s.stats().running == 0
