"""The :class:`Timer` handle a registration returns, and the :class:`Tick` a callback receives.

A ``Timer`` is both the user's handle (cancel, pause, reschedule, stats) and the entry the
schedulers queue, so it uses ``__slots__`` and keeps the fields the hot path reads as plain
attributes (see ``_dispatch.py`` for what a fire costs). Every state change goes through the
owning :class:`~aiotimer.Scheduler` (the registry) and the timer's :class:`~aiotimer._grid.Grid`
(the only writer of its position), so each is safe from any callback: the timer's own, or
another one of the same dispatch batch.

Ticks here are ticks of the timer's grid (1 ms, or 1 s on the second grid): ``_interval``,
``_grid_tick`` and ``_due_tick`` are in those units (see ``_grid.py`` for their contract).
"""

from __future__ import annotations

import contextvars
import enum
from array import array
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, final

from ._queue import NOT_QUEUED
from ._spec import TimerSpec
from ._stats import (
    DURATION,
    EMPTY_DISTRIBUTION,
    EMPTY_HISTOGRAM,
    N_BUCKETS,
    NO_HISTOGRAM,
    Histogram,
    HistogramSlab,
    TimerStats,
)

if TYPE_CHECKING:
    from ._grid import Grid
    from ._scheduler import Scheduler

__all__ = ["Tick", "Timer", "TimerState", "current_timer"]


class TimerState(enum.Enum):
    """Where a timer is in its life.

    ``PENDING`` (added, scheduler not running) -> ``ACTIVE`` (queued on its grid) <->
    ``PAUSED`` -> ``CANCELLED`` (by :meth:`Timer.cancel`, or after ``max_failures``) or
    ``FINISHED`` (a one-shot ran, or a returns-interval callback returned ``0``). A timer whose
    scheduler stops goes back to ``PENDING`` (a paused one stays ``PAUSED``) and is armed again
    on the next start.
    """

    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"


# Enum members read through their class cost ~0.2 µs each on CPython 3.11 (the enum
# metaclass has a __getattr__, which slows every attribute lookup on an enum class);
# module globals cost ~15 ns. The paths run per registration or per run read these.
PENDING: Final = TimerState.PENDING
ACTIVE: Final = TimerState.ACTIVE
PAUSED: Final = TimerState.PAUSED
CANCELLED: Final = TimerState.CANCELLED
FINISHED: Final = TimerState.FINISHED


@final
class Tick:
    """What a callback that takes one argument receives on each run.

    :ivar ticks: whole seconds from the scheduler's start to this run's grid point
    :ivar ticks_raw: whole milliseconds (raw ticks) from the start to this run's grid point
    :ivar scheduled_ns: the grid point this run was due at, on the scheduler's clock
    :ivar missed: grid points that passed without a run of their own, merged into this one
    :ivar param: the ``param`` given at registration
    :ivar timer: the :class:`Timer` being run
    :ivar wall: for a calendar or cluster timer, the scheduled wall-clock instant (an aware
        ``datetime``: in the timer's time zone for a calendar timer, UTC for a cluster timer;
        the same on every node, so a key for idempotent writes); ``None`` for others
    """

    __slots__ = ("missed", "param", "scheduled_ns", "ticks", "ticks_raw", "timer", "wall")

    def __init__(
        self,
        ticks: int,
        ticks_raw: int,
        scheduled_ns: int,
        missed: int,
        param: Any,
        timer: Timer,
        wall: datetime | None = None,
    ) -> None:
        self.ticks = ticks
        self.ticks_raw = ticks_raw
        self.scheduled_ns = scheduled_ns
        self.missed = missed
        self.param = param
        self.timer = timer
        self.wall = wall

    def __repr__(self) -> str:
        return (
            f"Tick(timer={self.timer.name!r}, ticks={self.ticks}, ticks_raw={self.ticks_raw}, "
            f"missed={self.missed})"
        )


