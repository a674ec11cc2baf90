"""What a worker runs: its timers, checked for the trip to another process, and how they are
installed on the worker's scheduler.

Ground rules:

* A worker is started with ``spawn`` or ``forkserver``, so everything it runs crosses a pickle:
  callbacks (and ``on_error`` hooks, message handlers) travel by reference (module and
  qualified name) and must be importable; params by value and must pickle. Both are checked
  when a timer is declared, with errors naming the timer and the function or value; a function
  that cannot be looked up yet (the decorator runs before the module binds its name) is looked
  up again, with the whole spec, before any process starts.
* ``sync`` timers are the ordinary anchored-grid timers (Kamailio's ``fork_sync_timer``,
  without its drift). ``basic`` timers sleep their interval *after* each run, so they drift by
  the run time, as Kamailio's ``fork_basic_timer`` does: a timer that re-arms itself from the
  end of each run, on the millisecond grid whatever its unit, so the drift is not rounded to
  whole seconds.
* Inline workers install the same timers the same way, after the same pickle round trip, so a
  test of a worker spec tests what a child would run.
"""

from __future__ import annotations

import enum
import functools
import inspect
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from .._policy import DEFAULT_POLICY, Policy
from .._scheduler import Scheduler
from .._spec import Kind, TimerSpec, Unit, callback_name
from .._timer import Tick, Timer, TimerState

__all__ = [
    "Mode",
    "ProcessTimer",
    "check_importable",
    "check_picklable",
    "decode_timers",
    "encode_timers",
    "install",
]

NS_PER_MS: Final = 1_000_000


class Mode(enum.Enum):
    """How a worker's periodic timer keeps time (Kamailio's two kinds of timer processes)."""

    SYNC = "sync"
    """On the anchored grid: run k at ``start + k * interval``; never drifts."""
    BASIC = "basic"
    """Sleep the interval after each run: drifts by the run time (``fork_basic_timer``)."""


@final
@dataclass(frozen=True, slots=True)
class ProcessTimer:
    """A timer declared on a :class:`~aiotimer.process.TimerProcess`.

    :ivar spec: the validated spec, as declared (the unit and interval the user wrote)
    :ivar mode: sync (grid) or basic (interval after each run)
    :ivar name: the name it has in each worker's scheduler (given, or derived and made unique)
    """

    spec: TimerSpec
    mode: Mode
    name: str


# -- checks ---------------------------------------------------------------------------------


def check_importable(owner: str, what: str, fn: object, *, strict: bool) -> None:
    """Refuse what a child process could not import.

    :param owner: starts the error: ``"timer 'clean'"``, ``"timer process 'x'"``
    :param what: ``"callback"``, ``"on_error hook"``...
    :param strict: also require that ``module.qualname`` is ``fn`` itself (before a process
        starts); when false, a name the module has not bound yet is accepted (a decorator runs
        before the module binds the name it decorates)
    :raises TypeError: naming ``owner`` and the function
    """
    if isinstance(fn, functools.partial):
        check_importable(owner, what, fn.func, strict=strict)
        check_picklable(owner, f"{what} arguments", (fn.args, fn.keywords))
        return
    if inspect.ismethod(fn):
        bound = fn.__self__
        check_importable(
            owner, what, bound if inspect.isclass(bound) else type(bound), strict=False
        )
        check_picklable(owner, what, fn)
        return
    if not (inspect.isfunction(fn) or inspect.isbuiltin(fn) or inspect.isclass(fn)):
        check_importable(owner, what, type(fn), strict=False)  # a callable instance
        check_picklable(owner, what, fn)
        return
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    name = f"{module}.{qualname}"
    if "<lambda>" in qualname:
        raise TypeError(
            f"{owner}: {what} {name} is a lambda; a worker process imports its "
            "callbacks by name: use a module-level def"
        )
    if "<locals>" in qualname:
        raise TypeError(
            f"{owner}: {what} {name} is defined inside a function (a closure or "
            "a local class); a worker process imports its callbacks by name: move it to "
            "module level (pass data with param=...)"
        )
    if module is None or module not in sys.modules:
        raise TypeError(f"{owner}: {what} {name} has no importable module ({module!r})")
    if module == "__main__" and getattr(sys.modules["__main__"], "__file__", None) is None:
        raise TypeError(
            f"{owner}: {what} {name} is defined in an interactive session; a worker "
            "process can only import callbacks from a file"
        )
    found: object = sys.modules[module]
    for part in qualname.split("."):
        found = getattr(found, part, _MISSING)
        if found is _MISSING:
            if strict:
                raise TypeError(
                    f"{owner}: {what} {name} cannot be imported: {module} has no "
                    f"attribute {qualname!r}"
                )
            return
    if strict and found is not fn:
        raise TypeError(
            f"{owner}: {what} {name} is not the object found at that name in its "
            f"module ({found!r}; was it wrapped by another decorator, or redefined?)"
        )


