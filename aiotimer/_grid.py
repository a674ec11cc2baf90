"""The grid: the one owner of where timers stand in time, one per unit (ms and s).

A :class:`Grid` maps integer *ticks* (1 ms, or 1 s) onto the scheduler's clock
(``origin_ns + tick * tick_ns``) and is the only writer of a timer's position on it: arming,
queueing, re-queueing after a run (the missed-tick policy's arithmetic is
:meth:`~aiotimer.Missed.next_point`), holding a one-shot while it runs, unqueueing, resuming,
jitter. The dispatcher asks it where a timer goes next; it never computes a tick itself. The
one documented exception is the dispatcher's lean loop for uniform buckets (see
``_dispatch.py``), which writes the next tick of a whole bucket inline and hands the list back
through :meth:`TickQueue.requeue`.

Ground rules:

* ``timer._grid_tick`` is the grid point of the timer's next run; ``timer._due_tick`` is the
  tick it is queued for: the grid point plus the run's jitter (without jitter, the same), or
  ``NOT_QUEUED`` while it is in no bucket (paused, stopped, a one-shot running). Both are exact
  at all times (a timer moved to a later tick may still sit in an earlier bucket, deferred:
  the queue moves it on when that bucket comes due, before anyone sees it; see ``_queue``).
* **First run.** Without a fixed origin (the default), a timer's first run is the first tick at
  or after "now", plus one interval: one interval after it was added (or after the scheduler
  started), at most one tick (1 ms, or 1 s) later. With ``aligned`` (the scheduler was given a
  ``grid_origin_ns``), run k of every timer is at ``origin + k * interval``, the first one at
  or after "now + interval": schedulers sharing an origin share grid points.
* **Never early, never drifting.** Deadlines are rounded up to a tick; periodic runs are due at
  ``grid point + interval`` whatever the run's lateness (the missed policy acts only when a whole
  interval passed).

:class:`WallGrid` is the third grid, for what is anchored on the wall clock (cluster and
calendar timers): its ticks are milliseconds since the Unix epoch (UTC), mapped onto the
monotonic clock (``origin_ns`` is the monotonic time at which the wall clock read 0), so every
node computes the same instants. It sleeps on the monotonic clock and re-checks the wall clock on
every wake-up (at least once a second while it holds timers): after a wall-clock step (NTP,
suspend, an operator) it re-anchors, so a step forward makes the instants that passed late (the
missed policy applies: one run under ``SKIP``) and a step back makes nothing due again (an
instant is never run twice, never early). A wall-grid timer's first run is at its first instant
after "now" (a cluster timer's interval counts from the epoch: ``every_s(60, cluster=True)``
runs at the top of every minute).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice, takewhile
from typing import TYPE_CHECKING, Any, Final

from ._clock import NS_PER_MS, NS_PER_S, Clock
from ._modes import CALENDAR, JITTER
from ._policy import MISSED_BURST
from ._queue import NOT_QUEUED, TickQueue
from ._spec import PERIODIC
from ._stats import HistogramSlab

if TYPE_CHECKING:
    from ._timer import Timer

__all__ = ["Grid", "WallGrid"]

logger = logging.getLogger("aiotimer.grid")

WALL_CHECK_NS: Final = NS_PER_S
"""How often, at least, the wall grid re-checks the wall clock while it holds timers (the
scheduler's ``wall_check_s``, by default)."""
REANCHOR_NS: Final = NS_PER_MS
"""A wall-clock step larger than this re-anchors the wall grid (NTP slews stay below it for
seconds: 500 ppm at most)."""
STEP_WARN_NS: Final = NS_PER_S
"""A wall-clock step this large or larger is logged as a warning."""
MAX_COUNTED: Final = 10_000
"""A calendar timer's missed instants are counted up to this many (a wall-clock jump of a year
over an every-second expression would take seconds to count)."""


def _no_wake(deadline_ns: int) -> None:
    """The wake-up call of a grid whose scheduler is not running."""


class Grid:
    """Ticks of ``tick_ns`` from ``origin_ns``, the timers queued on them, and their positions.

    :param tick_ns: the length of a tick (1 ms or 1 s)
    :param owner: the scheduler whose grid this is (a timer handle reaches it here)
    :param slab: the scheduler's histograms (a timer's stats read them)
    :param rng: the random source for jitter
    """

    __slots__ = (
        "_ceil_high_ns",
        "_ceil_low_ns",
        "_ceil_tick",
        "_random",
        "_wake",
        "aligned",
        "origin_ns",
        "owner",
        "queue",
        "slab",
        "tick_ns",
    )

    def __init__(self, tick_ns: int, owner: Any, slab: HistogramSlab, rng: random.Random) -> None:
        self.tick_ns = tick_ns
        self.owner = owner
        self.slab = slab
        self.queue = TickQueue()
        self.origin_ns = 0
        self.aligned = False
        self._random = rng
        self._wake: Callable[[int], None] = _no_wake
        self._ceil_tick = 0
        self._ceil_low_ns = self._ceil_high_ns = 0  # tick_at_or_after's last answer: none

    # -- life ------------------------------------------------------------------------------

    def start(self, origin_ns: int, aligned: bool, wake: Callable[[int], None]) -> None:
        """Put tick 0 at ``origin_ns`` (the queue is empty); ``wake(deadline_ns)`` tells the tick
        source of a deadline earlier than any it knew of."""
        self.origin_ns = origin_ns
        self.aligned = aligned
        self._wake = wake
        self._ceil_low_ns = self._ceil_high_ns = 0  # forget tick_at_or_after's last answer

    def stop(self) -> list[Timer]:
        """Empty the grid; every timer that was queued is left with no position. Returns them."""
        self._wake = _no_wake
        live = self.queue.clear()
        for timer in live:
            timer._grid_tick = timer._due_tick = NOT_QUEUED
        return live

    # -- conversions -----------------------------------------------------------------------

    def tick_of(self, time_ns: int) -> int:
        """The tick ``time_ns`` falls in (rounded down)."""
        return (time_ns - self.origin_ns) // self.tick_ns

    def tick_at_or_after(self, time_ns: int) -> int:
        """The first tick at or after ``time_ns`` (rounded up).

        Registrations come in bursts within one tick: the last answer is kept, and a burst
        pays two comparisons instead of a division of large integers.
        """
        if self._ceil_low_ns < time_ns <= self._ceil_high_ns:
            return self._ceil_tick
        tick = -(-(time_ns - self.origin_ns) // self.tick_ns)
        self._ceil_tick = tick
        self._ceil_high_ns = self.origin_ns + tick * self.tick_ns
        self._ceil_low_ns = self._ceil_high_ns - self.tick_ns
        return tick

    def ns_of(self, tick: int) -> int:
        """The time of ``tick`` on the scheduler's clock."""
        return self.origin_ns + tick * self.tick_ns

    def next_deadline_ns(self) -> int | None:
        tick = self.queue.next_tick()
        return None if tick is None else self.origin_ns + tick * self.tick_ns

    # -- positions -------------------------------------------------------------------------

    def arm(self, timer: Timer, now_ns: int) -> None:
        """Queue ``timer`` for its first run after ``now_ns`` (see the module's ground rules)."""
        interval = timer._interval
        if self._ceil_low_ns < now_ns <= self._ceil_high_ns:  # tick_at_or_after, inlined:
            tick = self._ceil_tick + interval  # registrations come by the thousand
        else:
            tick = self.tick_at_or_after(now_ns) + interval
        if self.aligned and tick % interval:
            tick += interval - tick % interval  # the first multiple of the interval
        self.put(timer, tick)

    def put(self, timer: Timer, grid_tick: int) -> None:
        """Queue ``timer`` for its grid point ``grid_tick`` (plus a fresh jitter, if it has one)."""
        due_tick = grid_tick
        if timer._mode & JITTER:
            due_tick += self._random.randrange(timer.spec.policy.jitter_ms)
        timer._grid_tick = grid_tick
        timer._due_tick = due_tick
        if self.queue.push(timer, due_tick):
            self._wake(self.origin_ns + due_tick * self.tick_ns)

    def advance(self, timer: Timer, grid_tick: int, now_ns: int) -> int:
        """Queue a periodic ``timer`` whose run for ``grid_tick`` happens at ``now_ns`` for its
        next grid point: one interval on, or, if a whole interval passed, where its
        :class:`~aiotimer.Missed` policy says. Returns the grid points missed."""
        interval = timer._interval
        now_tick = (now_ns - self.origin_ns) // self.tick_ns
        if now_tick - grid_tick < interval:
            self.put(timer, grid_tick + interval)
            return 0
        policy = timer.spec.policy
        next_tick, missed = policy.missed.next_point(
            grid_tick, now_tick, self.tick_at_or_after(now_ns), interval, policy.max_catchup
        )
        self.put(timer, next_tick)
        return missed

    def requeue_bucket(self, tick: int, entries: list[Timer], interval: int, stale: int) -> None:
        """Put a fired uniform bucket back at ``tick`` (the dispatcher's lean loop has set each
        live entry's position to ``tick``; see :meth:`TickQueue.requeue`)."""
        if self.queue.requeue(tick, entries, interval, stale):
            self._wake(self.origin_ns + tick * self.tick_ns)

    def wall_of(self, timer: Timer, tick: int) -> datetime | None:
        """The wall-clock instant of ``tick`` for ``timer`` (only the wall grid has them)."""
        return None

    def hold(self, timer: Timer) -> None:
        """A popped one-shot (or returns-interval) timer runs: in no bucket until it is settled
        (re-queued by :meth:`advance`, or ended)."""
        timer._due_tick = NOT_QUEUED

    def unqueue(self, timer: Timer) -> None:
        """Take ``timer`` out of the queue (lazily: parked, see ``_queue``); its grid point is
        kept (see :meth:`resume`)."""
        due_tick = timer._due_tick
        if due_tick != NOT_QUEUED:
            timer._due_tick = NOT_QUEUED
            self.queue.park(timer, due_tick)

    def forget(self, timer: Timer) -> None:
        """Take ``timer`` off the grid for good (cancelled, finished, rescheduled)."""
        due_tick = timer._due_tick
        if due_tick != NOT_QUEUED:
            timer._due_tick = NOT_QUEUED
            self.queue.remove(timer, due_tick)
        timer._grid_tick = NOT_QUEUED

    def rearm(self, timer: Timer, now_ns: int | None) -> None:
        """Take ``timer`` off its position and, given ``now_ns``, arm it afresh from then (its
        interval changed: a reschedule); with ``None`` (a paused timer) leave it unarmed. One
        call for a forget and an arm: transactions re-arm their timers by the thousand a
        second: a move to later keeps the timer's entry, see ``_queue``)."""
        due_tick = timer._due_tick
        if due_tick != NOT_QUEUED:
            timer._due_tick = NOT_QUEUED
            self.queue.park(timer, due_tick)
        if now_ns is None:
            timer._grid_tick = NOT_QUEUED
        else:
            self.arm(timer, now_ns)

    def resume(self, timer: Timer, now_ns: int) -> None:
        """Queue a paused timer again: a periodic one at the first point of its grid after now
        (its phase kept; paused points are not missed), a one-shot that came due while paused at
        the next tick, one with no grid point yet as if just added."""
        grid_tick = timer._grid_tick
        if grid_tick == NOT_QUEUED:
            self.arm(timer, now_ns)
            return
        now_tick = (now_ns - self.origin_ns) // self.tick_ns
        if grid_tick <= now_tick:
            interval = timer._interval
            if timer.spec.kind is PERIODIC:
                grid_tick += ((now_tick - grid_tick) // interval + 1) * interval
            else:
                grid_tick = now_tick + 1
        self.put(timer, grid_tick)


class WallGrid(Grid):
    """Ticks of 1 ms since the Unix epoch (UTC), on the monotonic clock (see the module)."""

    __slots__ = ("_check_ns", "_clock")

    def __init__(
        self,
        owner: Any,
        slab: HistogramSlab,
        rng: random.Random,
        clock: Clock,
        check_ns: int = WALL_CHECK_NS,
    ) -> None:
        super().__init__(NS_PER_MS, owner, slab, rng)
        self._clock = clock
        self._check_ns = check_ns

    def _offset_ns(self) -> int:
        """The monotonic time at which the wall clock read the epoch."""
        clock = self._clock
        return clock.now_ns() - clock.wall_ns()

    def start(self, origin_ns: int, aligned: bool, wake: Callable[[int], None]) -> None:
        """Anchored on the epoch, whatever the scheduler's origin."""
        super().start(self._offset_ns(), True, wake)

    def reanchor(self) -> None:
        """Follow a wall-clock step (called on every wake-up of the tick source while the grid
        holds timers). Steps of a second or more are logged; smaller ones (NTP's) are followed
        quietly. A reading the loop was preempted in the middle of is not trusted."""
        if not len(self.queue):
            return
        clock = self._clock
        before_ns = clock.now_ns()
        wall_ns = clock.wall_ns()
        after_ns = clock.now_ns()
        if after_ns - before_ns > REANCHOR_NS:
            return  # preempted between the readings: check at the next wake-up
        offset_ns = (before_ns + after_ns) // 2 - wall_ns
        step_ns = self.origin_ns - offset_ns
        if -REANCHOR_NS <= step_ns <= REANCHOR_NS:
            return
        log = logger.warning if abs(step_ns) >= STEP_WARN_NS else logger.debug
        log(
            "the wall clock stepped %s by %.3f s: wall-clock timers re-anchored",
            "forward" if step_ns > 0 else "back",
            abs(step_ns) / NS_PER_S,
        )
        self.origin_ns = offset_ns
        self._ceil_low_ns = self._ceil_high_ns = 0  # forget tick_at_or_after's last answer
        tick = self.queue.next_tick()
        if tick is not None:
            self._wake(self.origin_ns + tick * self.tick_ns)

    def next_deadline_ns(self) -> int | None:
        """The next deadline, after re-checking the wall clock; while timers are queued, at
        most ``check_ns`` away, so a wall-clock step is seen that soon (1 s by default)."""
        self.reanchor()  # (nothing to do while the grid is empty)
        deadline_ns = super().next_deadline_ns()
        if deadline_ns is None:
            return None
        return min(deadline_ns, self._clock.now_ns() + self._check_ns)

    def wall_of(self, timer: Timer, tick: int) -> datetime | None:
        wall_ns = tick * NS_PER_MS
        trigger = timer.spec.trigger
        if trigger is not None:
            return trigger.as_datetime(wall_ns)  # type: ignore[no-any-return]
        return datetime.fromtimestamp(wall_ns / NS_PER_S, UTC)

    def arm(self, timer: Timer, now_ns: int) -> None:
        """The timer's first instant after ``now_ns``."""
        wall_ns = now_ns - self.origin_ns
        if timer._mode & CALENDAR:
            instant_ns = timer.spec.trigger.next_after(wall_ns)
            if instant_ns is None:  # an instant that has passed: run at the next tick
                self.put(timer, wall_ns // NS_PER_MS + 1)
            else:
                self.put(timer, -(-instant_ns // NS_PER_MS))
            return
        interval = timer._interval
        self.put(timer, (wall_ns // NS_PER_MS // interval + 1) * interval)

    def resume(self, timer: Timer, now_ns: int) -> None:
        if timer._mode & CALENDAR:
            self.arm(timer, now_ns)  # its next instant after now: paused ones are not missed
        else:
            super().resume(timer, now_ns)

    def advance(self, timer: Timer, grid_tick: int, now_ns: int) -> int:
        """A calendar timer: its trigger's next instant after the run's; instants that passed
        meanwhile follow its missed policy (``SKIP`` and ``DELAY`` merge them into this run,
        ``BURST`` replays up to ``max_catchup`` of them). With no next instant the timer is held
        (it ends after this run). Other timers: as on any grid."""
        if not timer._mode & CALENDAR:
            return super().advance(timer, grid_tick, now_ns)
        trigger = timer.spec.trigger
        now_wall_ns = now_ns - self.origin_ns
        instants = trigger.instants_after(grid_tick * NS_PER_MS)
        passed = list(islice(takewhile(lambda i: i <= now_wall_ns, instants), MAX_COUNTED))
        if len(passed) == MAX_COUNTED:
            logger.warning(
                "timer %r: more than %d instants passed since its last run; counted %d",
                timer.name,
                MAX_COUNTED,
                MAX_COUNTED,
            )
        policy = timer.spec.policy
        if passed and policy.missed is MISSED_BURST:
            missed = max(0, len(passed) - policy.max_catchup)
            self.put(timer, -(-passed[missed] // NS_PER_MS))
            return missed
        following = trigger.next_after(max(now_wall_ns, grid_tick * NS_PER_MS))
        if following is None:
            self.hold(timer)
        else:
            self.put(timer, -(-following // NS_PER_MS))
        return len(passed)
