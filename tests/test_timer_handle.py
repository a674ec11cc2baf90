"""Timer handles: cancel, pause, resume, reschedule, lookup; safe from inside callbacks."""

from __future__ import annotations

import pytest
from timeline import MS, ms

import aiotimer
from aiotimer import TimerState
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


async def test_cancel_stops_a_timer_and_frees_its_name(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    t = s.add_every_ms(10, lambda: seen.append(ms(virtual_clock)), name="t")
    async with s:
        await virtual_clock.advance_ms(25)
        assert t.cancel() is True
        assert t.cancel() is False
        await virtual_clock.advance_ms(50)
    assert seen == [10, 20]
    assert t.state is TimerState.CANCELLED
    assert "t" not in s.timers
    with pytest.raises(KeyError, match="no timer 't'"):
        s.get_timer("t")


async def test_a_timer_can_cancel_itself_from_its_callback(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    def third_and_last(tick: aiotimer.Tick) -> None:
        seen.append(ms(virtual_clock))
        if len(seen) == 3:
            tick.timer.cancel()

    s.add_every_ms(10, third_and_last)
    async with s:
        await virtual_clock.advance_ms(100)
    assert seen == [10, 20, 30]


async def test_cancelling_another_timer_of_the_same_batch_is_safe(
    virtual_clock: VirtualClock,
) -> None:
    """A, B and C are due in the same second. On its first run A (first in the batch) cancels
    B, which must not run, and reschedules C to every 3 s from then: C next runs at 4 s."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[str] = []
    timers: dict[str, aiotimer.Timer] = {}

    def a(tick: aiotimer.Tick) -> None:
        seen.append(f"a{ms(virtual_clock)}")
        if tick.ticks == 1:
            timers["b"].cancel()
            timers["c"].reschedule(3)

    timers["a"] = s.add_every_s(1, a)
    timers["b"] = s.add_every_s(1, lambda: seen.append(f"b{ms(virtual_clock)}"))
    timers["c"] = s.add_every_s(1, lambda: seen.append(f"c{ms(virtual_clock)}"))
    async with s:
        await virtual_clock.advance(2)
        assert timers["c"].next_deadline_ns == 4000 * MS
        await virtual_clock.advance(3)
    # (the order inside one batch is not part of the contract)
    assert sorted(seen) == ["a1000", "a2000", "a3000", "a4000", "a5000", "c4000"]  # c: every 3 s


async def test_pause_and_resume_keep_the_grid(virtual_clock: VirtualClock) -> None:
    """every_ms(100): paused at 250, resumed at 420: runs 100, 200, then 500 (the grid point
    after now); paused time is not counted as missed."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    t = s.add_every_ms(100, lambda: seen.append(ms(virtual_clock)))
    async with s:
        await virtual_clock.advance_ms(250)
        t.pause()
        assert t.state is TimerState.PAUSED
        assert t.next_deadline_ns is None
        await virtual_clock.advance_ms(170)
        t.resume()
        assert t.state is TimerState.ACTIVE
        await virtual_clock.advance_ms(200)
    assert seen == [100, 200, 500, 600]
    assert t.missed == 0


async def test_a_paused_timer_stays_paused_across_restart(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None)
    t.pause()
    async with s:
        await virtual_clock.advance_ms(50)
    assert t.runs == 0
    assert t.state is TimerState.PAUSED
    t.resume()
    assert t.state is TimerState.PENDING
    async with s:
        await virtual_clock.advance_ms(50)
    assert t.runs == 5


async def test_reschedule_restarts_the_grid_from_now(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    t = s.add_every_ms(100, lambda: seen.append(ms(virtual_clock)))
    async with s:
        await virtual_clock.advance_ms(130)
        t.reschedule(40)
        assert t.interval == 40
        await virtual_clock.advance_ms(100)
    assert seen == [100, 170, 210]


async def test_reschedule_from_inside_its_own_callback(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    def slow_down(tick: aiotimer.Tick) -> None:
        seen.append(ms(virtual_clock))
        tick.timer.reschedule(tick.timer.interval * 2)

    s.add_every_ms(10, slow_down)
    async with s:
        await virtual_clock.advance_ms(160)
    assert seen == [10, 30, 70, 150]


async def test_ended_timers_refuse_control(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None, name="gone")
    t.cancel()
    for action in (t.pause, t.resume, lambda: t.reschedule(5)):
        with pytest.raises(RuntimeError, match=r"timer 'gone': cannot .*: it is cancelled"):
            action()


async def test_reschedule_validates_its_interval(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_s(1, lambda: None, name="x")
    with pytest.raises(ValueError, match=r"timer 'x': interval_s must be finite and > 0, got 0"):
        t.reschedule(0)


async def test_next_run_and_deadline(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_s(5, lambda: None)
    assert t.next_run is None
    async with s:
        await virtual_clock.advance(1.5)
        assert t.next_deadline_ns == 5000 * MS
        assert t.next_run == pytest.approx(3.5)


async def test_cancel_a_one_shot_before_it_runs(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    t = s.add_once_s(2, lambda: seen.append(1))
    async with s:
        await virtual_clock.advance(1)
        t.cancel()
        await virtual_clock.advance(5)
    assert seen == []


async def test_cancelled_timers_do_not_grow_memory(virtual_clock: VirtualClock) -> None:
    """Churn: 5,000 one-hour one-shots added and cancelled: the queue compacts itself."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    async with s:
        for _ in range(5_000):
            s.add_once_s(3600, lambda: None).cancel()
        assert len(s._s.queue) == 0
        assert s._s.queue._entries < 2048  # stale entries were compacted away
        assert s.stats(timers=False).queued == 0  # and nothing else is kept of them
        assert len(s._hist.counts) <= 64 * 2  # histogram slots are reused


async def test_per_call_one_shots_of_one_callback_each_keep_their_own_delay(
    virtual_clock: VirtualClock,
) -> None:
    """Per-call one-shots of a callback share its spec (nothing to build per call): each
    timer's own delay is its ``interval``, what its listing shows and when it runs."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    fired: list[tuple[int, int]] = []

    def on_due(tick: aiotimer.Tick) -> None:
        fired.append((ms(virtual_clock), tick.timer.interval))

    async with s:
        timers = [s.add_once_ms(delay, on_due) for delay in (50, 90, 70, 30)]
        assert [t.interval for t in timers] == [50, 90, 70, 30]
        assert "once after 90 ms" in repr(timers[1])
        assert timers[2].stats.every == "once after 70 ms"
        timers[0].reschedule(20)
        assert timers[0].stats.every == "once after 20 ms"
        await virtual_clock.advance_ms(100)
    assert fired == [(20, 20), (30, 30), (70, 70), (90, 90)]
    assert all(t.state is TimerState.FINISHED for t in timers)
    assert s.timers == {}  # anonymous one-shots are not in the registry


@pytest.mark.parametrize("delay", [0, -1, 2.5, float("nan"), float("inf"), 10**30, True])
async def test_a_bad_per_call_delay_is_refused_at_once_naming_the_timer(
    virtual_clock: VirtualClock, delay: object
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)

    def per_call() -> None:
        pass

    async with s:
        s.add_once_ms(5, per_call)  # the callback's shared spec exists: the per-call fast path
        with pytest.raises((ValueError, TypeError), match="per_call"):
            s.add_once_ms(delay, per_call)  # type: ignore[arg-type]
        assert s.stats(timers=False).queued == 1  # the refused one was never queued


async def test_reschedule_with_resume_re_arms_a_paused_timer_in_one_call(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[str] = []
    paused = s.add_every_ms(10, lambda: seen.append(f"p@{ms(virtual_clock)}"), name="p")
    stays = s.add_every_ms(10, lambda: seen.append(f"s@{ms(virtual_clock)}"), name="s")
    async with s:
        await virtual_clock.advance_ms(5)
        paused.pause()
        stays.pause()
        paused.reschedule(30, resume=True)  # next run 30 ms from now
        stays.reschedule(30)  # stays paused
        assert paused.state is TimerState.ACTIVE
        assert stays.state is TimerState.PAUSED
        await virtual_clock.advance_ms(70)
    assert seen == ["p@35", "p@65"]


async def test_reschedule_with_resume_before_start_arms_at_the_start(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    once = s.add_once_ms(10, lambda: seen.append(ms(virtual_clock)))  # anonymous: unregistered
    once.pause()
    once.reschedule(40, resume=True)
    assert once.state is TimerState.PENDING
    async with s:
        await virtual_clock.advance_ms(60)
    assert seen == [40]
