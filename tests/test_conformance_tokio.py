"""Tokio's ``Interval`` test vectors, ported onto aiotimer (missed-tick conformance).

Sources: tokio ``tokio/tests/time_interval.rs`` (the tests named above each test here) and the
``MissedTickBehavior`` docs in ``tokio/src/time/interval.rs``. Expected instants are Tokio's,
copied as written; a small adapter maps them onto aiotimer.

How Tokio's semantics map onto aiotimer's:

* **First tick.** Tokio's ``interval_at(start, p)`` ticks at ``start`` (0) at once, then at
  ``p, 2p, ...``; aiotimer's first run is one interval after start, then ``2p, 3p, ...``. So
  Tokio's tick ``t`` is aiotimer's grid point ``t + p``, and Tokio's time ``t`` is aiotimer's
  time ``t + p``. The adapter shifts by one interval both ways: scripts add ``p`` to the first
  step, recorded grid points subtract ``p``. Everything below is in Tokio's numbers.
* **Polling.** An ``Interval`` yields nothing between two ``poll_tick`` calls, whatever the
  time does: "not polled" is, in aiotimer, **the loop held** (``VirtualClock.spend``: time
  moves, nothing runs). Each ``time::advance(x)`` followed by ``check_interval_poll!`` is here
  "hold the loop ``x`` ms, then let it run until idle", and the check compares the grid
  points (``Tick.scheduled_ns``, Tokio's returned ``Instant``) that ran in that step.
* **Tokio's +1 ms.** Tokio's tests advance 1 ms past each expected tick because its timer
  wheel resolves late; aiotimer's virtual clock wakes at exact deadlines, so the extra
  millisecond is only lateness (far below one interval) and changes nothing.
* **Behaviours.** ``Burst``, ``Skip``, ``Delay`` are ``Missed.BURST``, ``Missed.SKIP``,
  ``Missed.DELAY``. Tokio's default is ``Burst``; aiotimer's is ``SKIP``, so every test names
  its policy.
* **The lateness threshold (decided difference).** Tokio applies its behaviour to any run
  more than 5 ms late. aiotimer applies its ``Missed`` policy only to a run late by one
  interval or more: a run late by less keeps the grid, whatever the policy. The vectors
  above only differ for ``Delay`` (``Skip`` and ``Burst`` land on the grid either way); the
  difference is an explicit expectation in
  ``test_delay_late_by_less_than_an_interval_keeps_the_grid``.

No aiotimer equivalent (not ported, on purpose):

* ``reset_immediately``, ``reset_after``, ``reset_at``, ``reset_at_bigger_than_interval``:
  aiotimer has no "next run at this instant, then every interval from it"; a ``Timer`` is
  re-armed only by ``reschedule(interval)`` (new grid from now, first run one interval
  later: Tokio's ``reset``, ported below) or ``pause``/``resume`` (the grid is kept).
* ``stream_with_interval_poll_tick_self_waking`` / ``_no_waking``: they test Rust's waker
  contract of ``poll_tick``; aiotimer calls callbacks, no caller polls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio.lowlevel
import pytest
from timeline import MS

import aiotimer
from aiotimer import Missed
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

PERIOD_MS = 300
"""The period of every vector of ``time_interval.rs``."""

Polls = list[list[int]]


class TokioInterval:
    """A 300 ms aiotimer timer seen as a Tokio ``Interval``: the grid points each poll sees,
    in Tokio's numbers (one interval earlier than aiotimer's)."""

    def __init__(
        self, clock: VirtualClock, missed: Missed, *, coroutine: bool = False, period_ms: int = 300
    ) -> None:
        self.clock = clock
        self.period_ms = period_ms
        self.scheduler = aiotimer.Scheduler(clock=clock)
        self.seen: list[int] = []
        self.missed: list[int] = []
        callback: Callable[[aiotimer.Tick], object]
        if coroutine:

            async def tick_async(tick: aiotimer.Tick) -> None:
                await anyio.lowlevel.checkpoint()  # a real coroutine: it yields once
                self._record(tick)

            callback = tick_async
        else:
            callback = self._record
        self.timer = self.scheduler.add_every_ms(period_ms, callback, missed=missed)

    def _record(self, tick: aiotimer.Tick) -> None:
        self.seen.append(tick.scheduled_ns // MS - self.period_ms)
        self.missed.append(tick.missed)

    async def poll_after(self, hold_ms: float) -> list[int]:
        """``time::advance(hold_ms)`` without polling, then ``poll_tick`` until pending."""
        self.clock.spend(hold_ms / 1000)  # the loop held: nothing runs meanwhile
        await self.clock.advance(0)  # then the loop runs until idle
        polled, self.seen = self.seen, []
        return polled

    async def script(self, steps_ms: Sequence[float]) -> Polls:
        """Tokio's advances, one poll after each; the first step is shifted by one period."""
        first, *rest = steps_ms
        polls = [await self.poll_after(first + self.period_ms)]
        for step in rest:
            polls.append(await self.poll_after(step))
        return polls