def check_picklable(owner: str, what: str, value: object) -> None:
    """:raises TypeError: naming ``owner`` and the value, when ``value`` does not pickle"""
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"{owner}: {what} must pickle to reach a worker process, got "
            f"{type(value).__name__} {_short(value)} ({type(exc).__name__}: {exc})"
        ) from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MISSING: Final = object()


def check_timer(timer: ProcessTimer, *, strict: bool) -> None:
    """Everything a timer must satisfy to run in a worker process (see :func:`check_importable`)."""
    spec = timer.spec
    owner = f"timer {timer.name!r}"
    check_importable(owner, "callback", spec.callback, strict=strict)
    if spec.policy.on_error is not None:
        check_importable(owner, "on_error hook", spec.policy.on_error, strict=strict)
    check_picklable(owner, "param", spec.param)


# -- the trip to the child ------------------------------------------------------------------

_Wire = tuple[Callable[..., Any], int, str, str, str, Any, Policy | None, str]


def encode_timers(timers: Sequence[ProcessTimer]) -> list[_Wire]:
    """Plain tuples that pickle (a :class:`TimerSpec` does not: it is built by validation)."""
    return [
        (
            t.spec.callback,
            t.spec.interval,
            t.spec.unit.name,
            t.spec.kind.name,
            t.name,
            t.spec.param,
            None if t.spec.policy is DEFAULT_POLICY else t.spec.policy,
            t.mode.value,
        )
        for t in timers
    ]


def decode_timers(wire: list[_Wire]) -> list[ProcessTimer]:
    """The timers back from :func:`encode_timers` (validated again by :class:`TimerSpec`)."""
    timers = []
    for callback, interval, unit, kind, name, param, policy, mode in wire:
        if policy is None or policy == DEFAULT_POLICY:
            policy = DEFAULT_POLICY  # identity: the dispatcher's fast path checks `is`
        spec = TimerSpec(
            callback, interval, Unit[unit], Kind[kind], name=name, param=param, policy=policy
        )
        timers.append(ProcessTimer(spec, Mode(mode), name))
    return timers


def pickle_round_trip(obj: Any) -> Any:
    """What the other side of the pipe would get."""
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


# -- installing on the worker's scheduler -------------------------------------------------------


def install(scheduler: Scheduler, timers: Sequence[ProcessTimer]) -> list[Timer]:
    """Add a worker's timers to its own scheduler (in a child, or inline)."""
    return [
        scheduler.add(t.spec.replace(name=t.name))
        if t.mode is Mode.SYNC
        else scheduler.add(basic_spec(t.spec, t.name))
        for t in timers
    ]


def basic_spec(spec: TimerSpec, name: str) -> TimerSpec:
    """A spec that runs ``spec``'s callback, then re-arms its timer one interval after the run
    ended: a returns-interval timer (whose own re-queue the re-arm pre-empts) on the ms grid."""
    interval_ms = spec.interval * spec.unit.tick_ns // NS_PER_MS
    return TimerSpec(
        _basic_runner(spec.callback, spec.takes_tick, spec.is_coroutine, spec.policy.thread),
        interval_ms,
        Unit.MS,
        Kind.RETURNS_INTERVAL,
        name=name,
        param=spec.param,
        policy=spec.policy,
    )


def _rearm(timer: Timer) -> None:
    if timer.state is TimerState.ACTIVE:  # not cancelled, paused or stopped meanwhile
        timer.reschedule(timer.interval)


def _basic_runner(
    callback: Callable[..., Any], takes_tick: bool, is_coroutine: bool, thread: bool
) -> Callable[[Tick], Any]:
    """The callback of a basic timer: the user's, then the re-arm (even if it raised)."""
    if is_coroutine:

        async def run_async(tick: Tick) -> None:
            try:
                if takes_tick:
                    await callback(tick)
                else:
                    await callback()
            finally:
                _rearm(tick.timer)

        run_async.__qualname__ = f"basic({callback_name(callback)})"
        return run_async

    def run(tick: Tick) -> None:
        try:
            if takes_tick:
                callback(tick)
            else:
                callback()
        finally:
            if thread:  # in a worker thread: re-arm on the loop
                # (imported here: a spawned worker imports it for nothing else, ~3 ms before
                # its first tick on a slow host, for this one rare path)
                import anyio.from_thread

                anyio.from_thread.run_sync(_rearm, tick.timer)
            else:
                _rearm(tick.timer)

    run.__qualname__ = f"basic({callback_name(callback)})"
    return run
