"""The :class:`Timer` handle a registration returns, and the :class:`Tick` a callback receives.

A ``Timer`` is both the user's handle (cancel, state, counters) and the entry the schedulers
queue, so it uses ``__slots__`` and keeps the fields the hot path reads as plain attributes
(see ``_dispatch.py`` for what a fire costs). Every state change goes through the owning
:class:`~aiotimer.Scheduler`, which is the only place that queues and unqueues timers.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, final

from ._queue import NOT_QUEUED
from ._spec import TimerSpec

if TYPE_CHECKING:
    from ._queue import TickQueue
    from ._scheduler import Scheduler

__all__ = ["Tick", "Timer", "TimerState"]


class TimerState(enum.Enum):
    """Where a timer is in its life.

    ``PENDING`` (added, scheduler not running) -> ``ACTIVE`` (queued on a grid) ->
    ``CANCELLED`` (by :meth:`Timer.cancel`) or ``FINISHED`` (a one-shot ran, or a
    returns-interval callback returned ``0``). A timer whose scheduler stops goes back to
    ``PENDING`` and is armed again on the next start.
    """

    PENDING = "pending"
    ACTIVE = "active"
    CANCELLED = "cancelled"
    FINISHED = "finished"


@final
class Tick:
    """What a callback that takes one argument receives on each run.

    :ivar ticks: whole seconds from the scheduler's start to this run's grid point
    :ivar ticks_raw: whole milliseconds (raw ticks) from the start to this run's grid point
    :ivar scheduled_ns: the grid point this run was due at, on the scheduler's clock
    :ivar missed: grid points skipped because the run came late (merged into this run)
    :ivar param: the ``param`` given at registration
    :ivar timer: the :class:`Timer` being run
    """

    __slots__ = ("missed", "param", "scheduled_ns", "ticks", "ticks_raw", "timer")

    def __init__(
        self, ticks: int, ticks_raw: int, scheduled_ns: int, missed: int, param: Any, timer: Timer
    ) -> None:
        self.ticks = ticks
        self.ticks_raw = ticks_raw
        self.scheduled_ns = scheduled_ns
        self.missed = missed
        self.param = param
        self.timer = timer

    def __repr__(self) -> str:
        return (
            f"Tick(timer={self.timer.name!r}, ticks={self.ticks}, ticks_raw={self.ticks_raw}, "
            f"missed={self.missed})"
        )


@final
class Timer:
    """A registered timer: a handle to inspect and cancel it.

    Not built directly: ``Scheduler.add_*`` methods and decorators create timers.
    """

    __slots__ = (
        "_call",
        "_due_tick",
        "_errors",
        "_interval",
        "_missed",
        "_mode",
        "_overlaps",
        "_queue",
        "_running",
        "_runs",
        "_scheduler",
        "_state",
        "name",
        "spec",
    )

    def __init__(self, spec: TimerSpec, name: str, scheduler: Scheduler, queue: TickQueue) -> None:
        self.spec = spec
        self.name = name
        self._scheduler = scheduler
        self._queue = queue
        self._call = spec.callback
        self._interval = spec.interval  # in ticks of _queue; returns_interval timers change it
        self._due_tick = NOT_QUEUED
        self._state = TimerState.PENDING
        self._running = 0  # coroutine runs in flight
        self._runs = 0
        self._missed = 0
        self._errors = 0
        self._overlaps = 0
        self._mode = 0  # dispatch mode bits, set by the dispatcher (0 = fast path)

    # -- inspection ------------------------------------------------------------------------

    @property
    def state(self) -> TimerState:
        return self._state

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def interval(self) -> int:
        """The current interval in the timer's unit (``spec.unit``)."""
        return self._interval

    @property
    def next_deadline_ns(self) -> int | None:
        """When the timer is next due, on the scheduler's clock; ``None`` when not queued."""
        if self._due_tick == NOT_QUEUED:
            return None
        return self._queue.origin_ns + self._due_tick * self._queue.tick_ns

    @property
    def runs(self) -> int:
        """Runs started (coroutines: tasks started)."""
        return self._runs

    @property
    def missed(self) -> int:
        """Grid points skipped because runs came late."""
        return self._missed

    @property
    def errors(self) -> int:
        """Runs that raised."""
        return self._errors

    @property
    def overlaps(self) -> int:
        """Runs skipped because the previous coroutine run was still going."""
        return self._overlaps

    @property
    def running(self) -> int:
        """Coroutine runs in flight now."""
        return self._running

    # -- control ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Stop the timer for good and free its name. Safe from any callback, its own included.

        :return: ``True`` if this call cancelled it, ``False`` if it had already ended
        """
        return self._scheduler._cancel(self)

    def __repr__(self) -> str:
        return f"<Timer {self.name!r} {self.spec.describe()} {self._state.value}>"
