"""The callables :mod:`aiotimer.kamailio` registers: Kamailio's call shapes over one ``Tick``.

The core calls a timer's callback with no argument or one :class:`~aiotimer.Tick`; Kamailio's
callbacks take ``(ticks, param)``, ``(ticks, worker, param)`` or ``(ticks, tl, data)``. Each
class here adapts one shape. They are classes, not closures, for three reasons:

* they pickle when the wrapped function is importable, so dedicated timer processes can run them;
* their ``func`` attribute is the wrapped function, which the core's default timer name follows
  (``module.qualname`` of ``func``, as for a ``functools.partial``), so timers are named after
  the user's function, not after a wrapper;
* a coroutine function gets the ``async`` twin of its class, so the core's dispatcher sees a
  coroutine callback and runs it as a task.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, final

from ._spec import declare_shape, is_coroutine_callable_cached
from ._timer import Tick

if TYPE_CHECKING:
    from ._scheduler import Scheduler
    from ._timer import Timer
    from .kamailio import TimerLn

__all__ = [
    "PERIODIC",
    "TimerLnCall",
    "check_callable",
    "running_scheduler",
    "ticks_call",
    "worker_call",
]

running_scheduler: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar(
    "aiotimer_kamailio_running_scheduler", default=None
)
"""The scheduler whose façade callback runs in this context: ``get_ticks()`` and registrations
inside a callback use it (in a dedicated timer process, the worker's own scheduler)."""

PERIODIC: Final = 0xFFFF_FFFF
"""Kamailio's ``(ticks_t)-1``: a ``timer_ln`` handler's "again, with the same interval"."""


def check_callable(where: str, func: object) -> None:
    """Refuse a handler that cannot be called, when registering (Kamailio's ``NULL`` handler
    stopped its whole slow timer at the first run: issues #1897, #2120)."""
    if not callable(func):
        raise TypeError(f"{where}: f must be callable, got {type(func).__name__} {func!r}")


class _TicksCall:
    """``f(ticks, param)``; ``ticks`` in seconds (``raw=False``) or in raw 1 ms ticks."""

    __slots__ = ("func", "param", "raw")

    def __init__(self, func: Callable[..., Any], param: Any, raw: bool) -> None:
        self.func = func
        self.param = param
        self.raw = raw

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.func!r}, {self.param!r}, raw={self.raw})"


@final
@declare_shape(takes_tick=True, is_coroutine=False)
class _SyncTicksCall(_TicksCall):
    __slots__ = ()

    def __call__(self, tick: Tick) -> None:
        token = running_scheduler.set(tick.timer.scheduler)
        try:
            self.func(tick.ticks_raw if self.raw else tick.ticks, self.param)
        finally:
            running_scheduler.reset(token)


@final
@declare_shape(takes_tick=True, is_coroutine=True)
class _AsyncTicksCall(_TicksCall):
    __slots__ = ()

    async def __call__(self, tick: Tick) -> None:
        running_scheduler.set(tick.timer.scheduler)  # the run's own task context
        await self.func(tick.ticks_raw if self.raw else tick.ticks, self.param)


def ticks_call(
    where: str, func: Callable[..., Any], param: Any, *, raw: bool
) -> Callable[[Tick], Any]:
    """The callback that runs ``func(ticks, param)`` (awaited if ``func`` is a coroutine
    function); ``where`` names the registering function in the error for a bad ``func``."""
    check_callable(where, func)
    cls = _AsyncTicksCall if is_coroutine_callable_cached(func) else _SyncTicksCall
    return cls(func, param, raw)


class _WorkerCall:
    """``f(ticks, worker, param)``: Kamailio's ``timer_function_w`` (the ``_w`` variants)."""

    __slots__ = ("func", "param", "raw", "worker")

    def __init__(self, func: Callable[..., Any], worker: int, param: Any, raw: bool) -> None:
        self.func = func
        self.worker = worker
        self.param = param
        self.raw = raw

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.func!r}, worker={self.worker}, {self.param!r}, "
            f"raw={self.raw})"
        )


