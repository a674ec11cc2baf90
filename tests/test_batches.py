"""Big batches: many timers due in the same tick, run by the dispatcher's two loops.

A bucket whose timers all share one interval (and run inline, on time) is *uniform*: it runs
through a lean loop and goes back whole to its next tick. Anything else, or a batch that falls
a whole interval behind, goes through the general loop. These tests hold both to the same
contract, with batches big enough (> 256 timers) to be timed by samples, in chunks.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from timeline import MS, ms

import aiotimer
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


async def test_a_big_batch_runs_every_timer_once_per_grid_point(
    virtual_clock: VirtualClock,
) -> None:
    """2,000 one-second timers, one in ten taking a Tick: 5 s -> 5 runs each, in 5 wake-ups,
    every Tick on time."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: Counter[int] = Counter()
    ticks: list[aiotimer.Tick] = []

    def make(i: int) -> object:
        if i % 10:
            return lambda: runs.update((i,))

        def with_tick(tick: aiotimer.Tick) -> None:
            runs.update((i,))
            ticks.append(tick)

        return with_tick

    timers = [s.add_every_s(1, make(i), param=i) for i in range(2000)]  # type: ignore[arg-type]
    async with s:
        await virtual_clock.advance(0.5)
        wakeups = s.stats().wakeups
        await virtual_clock.advance(5)
        assert s.stats().wakeups - wakeups == 5
    assert runs == {i: 5 for i in range(2000)}
    assert all(t.runs == 5 and t.missed == 0 for t in timers)
    assert len(ticks) == 200 * 5
    assert {t.missed for t in ticks} == {0}
    assert sorted({t.scheduled_ns // MS for t in ticks}) == [1000, 2000, 3000, 4000, 5000]
    assert all(t.param == timers.index(t.timer) for t in ticks[:200])


async def test_callbacks_may_cancel_pause_and_reschedule_timers_of_their_own_batch(
    virtual_clock: VirtualClock,
) -> None:
    """1,000 timers every 100 ms. At 300 ms, timer 500's callback cancels one in 4, pauses one
    in 8 and moves one in 16 to every 300 ms: half of them already ran in that batch, half have
    yet to (those do not run at 300). Each keeps exactly its own schedule."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: dict[int, list[int]] = {i: [] for i in range(1000)}
    timers: list[aiotimer.Timer] = []

    def make(i: int) -> object:
        def run() -> None:
            seen[i].append(ms(virtual_clock))
            if i == 500 and ms(virtual_clock) == 300:  # mid-batch
                for j, timer in enumerate(timers):
                    if j % 4 == 1:
                        timer.cancel()
                    elif j % 8 == 2:
                        timer.pause()
                    elif j % 16 == 3:
                        timer.reschedule(300)

        return run

    timers.extend(s.add_every_ms(100, make(i)) for i in range(1000))  # type: ignore[arg-type]
    async with s:
        await virtual_clock.advance_ms(1050)
        for j, timer in enumerate(timers):
            if j % 8 == 2:
                timer.resume()  # at 1050: the next grid point of its own grid is 1100
        await virtual_clock.advance_ms(200)
    every_100 = [100 * k for k in range(1, 13)]
    for j in range(1000):
        ran = [300] if j < 500 else []  # before timer 500 in the batch: ran at 300
        if j % 4 == 1:
            assert seen[j] == [100, 200, *ran], j
        elif j % 8 == 2:
            assert seen[j] == [100, 200, *ran, 1100, 1200], j
        elif j % 16 == 3:  # moved at 300: the first grid point of 300 ms after 300 is 600
            assert seen[j] == [100, 200, *ran, 600, 900, 1200], j
        else:
            assert seen[j] == every_100, j
    assert len(s.timers) == 1000 - 250


async def test_a_batch_that_falls_an_interval_behind_follows_the_missed_policy(
    virtual_clock: VirtualClock,
) -> None:
    """600 timers every 10 ms whose callbacks each hold the loop 0.1 ms in the batch of 30 ms:
    it takes 60 ms, six intervals. The runs that come late are late runs (Missed.SKIP: run
    once, realign); no grid point runs twice, and tick.missed counts exactly the grid points
    skipped, on the late run itself. (Were every batch that slow, the scheduler would never
    be idle: it would be overloaded.)"""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: dict[int, list[aiotimer.Tick]] = {i: [] for i in range(600)}

    def make(i: int) -> object:
        def run(tick: aiotimer.Tick) -> None:
            runs[i].append(tick)
            if tick.scheduled_ns == 30 * MS:
                virtual_clock.spend(0.0001)

        return run

    timers = [s.add_every_ms(10, make(i)) for i in range(600)]  # type: ignore[arg-type]
    async with s:
        await virtual_clock.advance_ms(300)
    late = 0
    for i, ticks in runs.items():
        assert [t.scheduled_ns // MS for t in ticks][:3] == [10, 20, 30]
        grid = [t.scheduled_ns // MS for t in ticks]
        assert grid == sorted(set(grid)), i  # never twice for one grid point
        assert all(g % 10 == 0 for g in grid), i
        for before, after in itertools.pairwise(ticks):  # a late run stands for
            assert after.scheduled_ns - before.scheduled_ns == (before.missed + 1) * 10 * MS
        late += sum(t.missed for t in ticks)  # the grid points it merged: tick.missed
        assert timers[i].missed == sum(t.missed for t in ticks)
        assert ticks[-1].scheduled_ns // MS == 300  # caught up
    assert late > 0  # the batch of 30 ms did make runs late


async def test_timers_of_other_intervals_joining_a_uniform_batch(
    virtual_clock: VirtualClock,
) -> None:
    """500 timers every 100 ms, then, once they run as one batch, 300 timers every 50 ms and
    300 every 200 ms added on the same grid (their ticks coincide at 200, 400...)."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    count: Counter[str] = Counter()
    for _ in range(500):
        s.add_every_ms(100, lambda: count.update(("100",)))
    async with s:
        await virtual_clock.advance_ms(350)  # runs at 100, 200, 300
        for _ in range(300):
            s.add_every_ms(50, lambda: count.update(("50",)))  # 400, 450 ... 1000
            s.add_every_ms(200, lambda: count.update(("200",)))  # 600, 800, 1000
        await virtual_clock.advance_ms(650)  # to 1000
    assert count == {"100": 500 * 10, "50": 300 * 13, "200": 300 * 3}