async def run_script(
    clock: VirtualClock, missed: Missed, steps_ms: Sequence[float], *, coroutine: bool = False
) -> tuple[Polls, TokioInterval]:
    interval = TokioInterval(clock, missed, coroutine=coroutine)
    async with interval.scheduler:
        polls = await interval.script(steps_ms)
        await interval.scheduler.stop(grace_s=0)
    return polls, interval


# -- time_interval.rs ------------------------------------------------------------------------

# The advances of Tokio's burst, skip and delay tests (ms); each one is followed by a poll.
STALL_STEPS = [1, 100, 200, 650, 200, 100, 250, 300]
DELAY_STEPS = [1, 100, 200, 650, 100, 201, 300, 300]


# Ported from tokio/tests/time_interval.rs: interval_zero_duration
async def test_interval_zero_duration(virtual_clock: VirtualClock) -> None:
    """Tokio panics; aiotimer refuses it at registration, naming the timer and the value."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    with pytest.raises(ValueError, match=r"timer 'zero'.*interval_ms.*got 0"):
        s.add_every_ms(0, lambda: None, name="zero")


# Ported from tokio/tests/time_interval.rs: burst
async def test_burst(virtual_clock: VirtualClock) -> None:
    """The 600 and 900 ticks both come at the poll at 951, back to back::

    Expected ticks: |     1     |     2     |     3     |     4     |     5     |     6     |
    Actual ticks:   | work -----|          delay          | work | work | work -| work -----|
    """
    polls, interval = await run_script(virtual_clock, Missed.BURST, STALL_STEPS)
    assert polls == [[0], [], [300], [600, 900], [], [1200], [1500], [1800]]
    assert interval.timer.missed == 0  # every point replayed


# Ported from tokio/tests/time_interval.rs: skip
async def test_skip(virtual_clock: VirtualClock) -> None:
    """600 comes at 951 and absorbs 900 (``missed == 1``); the next tick is back on the grid::

    Expected ticks: |     1     |     2     |     3     |     4     |     5     |     6     |
    Actual ticks:   | work -----|          delay          | work ---| work -----| work -----|
    """
    polls, interval = await run_script(
        virtual_clock, Missed.SKIP, [1, 100, 200, 650, 250, 300, 300]
    )
    assert polls == [[0], [], [300], [600], [1200], [1500], [1800]]
    assert interval.missed == [0, 0, 1, 0, 0, 0]


# Ported from tokio/tests/time_interval.rs: delay
async def test_delay(virtual_clock: VirtualClock) -> None:
    """600 comes at 951; the grid restarts from there: 1251, 1551, 1851 (Tokio's "+1" is its
    resolution's; here it is the late poll's own millisecond)::

        Expected ticks: |     1     |     2     |     3     |     4     |     5     |     6     |
        Actual ticks:   | work -----|          delay          | work -----| work -----| work -----|
    """
    polls, _ = await run_script(virtual_clock, Missed.DELAY, DELAY_STEPS)
    assert polls == [[0], [], [300], [600], [], [1251], [1551], [1851]]


# Ported from tokio/tests/time_interval.rs: reset
async def test_reset(virtual_clock: VirtualClock) -> None:
    """``Interval::reset()`` is ``Timer.reschedule(interval)``: a new grid from now, first
    run one interval later."""
    interval = TokioInterval(virtual_clock, Missed.SKIP)
    async with interval.scheduler:
        polls = [await interval.poll_after(1 + PERIOD_MS)]
        polls += [await interval.poll_after(100), await interval.poll_after(200)]
        polls.append(await interval.poll_after(100))
        interval.timer.reschedule(PERIOD_MS)  # at Tokio's 401
        polls += [await interval.poll_after(250), await interval.poll_after(50)]
        polls.append(await interval.poll_after(300))
    assert polls == [[0], [], [300], [], [], [701], [1001]]


# -- the same vectors with coroutine callbacks -----------------------------------------------
# A coroutine callback runs as a task; under the default overlap policy (Overlap.SKIP) a
# BURST replay must wait for the run before it instead of being counted as an overlap.


# Ported from tokio/tests/time_interval.rs: burst (coroutine callback)
async def test_burst_coroutine_callback_replays_under_default_overlap(
    virtual_clock: VirtualClock,
) -> None:
    """With an ``async def`` callback (defect on main: the 900 replay is counted as an
    overlap of the 600 run, which is still a task when it comes due)."""
    polls, interval = await run_script(virtual_clock, Missed.BURST, STALL_STEPS, coroutine=True)
    assert polls == [[0], [], [300], [600, 900], [], [1200], [1500], [1800]]
    assert interval.timer.overlaps == 0


# Ported from tokio/tests/time_interval.rs: skip (coroutine callback)
async def test_skip_coroutine_callback(virtual_clock: VirtualClock) -> None:
    """With an ``async def`` callback."""
    polls, interval = await run_script(
        virtual_clock, Missed.SKIP, [1, 100, 200, 650, 250, 300, 300], coroutine=True
    )
    assert polls == [[0], [], [300], [600], [1200], [1500], [1800]]
    assert interval.missed == [0, 0, 1, 0, 0, 0]


# Ported from tokio/tests/time_interval.rs: delay (coroutine callback)
async def test_delay_coroutine_callback(virtual_clock: VirtualClock) -> None:
    """With an ``async def`` callback."""
    polls, _ = await run_script(virtual_clock, Missed.DELAY, DELAY_STEPS, coroutine=True)
    assert polls == [[0], [], [300], [600], [], [1251], [1551], [1851]]


# -- DELAY never shortens the next period (defects on main) ----------------------------------
# Tokio's Delay: "ticks are not shortened"; next = now + period. aiotimer's grids have a tick
# (1 ms, or 1 s for second timers): after a late run at t, the next run is the first tick of
# the timer's grid at or after t + interval, never earlier. Main rounds t *down* to its tick
# before adding the interval, which shortens the next period by up to one tick.


# Derived from tokio/tests/time_interval.rs: delay (polled half a ms later)
async def test_delay_never_shortens_the_next_period_sub_millisecond(
    virtual_clock: VirtualClock,
) -> None:
    """Polled at 951.5 instead of 951: Tokio's next tick is 1251.5; aiotimer's ms grid has
    no 1251.5, so the next run is at 1252 (main: 1251, 299.5 ms after the late run)."""
    polls, _ = await run_script(virtual_clock, Missed.DELAY, [1, 100, 200, 650.5, 100, 300])
    assert polls == [[0], [], [300], [600], [], [1252]]


# Derived from tokio's Delay contract (ticks are not shortened), on the second grid
@pytest.mark.parametrize(
    ("interval_s", "late_run_s", "next_run_s"),
    [
        pytest.param(3, 9.51, 13, id="every_s(3)-late-at-9.51s"),
        pytest.param(1, 3.9, 5, id="every_s(1)-late-at-3.9s"),
    ],
)
async def test_delay_never_shortens_the_next_period_second_grid(
    virtual_clock: VirtualClock, interval_s: int, late_run_s: float, next_run_s: int
) -> None:
    """The second grid: the loop is held from 0 until ``late_run_s``; the first run comes
    then, and the next one at least ``interval_s`` later, on a whole second (main: 12 s and
    4 s, 2.49 s and 0.1 s after the late run)."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: list[int] = []
    s.add_every_s(
        interval_s, lambda: runs.append(virtual_clock.now_ns() // MS), missed=Missed.DELAY
    )
    async with s:
        virtual_clock.spend(late_run_s)
        await virtual_clock.advance(0)
        await virtual_clock.advance(next_run_s + interval_s - late_run_s + 0.5)
    late_ms = round(late_run_s * 1000)
    assert runs == [late_ms, next_run_s * 1000, (next_run_s + interval_s) * 1000]


# -- decided differences ---------------------------------------------------------------------


# Derived from tokio/tests/time_interval.rs: delay (polled at 351; decided difference)
async def test_delay_late_by_less_than_an_interval_keeps_the_grid(
    virtual_clock: VirtualClock,
) -> None:
    """Tokio's Delay polled at 351 (51 ms late, over its 5 ms threshold) restarts the grid:
    ``[0], [300], [], [651], [951]``. aiotimer applies ``Missed`` only to runs late by one
    interval or more; a run 51 ms late keeps the grid::

        grid:     |0     |300    |600    |900
        Tokio:    |0      351--->   651-->  951      next = now + period
        aiotimer: |0      351    |600    |900        the grid is kept
    """
    polls, interval = await run_script(virtual_clock, Missed.DELAY, [1, 350, 250, 51, 300])
    assert polls == [[0], [300], [600], [], [900]]
    assert interval.missed == [0, 0, 0, 0]


# -- interval_doesnt_panic_max_duration_when_polling ------------------------------------------


# Ported from tokio/tests/time_interval.rs: interval_doesnt_panic_max_duration_when_polling
@pytest.mark.parametrize("unit", ["every_s", "every_ms"])
async def test_interval_max_duration_is_refused_and_the_scheduler_unharmed(
    virtual_clock: VirtualClock, unit: str
) -> None:
    """Tokio accepts ``Duration::MAX`` and must not panic; aiotimer documents an upper bound
    on intervals and refuses ``2**64 - 1`` at registration, naming the timer and the value
    (main accepts it: with the timerfd source it spins, and on uvloop ``stop()`` never
    returns). The scheduler is unharmed: its other timers run and it stops."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    add = getattr(s, f"add_{unit}")
    with pytest.raises(ValueError, match=rf"'forever'.*{2**64 - 1}"):
        add(2**64 - 1, lambda: None, name="forever")
    assert "forever" not in s.timers
    runs: list[int] = []
    s.add_every_ms(100, lambda: runs.append(virtual_clock.now_ns() // MS))
    async with s:
        await virtual_clock.advance(0.3)
    assert runs == [100, 200, 300]
    assert not s.running


# -- MissedTickBehavior docs (tokio/src/time/interval.rs) -------------------------------------
# Period 50 ms; "task_that_takes_..." holds the loop before the first tick is polled.


# Ported from tokio/src/time/interval.rs, MissedTickBehavior docs: Delay
async def test_docs_delay_task_that_takes_more_than_50_millis(
    virtual_clock: VirtualClock,
) -> None:
    """MissedTickBehavior::Delay docs: a 75 ms task, then the first tick resolves at once
    (instant 0), the next one 50 ms after that call (125), not on the grid (100)."""
    interval = TokioInterval(virtual_clock, Missed.DELAY, period_ms=50)
    async with interval.scheduler:
        polls = [await interval.poll_after(50 + 75), await interval.poll_after(49)]
        polls.append(await interval.poll_after(1))
    assert polls == [[0], [], [125]]


# Ported from tokio/src/time/interval.rs, MissedTickBehavior docs: Skip
async def test_docs_skip_task_that_takes_75_millis(virtual_clock: VirtualClock) -> None:
    """MissedTickBehavior::Skip docs: a 75 ms task, then the first tick resolves at once
    (instant 0, 50 skipped), the next one 25 ms later, at 100 on the grid."""
    interval = TokioInterval(virtual_clock, Missed.SKIP, period_ms=50)
    async with interval.scheduler:
        polls = [await interval.poll_after(50 + 75), await interval.poll_after(24)]
        polls.append(await interval.poll_after(1))
    assert polls == [[0], [], [100]]
    assert interval.missed == [1, 0]


# Ported from tokio/src/time/interval.rs, MissedTickBehavior docs: Burst
async def test_docs_burst_task_that_takes_200_millis(virtual_clock: VirtualClock) -> None:
    """MissedTickBehavior::Burst docs: after ``task_that_takes_200_millis`` the ticks 0, 50,
    100 and 150 resolve at once, back to back, and 200 comes later. That holds for a task
    just under 200 ms (at exactly 200, tick 200 is due too, in Tokio as here): 199 ms."""
    interval = TokioInterval(virtual_clock, Missed.BURST, period_ms=50)
    async with interval.scheduler:
        polls = [await interval.poll_after(50 + 199), await interval.poll_after(1)]
        polls.append(await interval.poll_after(50))
    assert polls == [[0, 50, 100, 150], [200], [250]]