@final
@declare_shape(takes_tick=True, is_coroutine=False)
class _SyncWorkerCall(_WorkerCall):
    __slots__ = ()

    def __call__(self, tick: Tick) -> None:
        token = running_scheduler.set(tick.timer.scheduler)
        try:
            self.func(tick.ticks_raw if self.raw else tick.ticks, self.worker, self.param)
        finally:
            running_scheduler.reset(token)


@final
@declare_shape(takes_tick=True, is_coroutine=True)
class _AsyncWorkerCall(_WorkerCall):
    __slots__ = ()

    async def __call__(self, tick: Tick) -> None:
        running_scheduler.set(tick.timer.scheduler)
        await self.func(tick.ticks_raw if self.raw else tick.ticks, self.worker, self.param)


def worker_call(
    where: str, func: Callable[..., Any], worker: int, param: Any, *, raw: bool
) -> Callable[[Tick], Any]:
    """The callback that runs ``func(ticks, worker, param)``."""
    check_callable(where, func)
    cls = _AsyncWorkerCall if is_coroutine_callable_cached(func) else _SyncWorkerCall
    return cls(func, worker, param, raw)


class TimerLnCall:
    """``f(ticks_raw, tl, data)`` of a ``timer_ln``, its result mapped onto the core's
    returns-interval contract (``None`` same interval, ``0`` stop, ``n`` next interval).

    One instance per :class:`~aiotimer.kamailio.TimerLn`, made by ``timer_init``, reused by
    every ``timer_add`` of it.
    """

    __slots__ = ("tl",)

    def __init__(self, tl: TimerLn) -> None:
        self.tl = tl

    @property
    def func(self) -> Callable[..., Any]:
        """The handler (the core names the timer after it)."""
        handler = self.tl.f
        assert handler is not None  # timer_add refuses a TimerLn without a handler
        return handler

    def _result(self, timer: Timer, result: object) -> int | None:
        """Kamailio's return value as the core's: ``0`` one-shot, ``PERIODIC`` same interval,
        ``n`` the new interval in ticks. A run whose timer was deleted (or re-added) from inside
        the handler ends that timer, whatever the handler returned."""
        tl = self.tl
        tl._running -= 1
        if tl._timer is not timer:
            return 0  # deleted (paused: the core ignores it) or re-added in the handler
        if result == 0 and type(result) is int:  # a one-shot expired: paused for re-use
            timer.pause()
            return None
        if result == PERIODIC or result == -1:
            return None
        if isinstance(result, int) and not isinstance(result, bool) and 0 <= result < PERIODIC:
            return result
        raise (TypeError if not isinstance(result, int) else ValueError)(
            f"timer {timer.name!r}: timer_ln handler returned {result!r}; return 0 (one-shot), "
            f"PERIODIC (again, same interval) or the next interval in ticks (0 < n < PERIODIC)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tl!r})"


@final
@declare_shape(takes_tick=True, is_coroutine=False)
class SyncTimerLnCall(TimerLnCall):
    __slots__ = ()

    def __call__(self, tick: Tick) -> int | None:
        tl = self.tl
        tl._running += 1
        token = running_scheduler.set(tick.timer.scheduler)
        try:
            result = self.func(tick.ticks_raw, tl, tl.data)
        except BaseException:
            tl._running -= 1
            raise
        finally:
            running_scheduler.reset(token)
        return self._result(tick.timer, result)


@final
@declare_shape(takes_tick=True, is_coroutine=True)
class AsyncTimerLnCall(TimerLnCall):
    __slots__ = ()

    async def __call__(self, tick: Tick) -> int | None:
        tl = self.tl
        tl._running += 1
        running_scheduler.set(tick.timer.scheduler)
        try:
            coro: Awaitable[object] = self.func(tick.ticks_raw, tl, tl.data)
            result = await coro
        except BaseException:
            tl._running -= 1
            raise
        return self._result(tick.timer, result)
