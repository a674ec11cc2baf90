"""The dispatcher: the one place that knows how a due timer is run.

Ground rules:

* Sync callbacks run inline on the loop, one after the other, in the order their bucket holds
  them; coroutine callbacks run as tasks of the scheduler's task group.
* A periodic timer is re-queued on its grid *before* its callback runs, so the callback may
  cancel or reschedule its own timer (or any other timer of the same batch) safely: every change
  goes through the scheduler, and an entry whose timer moved on is skipped.
* A callback's exception is logged with the timer's name and counted; the timer keeps its
  schedule and nothing else is disturbed. ``KeyboardInterrupt``, ``SystemExit`` and cancellation
  are not swallowed.
* Missed grid points (a stall) are merged: the run fires once, late, reports the count in
  ``Tick.missed``, and the next run is the next grid point after now.

The hot path is :meth:`Dispatcher.fire` for a periodic, sync, no-argument timer (``_FAST``):
one comparison to skip stale entries, integer arithmetic for the next grid point, a list append
to re-queue (the bucket is looked up once per run of timers sharing a next tick), one counter
and the call itself. No allocation per fire.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, final

from anyio.abc import TaskGroup

from ._queue import NOT_QUEUED, TickQueue
from ._spec import Kind, check_interval
from ._timer import Tick, Timer, TimerState

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["Dispatcher", "current_timer"]

logger = logging.getLogger("aiotimer.dispatch")

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000

current_timer: contextvars.ContextVar[Timer | None] = contextvars.ContextVar(
    "aiotimer_current_timer", default=None
)
"""The timer whose coroutine callback is running in this task, if any."""


def mode_of(timer: Timer) -> int:
    """The dispatch mode bits of a timer: ``0`` is the fast path."""
    spec = timer.spec
    mode = 0
    if spec.takes_tick:
        mode |= _TAKES_TICK
    if spec.is_coroutine:
        mode |= _COROUTINE
    if spec.kind is not Kind.PERIODIC:
        mode |= _NOT_PERIODIC
    return mode


_TAKES_TICK: Final = 1
_COROUTINE: Final = 2
_NOT_PERIODIC: Final = 4


@final
class Dispatcher:
    """Runs due timers for one :class:`~aiotimer.Scheduler`."""

    __slots__ = ("_scheduler", "inflight", "task_group")

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.task_group: TaskGroup | None = None  # set while the scheduler runs
        self.inflight = 0  # coroutine runs in flight

    # -- the hot path ------------------------------------------------------------------------

    def fire(self, queue: TickQueue, tick: int, bucket: list[Timer], now_tick: int) -> None:
        """Run every live timer of ``bucket``, due at ``tick``; ``now_tick`` is the tick now."""
        last_tick = NOT_QUEUED
        last_bucket: list[Timer] = bucket  # placeholder, replaced before first use
        requeued = 0
        stale = 0
        for timer in bucket:
            if timer._due_tick != tick:
                stale += 1  # cancelled or moved since it was queued here
                continue
            if timer._mode:
                self._fire_general(queue, timer, tick, now_tick)
                continue
            # Fast path: periodic, sync, no argument.
            interval = timer._interval
            late = now_tick - tick
            if late < interval:
                next_tick = tick + interval
            else:
                missed = late // interval
                timer._missed += missed
                next_tick = tick + (missed + 1) * interval
            timer._due_tick = next_tick
            if next_tick != last_tick:
                last_tick = next_tick
                last_bucket = queue.bucket_for(next_tick)
            last_bucket.append(timer)
            requeued += 1
            timer._runs += 1
            try:
                timer._call()
            except Exception as exc:
                self._failed(timer, exc)
        queue.added(requeued)
        if stale:
            queue.settle(stale)

    # -- everything else -------------------------------------------------------------------

    def _fire_general(self, queue: TickQueue, timer: Timer, tick: int, now_tick: int) -> None:
        mode = timer._mode
        interval = timer._interval
        late = now_tick - tick
        missed = late // interval if late >= interval else 0
        kind = timer.spec.kind
        if kind is Kind.PERIODIC:
            next_tick = tick + (missed + 1) * interval
            timer._due_tick = next_tick
            queue.push(timer, next_tick)
        else:
            timer._due_tick = NOT_QUEUED  # re-queued (or finished) once the callback returned
        if mode & _COROUTINE and timer._running:
            # Overlap: the previous run is still going. Skip this one, counted; a
            # returns-interval timer is re-queued by the run in flight.
            timer._overlaps += 1
            return
        timer._missed += missed
        timer._runs += 1
        scheduler = self._scheduler
        arg: tuple[Tick, ...] = ()
        if mode & _TAKES_TICK:
            scheduled_ns = queue.origin_ns + tick * queue.tick_ns
            since_start_ns = scheduled_ns - scheduler._start_ns
            arg = (
                Tick(
                    since_start_ns // NS_PER_S,
                    since_start_ns // NS_PER_MS,
                    scheduled_ns,
                    missed,
                    timer.spec.param,
                    timer,
                ),
            )
        if mode & _COROUTINE:
            assert self.task_group is not None
            timer._running += 1
            self.inflight += 1
            self.task_group.start_soon(self._run_coroutine, timer, tick, arg)
            return
        try:
            result = timer._call(*arg)
        except Exception as exc:
            self._failed(timer, exc)
            result = None
        self._after_run(timer, tick, result)

    async def _run_coroutine(self, timer: Timer, tick: int, arg: tuple[Tick, ...]) -> None:
        current_timer.set(timer)
        result = None
        try:
            coro: Awaitable[Any] = timer._call(*arg)
            result = await coro
        except Exception as exc:
            self._failed(timer, exc)
            result = None
        finally:
            timer._running -= 1
            self.inflight -= 1
            self._scheduler._run_finished()
        self._after_run(timer, tick, result)

    def _after_run(self, timer: Timer, tick: int, result: object) -> None:
        """Settle a non-periodic timer once its callback returned ``result``."""
        kind = timer.spec.kind
        if kind is Kind.PERIODIC or timer._state is not TimerState.ACTIVE:
            return  # periodic timers were re-queued before the run; cancelled ones stay so
        if timer._due_tick != NOT_QUEUED:
            return  # rescheduled by the callback itself: that wins
        if kind is Kind.ONESHOT:
            self._scheduler._finish(timer)
            return
        # RETURNS_INTERVAL: None keeps the interval, 0 stops, n > 0 is the next interval.
        if result is None:
            interval = timer._interval
        elif result == 0 and not isinstance(result, bool):
            self._scheduler._finish(timer)
            return
        else:
            try:
                interval = _returned_interval(timer, result)
            except (TypeError, ValueError) as exc:
                self._failed(timer, exc)
                interval = timer._interval  # keep the schedule; the error is reported
        timer._interval = interval
        self._scheduler._requeue_after(timer, tick, interval)

    def _failed(self, timer: Timer, exc: Exception) -> None:
        timer._errors += 1
        logger.error("timer %r failed: %s: %s", timer.name, type(exc).__name__, exc, exc_info=exc)


def _returned_interval(timer: Timer, result: object) -> int:
    return check_interval(timer.name, "returned interval", result, timer.spec.unit)
