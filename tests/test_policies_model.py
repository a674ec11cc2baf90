"""Property: for random intervals, stalls and missed-tick policies, the fire times and
``tick.missed`` values equal a small reference model of the contract."""

from __future__ import annotations

import anyio
from hypothesis import example, given, settings
from hypothesis import strategies as st

import aiotimer
from aiotimer import Missed
from aiotimer.testing import VirtualClock

MS = 1_000_000
HORIZON_MS = 1000


def reference(
    interval: int, policy: Missed, max_catchup: int, stalls: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """(time, missed) of every run up to HORIZON_MS, from the contract alone.

    The loop is blocked during each stall [a, b): a run due then happens at b. A run for grid
    point g happening at t with p = (t - g) // interval later points passed:
    SKIP merges them (missed = p, next point g + (p + 1) * interval); BURST replays at most
    max_catchup of them right away (missed = p - max_catchup if positive); DELAY merges them
    and restarts the grid at t (next point t + interval).
    """
    runs: list[tuple[int, int]] = []
    now = 0
    grid = interval  # the timer was added before start
    while True:
        t = max(grid, now)
        for a, b in stalls:
            if a <= t < b:
                t = b
        if t > HORIZON_MS:
            return runs
        passed = (t - grid) // interval
        if policy is Missed.BURST:
            missed = max(0, passed - max_catchup)
            next_grid = grid + (missed + 1) * interval
        else:
            missed = passed
            if policy is Missed.DELAY and passed:
                next_grid = t + interval
            else:
                next_grid = grid + (passed + 1) * interval
        runs.append((t, missed))
        now, grid = t, next_grid


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, Missed, int, list[tuple[int, int]]]:
    interval = draw(st.integers(3, 60))
    policy = draw(st.sampled_from(list(Missed)))
    max_catchup = draw(st.integers(1, 4))
    stalls: list[tuple[int, int]] = []
    start = 1
    for _ in range(draw(st.integers(0, 3))):
        a = draw(st.integers(start, start + 250))
        if a % interval == 0:  # a stall starting on a grid point would race the timer's run
            a += 1
        b = a + draw(st.integers(1, 250))
        if b >= HORIZON_MS - 1:
            break
        stalls.append((a, b))
        start = b + 1
    return interval, policy, max_catchup, stalls


@settings(max_examples=60, deadline=None)
@given(scenarios())
# DELAY moved the grid onto the second stall's start: the stall runs first in that batch, and
# the timer's run after it must see that it is late.
@example((3, Missed.DELAY, 1, [(1, 190), (193, 196)]))
def test_fire_times_match_the_reference_model(
    scenario: tuple[int, Missed, int, list[tuple[int, int]]],
) -> None:
    interval, policy, max_catchup, stalls = scenario

    async def main() -> list[tuple[int, int]]:
        clock = VirtualClock()
        s = aiotimer.Scheduler(clock=clock)
        runs: list[tuple[int, int]] = []
        s.add_every_ms(
            interval,
            lambda t: runs.append((clock.now_ns() // MS, t.missed)),
            missed=policy,
            max_catchup=max_catchup,
        )
        for a, b in stalls:
            s.add_once_ms(a, lambda d=(b - a) / 1000: clock.spend(d))
        async with s:
            await clock.advance_ms(HORIZON_MS)
        return runs

    assert anyio.run(main) == reference(interval, policy, max_catchup, stalls)