@final
class _Trouble:
    """Counters of rare events, allocated on a timer's first one (most timers never have any:
    keeping them out of :class:`Timer` saves memory at 100,000 timers)."""

    __slots__ = (
        "errors",
        "failed_run",
        "failures_in_row",
        "final",
        "loop_blocks",
        "missed",
        "overlaps",
        "pending",
        "queued_run",
        "started_in",
        "timeouts",
    )

    def __init__(self) -> None:
        self.missed = 0
        self.errors = 0
        self.overlaps = 0
        self.timeouts = 0
        self.loop_blocks = 0
        self.failures_in_row = 0
        self.failed_run = -1  # the run number of the last failure
        self.queued_run: tuple[int, int] | None = None  # Overlap.QUEUE: (grid tick, missed)
        self.pending: list[tuple[int, int]] = []  # BURST catch-up runs waiting: (grid, missed)
        self.started_in = -1  # BURST: the wake-up that started its last async run
        # an ended timer's histograms: its slot, copied out when it was freed (at base 0)
        self.final: HistogramSlab | None = None


_NO_TROUBLE: Final = _Trouble()
EXPORTED: Final = 7 + 2 * N_BUCKETS + 2
"""How many numbers :func:`sum_exported` returns."""


@final
class Timer:
    """A registered timer: a handle to inspect and control it.

    Not built directly: ``Scheduler.add_*`` methods and decorators create timers.
    """

    __slots__ = (
        "_call",
        "_due_tick",
        "_entry_tick",
        "_grid",
        "_grid_tick",
        "_hist",
        "_interval",
        "_mode",
        "_running",
        "_runs",
        "_state",
        "_trouble",
        "name",
        "spec",
    )

    def __init__(
        self,
        spec: TimerSpec,
        name: str,
        grid: Grid,
        interval: int,
        mode: int,
    ) -> None:
        self.spec = spec
        self.name = name
        self._grid = grid  # of its scheduler (grid.owner): the ms or the s grid
        self._call = spec[0]  # spec.callback, without the property call (registration)
        self._mode = mode  # dispatch mode bits, from the dispatcher (0 = fast path)
        self._interval = interval  # in ticks of _grid; returns-interval runs change it
        self._grid_tick = NOT_QUEUED
        self._due_tick = NOT_QUEUED
        self._entry_tick = NOT_QUEUED  # the queue's: where its parked or deferred entry is
        self._state = PENDING
        self._hist = NO_HISTOGRAM  # its slot in the scheduler's HistogramSlab, once timed
        self._running = 0  # async runs (coroutines, threads) in flight
        self._runs = 0
        self._trouble: _Trouble | None = None

    # -- inspection ------------------------------------------------------------------------

    @property
    def state(self) -> TimerState:
        return self._state

    @property
    def scheduler(self) -> Scheduler:
        return self._grid.owner  # type: ignore[no-any-return]

    @property
    def interval(self) -> int:
        """The current interval (a one-shot's delay) in the timer's unit (``spec.unit``): the
        timer's own, where ``spec.interval`` is the one it was registered with (a ``reschedule``
        changes it; per-call one-shots of one callback share one spec)."""
        return self._interval * self._grid.tick_ns // self.spec.unit.tick_ns

    @property
    def next_deadline_ns(self) -> int | None:
        """When the timer is next due, on the scheduler's clock; ``None`` when not queued."""
        if self._due_tick == NOT_QUEUED:
            return None
        return self._grid.ns_of(self._due_tick)

    @property
    def next_run(self) -> float | None:
        """Seconds from now until the next run (0 if overdue); ``None`` when not queued."""
        deadline_ns = self.next_deadline_ns
        if deadline_ns is None:
            return None
        return max(0, deadline_ns - self.scheduler.clock.now_ns()) / 1e9

    @property
    def runs(self) -> int:
        """Runs started."""
        return self._runs

    @property
    def missed(self) -> int:
        """Grid points that passed without a run of their own (stalls; see ``Missed``)."""
        return (self._trouble or _NO_TROUBLE).missed

    def trouble(self) -> _Trouble:
        """The rare-event counters, created on first use (for the dispatcher)."""
        trouble = self._trouble
        if trouble is None:
            trouble = self._trouble = _Trouble()
        return trouble

    @property
    def overlaps(self) -> int:
        """Runs skipped because earlier runs were still going (see ``Overlap``)."""
        return (self._trouble or _NO_TROUBLE).overlaps

    @property
    def errors(self) -> int:
        """Runs that raised (timeouts are not included: they are counted in :attr:`timeouts`)."""
        return (self._trouble or _NO_TROUBLE).errors

    @property
    def timeouts(self) -> int:
        """Runs that exceeded ``timeout_s``."""
        return (self._trouble or _NO_TROUBLE).timeouts

    @property
    def running(self) -> int:
        """Asynchronous runs in flight now."""
        return self._running

    @property
    def stats(self) -> TimerStats:
        """A snapshot of the timer's numbers (an ended timer keeps its final ones)."""
        trouble = self._trouble or _NO_TROUBLE
        slab, base = self._slot()
        lateness, duration = EMPTY_DISTRIBUTION, EMPTY_DISTRIBUTION
        last_run_ns = last_lateness_ns = None
        if base != NO_HISTOGRAM:  # it had timed runs
            last_run_ns, last_lateness_ns, max_lateness_ns, max_duration_ns = slab.marks_of(base)
            lateness = slab.distribution(base, max_lateness_ns)
            duration = slab.distribution(base + DURATION, max_duration_ns)
        return TimerStats(
            name=self.name,
            state=self._state.value,
            every=self.spec.describe(self.interval),
            runs=self._runs,
            missed=trouble.missed,
            overlaps=trouble.overlaps,
            errors=trouble.errors,
            timeouts=trouble.timeouts,
            loop_blocks=trouble.loop_blocks,
            running=self._running,
            last_run_ns=last_run_ns,
            last_lateness_s=None if last_lateness_ns is None else last_lateness_ns / 1e9,
            lateness=lateness,
            duration=duration,
        )

    def histograms(self) -> tuple[Histogram, Histogram]:
        """The raw lateness and duration histograms (counts of timed runs per bucket of
        ``aiotimer.BUCKET_UPPER_NS``, and sums), for exporters such as Prometheus."""
        slab, base = self._slot()
        if base == NO_HISTOGRAM:  # none of its runs was timed yet
            return EMPTY_HISTOGRAM, EMPTY_HISTOGRAM
        return slab.histogram(base), slab.histogram(base + DURATION)

    def _slot(self) -> tuple[HistogramSlab, int]:
        """Where the timer's histograms are: its slot in the scheduler's slab (``NO_HISTOGRAM``
        if none of its runs was timed), or, once it ended, the copy it keeps (at base 0)."""
        final = (self._trouble or _NO_TROUBLE).final
        if final is not None:
            return final, 0
        return self._grid.slab, self._hist

    def restart_histograms(self) -> None:
        """Free the timer's histogram slot, its lateness and duration starting afresh at its
        next timed run (its counters stay; the scheduler's totals keep what it had). For a
        timer re-armed per transaction (a Kamailio ``timer_ln``), so that 100,000 of them hold
        slots only while they run."""
        if self._hist != NO_HISTOGRAM:
            self._grid.slab.release(self._hist)
            self._hist = NO_HISTOGRAM

    def release_histograms(self) -> None:
        """The timer ended: free its histogram slot, keeping a copy of it on the handle (its
        :attr:`stats` are worked out from that when read)."""
        if self._hist == NO_HISTOGRAM:
            return  # its numbers are all counters, on the handle already
        self.trouble().final = self._grid.slab.take(self._hist)
        self._hist = NO_HISTOGRAM

    # -- control ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Stop the timer for good and free its name. Safe from any callback.

        :return: ``True`` if this call cancelled it, ``False`` if it had already ended
        """
        return self._grid.owner._forget(self, CANCELLED)  # type: ignore[no-any-return]

    def pause(self) -> None:
        """Stop running until :meth:`resume`; runs in flight finish. No-op if already paused.

        :raises RuntimeError: if the timer has ended
        """
        self._grid.owner._pause(self)

    def resume(self) -> None:
        """Run again from the next grid point after now (paused time is not counted as missed).

        :raises RuntimeError: if the timer has ended
        """
        self._grid.owner._resume(self)

    def reschedule(self, interval: float, *, resume: bool = False) -> None:
        """Change the interval (in the timer's unit) and restart the grid from now: the next run
        is one new interval from now. For a one-shot, its delay from now. A paused timer stays
        paused (its next run counted from its :meth:`resume`), unless ``resume``: then it is
        resumed too, in the same call (a transaction's timer re-armed after a stop, as
        Kamailio's ``timer_del`` + ``timer_add`` do).

        :raises ValueError: for an interval that is not a whole, positive number
        :raises RuntimeError: if the timer has ended
        """
        self._grid.owner._reschedule(self, interval, resume)

    def __repr__(self) -> str:
        return f"<Timer {self.name!r} {self.spec.describe(self.interval)} {self._state.value}>"


current_timer: contextvars.ContextVar[Timer | None] = contextvars.ContextVar(
    "aiotimer_current_timer", default=None
)
"""The timer whose asynchronous run is going on in this task, if any."""


_RUNS: Final = attrgetter("_runs")
_RUNNING: Final = attrgetter("_running")
_TROUBLE: Final = attrgetter("_trouble")
_HIST: Final = attrgetter("_hist")


def sum_exported(timers: Sequence[Timer]) -> array[int]:
    """The :data:`EXPORTED` numbers of ``timers`` (of one scheduler) added up, as an
    ``array('Q')``: runs, missed, overlaps, errors, timeouts, loop blocks, runs in flight, the
    lateness then the duration histograms' bucket counts, the lateness then the duration sums
    (ns).

    What an exporter reads per scrape, from a thread while the loop runs: one C-level pass per
    field (``map`` over the timers, :meth:`HistogramSlab.sum_slots` for the histograms) and a
    Python step only for the few timers with rare events, so 100,000 timers take milliseconds
    and build nothing per timer that the garbage collector tracks (which would set off full
    collections that stall the loop). Each number is read whole (under the GIL), but a timer
    that ends on the loop while this runs may have its histograms counted twice or not at all
    in this one sum (a scrape then sees a histogram step and step back: a counter reset).
    """
    out = array("Q", bytes(8 * EXPORTED))
    if not timers:
        return out
    out[0] = sum(map(_RUNS, timers))
    out[6] = sum(map(_RUNNING, timers))
    hist_at = 7 + 2 * N_BUCKETS
    for trouble in filter(None, map(_TROUBLE, timers)):
        out[1] += trouble.missed
        out[2] += trouble.overlaps
        out[3] += trouble.errors
        out[4] += trouble.timeouts
        out[5] += trouble.loop_blocks
        final = trouble.final
        if final is not None:  # an ended timer: its slot's copy (lateness, then duration)
            for i, count in enumerate(final.counts):
                out[7 + i] += count
            out[hist_at] += final.sums[0]
            out[hist_at + 1] += final.sums[1]
    bases = [base for base in map(_HIST, timers) if base != NO_HISTOGRAM]
    if bases:
        buckets, lateness_ns, duration_ns = timers[0]._grid.slab.sum_slots(bases)
        for i, count in enumerate(buckets):
            out[7 + i] += count
        out[hist_at] += lateness_ns
        out[hist_at + 1] += duration_ns
    return out
