"""The grids: when timers run, on virtual time, on asyncio, uvloop and trio.

Timelines are in milliseconds from the scheduler's start (virtual time 0).
"""

from __future__ import annotations

import pytest
from timeline import MS, ms

import aiotimer
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


async def test_ms_timer_runs_on_its_anchored_grid(virtual_clock: VirtualClock) -> None:
    """every_ms(20) started at 0:  |20 |40 |60 |80 |100"""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    s.add_every_ms(20, lambda: seen.append(ms(virtual_clock)))
    async with s:
        await virtual_clock.advance_ms(100)
    assert seen == [20, 40, 60, 80, 100]


async def test_second_timer_runs_on_the_second_grid(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    s.add_every_s(2, lambda: seen.append(ms(virtual_clock)))
    async with s:
        await virtual_clock.advance(7)
    assert seen == [2000, 4000, 6000]


async def test_hourly_timer_over_a_day_takes_no_real_time(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    s.add_every_s(3600, lambda t: seen.append(t.ticks))
    async with s:
        await virtual_clock.advance(24 * 3600)
    assert seen == [h * 3600 for h in range(1, 25)]


async def test_a_slow_callback_does_not_make_the_grid_drift(virtual_clock: VirtualClock) -> None:
    """Each run takes 7 ms of the loop; runs stay at 50, 100, 150 (not 57, 114, ...)."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []

    def slow() -> None:
        seen.append(ms(virtual_clock))
        virtual_clock.spend(0.007)

    s.add_every_ms(50, slow)
    async with s:
        await virtual_clock.advance_ms(1000)
    assert seen == list(range(50, 1001, 50))


async def test_timer_added_while_running_first_runs_one_interval_later(
    virtual_clock: VirtualClock,
) -> None:
    """Added at 1300 ms: every_s(1) first runs at the first second-grid point >= 2300: 3000.
    every_ms(20) added at 1300.5 ms: first run at the first ms >= 1320.5: 1321."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen_s: list[int] = []
    seen_ms: list[int] = []
    async with s:
        await virtual_clock.advance_ms(1300)
        s.add_every_s(1, lambda: seen_s.append(ms(virtual_clock)))
        await virtual_clock.advance(0.0005)
        s.add_every_ms(20, lambda: seen_ms.append(ms(virtual_clock)))
        await virtual_clock.advance_to(5000 * MS)
    assert seen_s == [3000, 4000, 5000]
    assert seen_ms[:3] == [1321, 1341, 1361]


async def test_timers_added_before_start_are_armed_at_start(virtual_clock: VirtualClock) -> None:
    await virtual_clock.advance(10)  # the clock is at 10 s when the scheduler starts
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[int] = []
    s.add_every_s(1, lambda t: seen.append(t.ticks))
    async with s:
        await virtual_clock.advance(3)
    assert seen == [1, 2, 3]  # ticks count from the start, not from the clock's origin


async def test_second_timers_due_together_run_in_one_wakeup(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    count = 0

    def bump() -> None:
        nonlocal count
        count += 1

    for _ in range(1000):
        s.add_every_s(1, bump)
    async with s:
        await virtual_clock.advance(0.5)
        wakeups_before = s.stats().wakeups
        await virtual_clock.advance(0.6)
        assert count == 1000
        assert s.stats().wakeups - wakeups_before == 1


async def test_no_wakeups_when_nothing_is_due(virtual_clock: VirtualClock) -> None:
    """Tickless: an idle scheduler sleeps without a deadline. Adding a timer wakes it once (to
    sleep until the new deadline), then it sleeps until the timer is due."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    async with s:
        await virtual_clock.advance(3600)
        assert s.stats().wakeups == 0
        assert virtual_clock.sleepers == 0
        s.add_every_s(60, lambda: None)
        await virtual_clock.advance(59)
        assert s.stats().wakeups == 1
        await virtual_clock.advance(1)
        assert s.stats().wakeups == 2


async def test_an_earlier_timer_wakes_a_sleeping_tick_source(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[str] = []
    s.add_every_s(60, lambda: seen.append("slow"))
    async with s:
        await virtual_clock.advance(1)  # the tick source sleeps until 60 s
        assert virtual_clock.next_deadline_ns() == 60_000 * MS
        s.add_once_ms(10, lambda: seen.append(f"fast@{ms(virtual_clock)}"))
        await virtual_clock.advance(1)
    assert seen == ["fast@1010"]


class _EarlyClock:
    """A clock whose sleeps return up to 1 ms early, like uvloop's millisecond timers can."""

    def __init__(self, inner: VirtualClock) -> None:
        self.inner = inner
        self.sleeps = 0

    def now_ns(self) -> int:
        return self.inner.now_ns()

    def wall_ns(self) -> int:
        return self.inner.wall_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        self.sleeps += 1
        remaining_ns = deadline_ns - self.inner.now_ns()
        await self.inner.sleep_until(deadline_ns - min(MS, remaining_ns // 2))

    def hold(self) -> object:
        return self.inner.hold()


async def test_a_timer_never_fires_early_when_sleeps_return_early(
    virtual_clock: VirtualClock,
) -> None:
    clock = _EarlyClock(virtual_clock)
    s = aiotimer.Scheduler(clock=clock)  # type: ignore[arg-type]
    late_ns: list[int] = []
    s.add_every_ms(10, lambda t: late_ns.append(virtual_clock.now_ns() - t.scheduled_ns))
    async with s:
        await virtual_clock.advance_ms(100)
    assert len(late_ns) == 10
    assert min(late_ns) >= 0
    assert clock.sleeps >= 20  # each run needed a second, shorter sleep


async def test_get_ticks_and_get_ticks_raw_count_from_start(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    assert (s.get_ticks(), s.get_ticks_raw()) == (0, 0)
    await virtual_clock.advance(5)
    async with s:
        await virtual_clock.advance(2.3456)
        assert (s.get_ticks(), s.get_ticks_raw()) == (2, 2345)


async def test_tick_carries_grid_ticks_param_and_timer(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    ticks: list[aiotimer.Tick] = []
    timer = s.add_every_ms(250, ticks.append, param={"db": 1}, name="probe")
    async with s:
        await virtual_clock.advance(1.1)
    assert [(t.ticks, t.ticks_raw, t.missed) for t in ticks] == [
        (0, 250, 0),
        (0, 500, 0),
        (0, 750, 0),
        (1, 1000, 0),
    ]
    assert all(t.param == {"db": 1} and t.timer is timer for t in ticks)
    assert ticks[-1].scheduled_ns == 1000 * MS


async def test_a_fixed_grid_origin_aligns_grids(virtual_clock: VirtualClock) -> None:
    """grid_origin_ns=0 while starting at 1.7 s: every_s(1) runs on whole seconds of the clock."""
    await virtual_clock.advance(1.7)
    s = aiotimer.Scheduler(clock=virtual_clock, grid_origin_ns=0)
    seen: list[int] = []
    s.add_every_s(1, lambda: seen.append(ms(virtual_clock)))
    async with s:
        await virtual_clock.advance(3)
    assert seen == [3000, 4000]
