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
  at all times.
* **First run.** Without a fixed origin (the default), a timer's first run is the first tick at
  or after "now", plus one interval: one interval after it was added (or after the scheduler
  started), at most one tick (1 ms, or 1 s) later. With ``aligned`` (the scheduler was given a
  ``grid_origin_ns``), run k of every timer is at ``origin + k * interval``, the first one at
  or after "now + interval": schedulers sharing an origin share grid points.
* **Never early, never drifting.** Deadlines are rounded up to a tick; periodic runs are due at
  ``grid point + interval`` whatever the run's lateness (the missed policy acts only when a whole
  interval passed).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from ._modes import JITTER
from ._queue import NOT_QUEUED, TickQueue
from ._spec import PERIODIC
from ._stats import HistogramSlab

if TYPE_CHECKING:
    from ._timer import Timer

__all__ = ["Grid"]


def _no_wake(deadline_ns: int) -> None:
    """The wake-up call of a grid whose scheduler is not running."""


@final
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

    def hold(self, timer: Timer) -> None:
        """A popped one-shot (or returns-interval) timer runs: in no bucket until it is settled
        (re-queued by :meth:`advance`, or ended)."""
        timer._due_tick = NOT_QUEUED

    def unqueue(self, timer: Timer) -> None:
        """Take ``timer`` out of the queue (lazily); its grid point is kept (see :meth:`resume`)."""
        if timer._due_tick != NOT_QUEUED:
            timer._due_tick = NOT_QUEUED
            self.queue.discard()

    def forget(self, timer: Timer) -> None:
        """Take ``timer`` off the grid for good (cancelled, finished, rescheduled)."""
        self.unqueue(timer)
        timer._grid_tick = NOT_QUEUED

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
