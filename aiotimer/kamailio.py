"""Kamailio's timer API under its own names: a thin façade over :class:`aiotimer.Scheduler`.

For people porting a Kamailio module, or who think in its C API. Every function here maps onto
the core's public registration API: none keeps a schedule of its own. Argument order and names
follow Kamailio's ``timer.h``, ``timer_ticks.h`` and ``timer_proc.h``.

Ground rules:

* **One current scheduler.** Kamailio has one timer per process; the façade registers on the
  *current scheduler*: :func:`aiotimer.default_scheduler` unless :func:`use_scheduler` chose
  another (``use_scheduler(s)`` sets it; ``with use_scheduler(s): ...`` sets it for a block).
  Inside a callback run through the façade, it is the scheduler running that callback (so
  ``get_ticks()`` in a dedicated process's callback reads that worker's ticks). Registrations
  (like Kamailio's ``mod_init``) may come before the scheduler starts: timers are armed when it
  starts, their first run one interval after the start.
* **Ticks start at 0 and never wrap.** A raw tick is 1 ms (Kamailio: 62.5 ms, ``TIMER_TICKS_HZ``
  16); ``get_ticks()`` is whole seconds and ``get_ticks_raw()`` whole milliseconds since the
  scheduler started (Kamailio: a random origin, wrapping at 2**32). Time is the monotonic clock:
  a wall-clock jump changes nothing (Kamailio resyncs ticks from ``gettimeofday``).
* **Callbacks get the ticks of their grid point**: ``f(ticks, param)`` receives the ticks at the
  run's scheduled grid point (``Tick.ticks``), not whatever the clock says when it finally runs,
  so ``ticks % period`` tests such as msilo's are exact even for a late run.
* **Bad arguments raise at once** (``TypeError``/``ValueError`` naming the function and the
  value) where Kamailio returns -1 or crashes later: a ``NULL`` handler stopped Kamailio's whole
  slow timer (issues #1897, #2120). Runtime states keep Kamailio's return codes: ``timer_add``
  on an active timer returns -1, ``timer_del`` of an inactive one returns -1.
* **Failures are isolated**: a callback that raises is logged (``aiotimer.dispatch``), counted
  in its stats, and keeps its schedule; the other timers are not disturbed.
* **Periodic timers do not drift** and a stall is merged: after a stall a timer runs once, late,
  then goes on on its grid (Kamailio: once, late, then re-anchored to the late run).
* **Handlers run on the event loop** (fast or slow alike) unless registered with
  ``thread=True`` (blocking work, e.g. a database); ``async def`` callbacks are accepted too and
  run as tasks. Every registration function takes the core's policy keywords (``thread=``,
  ``timeout_s=``, ``missed=``... see :class:`aiotimer.Policy`); ``register_timer``,
  ``register_ms_timer`` and ``timer_add`` also take the timer's ``name=``.
* **Dedicated timer processes** (``fork_*``) are :class:`aiotimer.process.TimerProcess` workers
  with their own event loop, attached to the current scheduler: they start and stop with it, and
  are supervised (restarted if they die). ``f`` must be importable (a module-level function) and
  ``param`` picklable; ``register_basic_timers(n)`` must have reserved them, as in Kamailio.
  ``use_scheduler(s, inline_processes=True)`` runs them on ``s``'s loop and clock, for tests.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, Unpack, final

from ._default import default_scheduler
from ._kamailio_calls import (
    PERIODIC,
    AsyncTimerLnCall,
    SyncTimerLnCall,
    check_callable,
    running_scheduler,
    ticks_call,
    worker_call,
)
from ._registrar import PolicyOptions
from ._scheduler import Scheduler
from ._spec import MAX_INTERVAL, Unit, callback_name, is_coroutine_callable_cached
from ._stats import NO_HISTOGRAM
from ._timer import Tick, Timer, TimerState

if TYPE_CHECKING:
    from ._kamailio_procs import ProcessId

__all__ = [
    "F_TIMER_FAST",
    "MS_TO_TICKS",
    "PERIODIC",
    "PROC_MAIN",
    "PROC_TIMER",
    "ProcessId",
    "S_TO_TICKS",
    "TICKS_TO_MS",
    "TICKS_TO_S",
    "TIMER_TICKS_HZ",
    "TimerId",
    "TimerLn",
    "current_scheduler",
    "fork_basic_timer",
    "fork_basic_timer_w",
    "fork_basic_utimer",
    "fork_basic_utimer_w",
    "fork_dummy_timer",
    "fork_sync_timer",
    "fork_sync_utimer",
    "get_ticks",
    "get_ticks_raw",
    "register_basic_timers",
    "register_dummy_timers",
    "register_ms_timer",
    "register_sync_timers",
    "register_timer",
    "register_timer_process",
    "register_utimer",
    "timer_add",
    "timer_alloc",
    "timer_allow_del",
    "timer_del",
    "timer_init",
    "timer_reinit",
    "use_scheduler",
]

TIMER_TICKS_HZ: Final = 1000
"""Raw ticks per second: aiotimer's raw tick is 1 ms (Kamailio's is 62.5 ms, 16 Hz)."""

F_TIMER_FAST: Final = 1
"""``timer_init`` flag: accepted for compatibility; every handler runs on the event loop."""

PROC_MAIN: Final = 0
"""Kamailio's rank of the main process; ``fork_*``'s ``child_id`` is accepted and not used."""
PROC_TIMER: Final = -1
"""Kamailio's rank for timer processes, the usual ``child_id`` of ``fork_*`` calls."""

_DEAD: Final = (TimerState.CANCELLED, TimerState.FINISHED)
_MAX_TICKS: Final = MAX_INTERVAL[Unit.MS]  # the longest delta, in raw ticks (ms): 100 years
_LIVE: Final = (TimerState.PENDING, TimerState.ACTIVE)


# -- the current scheduler -----------------------------------------------------------------------


_current: Scheduler | None = None
_inline_processes = False


def current_scheduler() -> Scheduler:
    """The scheduler the façade works on: inside a callback registered through the façade, the
    scheduler running it (in a dedicated timer process, the worker's own); elsewhere the one set
    by :func:`use_scheduler`, else :func:`aiotimer.default_scheduler`."""
    running = running_scheduler.get()
    if running is not None:
        return running
    return _current if _current is not None else default_scheduler()


@final
class _SchedulerChoice:
    """What :func:`use_scheduler` returns: already in effect; as a context manager, it puts the
    previous choice back on exit."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[Scheduler | None, bool]) -> None:
        self._previous = previous

    def __enter__(self) -> Scheduler:
        return current_scheduler()

    def __exit__(self, *exc: object) -> None:
        global _current, _inline_processes
        _current, _inline_processes = self._previous


def use_scheduler(
    scheduler: Scheduler | None, *, inline_processes: bool = False
) -> _SchedulerChoice:
    """Make ``scheduler`` the current scheduler (``None``: back to the default scheduler).

    Takes effect at once; ``with use_scheduler(s): ...`` also restores the previous choice when
    the block ends::

        with kamailio.use_scheduler(scheduler):
            mod_init()          # register_timer(...) calls land on `scheduler`

    :param inline_processes: the ``fork_*`` functions declare processes whose worker runs on
        the scheduler's own loop and clock instead of in a child process (to test a module's
        timer processes on virtual time; see ``TimerProcess(inline=True)``)
    :raises TypeError: ``scheduler`` is not a :class:`~aiotimer.Scheduler` or ``None``
    """
    global _current, _inline_processes
    if scheduler is not None and not isinstance(scheduler, Scheduler):
        raise TypeError(
            f"use_scheduler() takes a Scheduler or None, got {type(scheduler).__name__} "
            f"{scheduler!r}"
        )
    if not isinstance(inline_processes, bool):
        raise TypeError(
            f"use_scheduler(): inline_processes must be a bool, got {inline_processes!r}"
        )
    choice = _SchedulerChoice((_current, _inline_processes))
    _current, _inline_processes = scheduler, inline_processes
    return choice


# -- ticks ---------------------------------------------------------------------------------------


def get_ticks() -> int:
    """Whole seconds since the current scheduler started (0 before it started).

    Kamailio: ``TICKS_TO_S`` of the raw ticks, from a random origin, wrapping at 2**32. Here: from
    the scheduler's start, never wrapping.
    """
    return current_scheduler().get_ticks()


def get_ticks_raw() -> int:
    """Raw ticks, whole milliseconds, since the current scheduler started (0 before it started).

    Kamailio's raw tick is 62.5 ms; ours is 1 ms, so ``TICKS_TO_MS(get_ticks_raw())`` is the same
    number.
    """
    return current_scheduler().get_ticks_raw()


def _exact(what: str, value: object) -> int | Fraction:
    """``value`` as an exact number >= 0 (a float as written: ``0.1`` is 1/10, not its binary
    neighbour, so ``S_TO_TICKS(0.1)`` is 100, not 101)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes an int or float, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} takes a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} takes a number >= 0 (ticks are unsigned), got {value!r}")
    return value if isinstance(value, int) else Fraction(str(value))


def _ticks(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} takes ticks as an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{what} takes ticks >= 0, got {value!r}")
    return value


def MS_TO_TICKS(ms: float) -> int:  # Kamailio's macro names, upper case
    """Milliseconds to raw ticks, rounded **up** like Kamailio's ``(m*HZ + 999) / 1000``, so a
    timer never fires early: ``MS_TO_TICKS(20) == 20``, ``MS_TO_TICKS(0.5) == 1``."""
    return math.ceil(_exact("MS_TO_TICKS", ms) * TIMER_TICKS_HZ / 1000)


def S_TO_TICKS(s: float) -> int:
    """Seconds to raw ticks (``s * 1000``), a fraction of a tick rounded up:
    ``S_TO_TICKS(2) == 2000``, ``S_TO_TICKS(0.0005) == 1``."""
    return math.ceil(_exact("S_TO_TICKS", s) * TIMER_TICKS_HZ)


def TICKS_TO_MS(ticks: int) -> int:
    """Raw ticks to whole milliseconds (Kamailio's integer division; exact with a 1 ms tick)."""
    return _ticks("TICKS_TO_MS", ticks) * 1000 // TIMER_TICKS_HZ


def TICKS_TO_S(ticks: int) -> int:
    """Raw ticks to whole seconds, rounded down like Kamailio's ``t / HZ``:
    ``TICKS_TO_S(1999) == 1``."""
    return _ticks("TICKS_TO_S", ticks) // TIMER_TICKS_HZ


# -- register_timer and friends ------------------------------------------------------------------


@final
class TimerId(int):
    """What ``register_timer`` returns: Kamailio's timer id (an ``int >= 0``, counting from 0 in
    registration order) that also carries the timer's handle, :attr:`timer`, to inspect it
    (``.stats``), pause, reschedule or cancel it (Kamailio has no way to)."""

    timer: Timer

    def __new__(cls, value: int, timer: Timer) -> TimerId:
        self = super().__new__(cls, value)
        self.timer = timer
        return self

    def __repr__(self) -> str:
        return f"TimerId({int(self)}, {self.timer!r})"


_ids = itertools.count()


def register_timer(
    f: Callable[[int, Any], Any],
    param: Any,
    interval_s: int,
    *,
    name: str | None = None,
    **options: Unpack[PolicyOptions],
) -> TimerId:
    """Run ``f(ticks, param)`` every ``interval_s`` seconds on the second grid.

    Kept from Kamailio: ``ticks`` is in seconds; the first run is one interval after the
    registration (or after the scheduler starts, for a registration before it); the timer is
    periodic and cannot stop itself (cancel it with ``register_timer(...).timer.cancel()``).

    Changed: ``ticks`` is the seconds of the run's grid point since the scheduler started (see the
    module notes); the runs are on the anchored grid, so a slow ``f`` does not push the next run
    back; Kamailio runs every such timer in its one "slow timer" process, one after the other:
    here a sync ``f`` runs on the event loop (so it must be quick), with ``thread=True`` in a worker
    thread, and an ``async def f`` as a task. Errors raise (``TypeError``/``ValueError``) instead
    of returning -1.

    :param f: ``f(ticks: int, param)``, a function or a coroutine function
    :param param: handed to ``f`` as is
    :param interval_s: whole seconds > 0
    :param name: the timer's unique name; by default ``f``'s ``module.qualname`` (``#2``... for
        the same ``f`` registered again)
    :param options: the core's policy keywords, e.g. ``thread=True``
    :return: a :class:`TimerId`: the id (>= 0), with the timer handle as ``.timer``
    """
    _check_arity("register_timer", f, ("ticks", "param"), name)
    timer = current_scheduler().add_every_s(
        interval_s, ticks_call("register_timer", f, param, raw=False), name=name, **options
    )
    return TimerId(next(_ids), timer)


def register_ms_timer(
    f: Callable[[int, Any], Any],
    param: Any,
    interval_ms: int,
    *,
    name: str | None = None,
    **options: Unpack[PolicyOptions],
) -> TimerId:
    """Run ``f(ticks_raw, param)`` every ``interval_ms`` milliseconds on the ms grid.

    As :func:`register_timer`, in milliseconds: ``f`` gets the raw ticks (milliseconds, what
    Kamailio's ``TICKS_TO_MS(ticks)`` gives) of its grid point.
    """
    _check_arity("register_ms_timer", f, ("ticks_raw", "param"), name)
    timer = current_scheduler().add_every_ms(
        interval_ms, ticks_call("register_ms_timer", f, param, raw=True), name=name, **options
    )
    return TimerId(next(_ids), timer)


register_utimer = register_ms_timer
"""Kamailio's ``register_utimer``: :func:`register_ms_timer` (interval in milliseconds)."""


# -- timer_ln ----------------------------------------------------------------------------------


@final
class TimerLn:
    """Kamailio's ``struct timer_ln``: one reusable timer, driven by ``timer_init``,
    ``timer_add`` and ``timer_del``. Make one with :func:`timer_alloc` (or ``TimerLn()``).

    :ivar f: the handler ``f(ticks_raw, tl, data)``, set by :func:`timer_init`
    :ivar data: handed to the handler
    :ivar flags: as given to :func:`timer_init`
    """

    __slots__ = ("_call", "_core", "_core_name", "_running", "_timer", "data", "f", "flags")

    def __init__(self) -> None:
        self.f: Callable[[int, TimerLn, Any], Any] | None = None
        self.data: Any = None
        self.flags = 0
        self._call: Callable[[Tick], Any] | None = None  # made by timer_init
        self._timer: Timer | None = None  # the core timer of the current timer_add
        self._core: Timer | None = None  # the core timer, kept across timer_del for re-use
        self._core_name: str | None = None  # the name _core was registered with (None: anonymous)
        self._running = 0  # handler calls in progress

    @property
    def timer(self) -> Timer | None:
        """The core timer of the last ``timer_add`` (``None`` before it, or after a
        ``timer_del``): its name, ``stats``, ``next_run``..."""
        return self._timer

    @property
    def active(self) -> bool:
        """Added and not yet over: queued, or in its handler (Kamailio's ``F_TIMER_ACTIVE``,
        except that an expired one-shot is not active: it can be added again at once)."""
        timer = self._timer
        return timer is not None and timer.state in _LIVE

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        f = getattr(self.f, "__qualname__", self.f)
        return f"<TimerLn f={f} {state}>"


def timer_alloc() -> TimerLn:
    """A new, uninitialised :class:`TimerLn` (Kamailio allocates it in shared memory; here it is
    an object, freed when no longer referenced: there is no ``timer_free``)."""
    return TimerLn()


def _check_tl(where: str, tl: object) -> TimerLn:
    if not isinstance(tl, TimerLn):
        raise TypeError(f"{where}: tl must be a TimerLn, got {type(tl).__name__} {tl!r}")
    return tl


def timer_init(
    tl: TimerLn, f: Callable[[int, TimerLn, Any], Any], data: Any, flags: int = 0
) -> None:
    """Set the handler ``f(ticks_raw, tl, data)`` of ``tl``.

    The handler's return value decides what comes next, as in Kamailio: ``0`` one-shot (not
    re-added), :data:`PERIODIC` (``0xFFFFFFFF``, Kamailio's ``(ticks_t)-1``; ``-1`` is taken as
    the same) again after the same interval, any other ``n`` again after ``n`` ticks, which
    becomes the interval. Anything else (``None`` from a handler that forgot to return, a negative
    number, a non-int) is reported as the run's error, naming the timer, and the timer keeps its
    interval. ``ticks_raw`` is the raw ticks (ms) of the run's grid point. The next run is due
    ``n`` ticks after the grid point of the run that returned ``n``: no drift.

    :param flags: ``0`` or :data:`F_TIMER_FAST`; accepted, without effect (every handler runs
        on the event loop; a ``async def`` handler runs as a task)
    :raises TypeError: ``f`` is not callable, ``flags`` not an int
    :raises ValueError: unknown ``flags``
    :raises RuntimeError: ``tl`` is active (Kamailio's ``timer_init`` would wipe a queued timer
        and corrupt its timer list): ``timer_del`` it first
    """
    _check_tl("timer_init", tl)
    _check_arity("timer_init", f, ("ticks_raw", "tl", "data"), None)
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"timer_init: flags must be an int, got {flags!r}")
    if flags & ~F_TIMER_FAST:
        raise ValueError(f"timer_init: flags may be 0 or F_TIMER_FAST, got {flags:#x}")
    if tl.active:
        raise RuntimeError(
            f"timer_init: {tl!r} is active (timer {tl._timer!r}); timer_del it first"
        )
    tl.f = f
    tl.data = data
    tl.flags = flags
    tl._call = AsyncTimerLnCall(tl) if is_coroutine_callable_cached(f) else SyncTimerLnCall(tl)
    tl._timer = None


def timer_add(tl: TimerLn, delta: int, *, name: str | None = None) -> int:
    """Run ``tl``'s handler ``delta`` raw ticks (milliseconds) from now on the current scheduler.

    Kept from Kamailio: returns 0, or -1 if ``tl`` is already active (queued, or in its handler:
    a handler re-arms itself by its return value, or by ``timer_reinit(tl)`` then ``timer_add``);
    ``delta`` 0 runs at the next tick (here the next millisecond).

    Changed: an expired one-shot or a deleted timer can be added again without ``timer_reinit``;
    a ``tl`` that was never ``timer_init``-ed raises (Kamailio would call a ``NULL`` handler).

    As in Kamailio, a ``timer_ln`` is one timer for its life: the core timer of the first
    ``timer_add`` is re-armed by the next ones (``timer_del`` pauses it), so a transaction's
    ``timer_del`` + ``timer_add`` costs a re-arm, not a new timer. Without ``name`` it is an
    anonymous returns-interval timer: not in ``scheduler.timers`` (see the scheduler's ground
    rules), gone with its ``TimerLn``.

    :param delta: raw ticks, an int >= 0 (use :func:`MS_TO_TICKS`, :func:`S_TO_TICKS`)
    :param name: the core timer's name (registered, so ``scheduler.get_timer(name)`` finds it)
    :raises RuntimeError: ``tl`` has no handler
    """
    # Transactions call this by the thousand a second: the checks are inlined for the common
    # case (a TimerLn, an int delta >= 0), the helpers only raise.
    if tl.__class__ is not TimerLn:  # (a final class; callers are untyped C-style code)
        _check_tl("timer_add", tl)  # type: ignore[unreachable]
    if type(delta) is not int or delta < 0:
        delta = _ticks("timer_add: delta", delta)
    call = tl._call
    if call is None:
        raise RuntimeError(f"timer_add: {tl!r} has no handler: call timer_init(tl, f, data) first")
    current = tl._timer
    if current is not None and current._state in _LIVE:  # tl.active
        return -1
    # The core's smallest delay is one tick: delta 0 runs at the next tick, as in Kamailio.
    ticks = delta or 1
    scheduler = running_scheduler.get()  # current_scheduler(), inlined
    if scheduler is None:
        scheduler = _current if _current is not None else default_scheduler()
    core = tl._core
    if (
        core is not None
        and core._state not in _DEAD
        and core._call is call
        and tl._core_name == name  # (not core.name: its spec is cold memory, see below)
        and core._grid.owner is scheduler  # core.scheduler
    ):
        if ticks > _MAX_TICKS:
            scheduler._reschedule(core, ticks, True)  # refuses it, naming the timer and value
        if core._hist != NO_HISTOGRAM:  # per arming: 100,000 timer_ln hold no slot while idle
            core.restart_histograms()
        # paused by timer_del or its expiry (resumed, in the same call), or in its own handler:
        # core.reschedule(ticks, resume=True) without its checks, done here (a raw tick is a
        # tick of the ms grid): 100,000 timer_ln have a core spec each, cold memory, and
        # reading none of them on a re-arm made a timer_del + timer_add 4.05 -> 3.16 µs
        scheduler._rearm_ticks(core, ticks, True)
    else:
        if core is not None and core._state not in _DEAD:
            core.cancel()  # another handler, name or scheduler: a timer of its own
        core = tl._core = scheduler.add_every_ms(ticks, call, name=name, returns_interval=True)
        tl._core_name = name
    tl._timer = core
    return 0


def timer_del(tl: TimerLn) -> int:
    """Stop ``tl``: it will not run again (until the next ``timer_add``).

    Returns 0 if it was active, -1 if not (never added, expired one-shot, already deleted), as
    Kamailio does.

    Changed: from inside its own handler it works (returns 0, and the handler's return value is
    then ignored), where Kamailio logs a bug, returns -2 and ignores the delete unless the handler
    called ``timer_allow_del()`` first (and even then the handler's return value re-adds it).
    ``timer_del`` never waits: an ``async`` handler run in progress finishes, its return value
    ignored (Kamailio's waits for a handler running in another process).
    """
    if tl.__class__ is not TimerLn:
        _check_tl("timer_del", tl)  # type: ignore[unreachable]
    timer = tl._timer
    if timer is None or timer._state not in _LIVE:  # not tl.active
        return -1
    tl._timer = None
    timer._grid.owner._pause(timer)  # timer.pause(), one frame less: kept for the next timer_add
    return 0


def timer_reinit(tl: TimerLn) -> None:
    """Make ``tl`` addable again. Kamailio needs it before re-adding an expired one-shot or a
    deleted timer; here those are addable anyway, so it only matters inside ``tl``'s own handler:
    it detaches the running timer (its handler's return value is then ignored) so that a
    ``timer_add(tl, delta)`` in the same handler arms it afresh.

    :raises RuntimeError: ``tl`` is queued (Kamailio would corrupt its timer list):
        ``timer_del`` it first
    """
    _check_tl("timer_reinit", tl)
    if not tl.active:
        return
    if not tl._running:
        raise RuntimeError(
            f"timer_reinit: {tl!r} is queued (timer {tl._timer!r}); timer_del it first"
        )
    tl._timer = None


def timer_allow_del() -> None:
    """Accepted for compatibility, no effect: ``timer_del`` from a handler always works here.

    (Kamailio: lets the running handler delete its own timer without a bug report.)
    """


# -- dedicated timer processes -------------------------------------------------------------------
#
# Kamailio: register_basic_timers(n) in mod_init, then in child_init(PROC_MAIN)
# fork_basic_timer(PROC_TIMER, "MY MOD TIMER", 1, f, param, interval). Here each fork declares a
# one-worker TimerProcess named `desc`, attached to the current scheduler: its worker starts
# when the scheduler starts and stops with it. What the worker runs must reach another process:
# `f` importable (a module-level function), `param` picklable; both are checked at the fork.


def register_basic_timers(n: int) -> int:
    """Reserve ``n`` dedicated timer processes on the current scheduler (call it from your
    ``mod_init``); the ``fork_*`` functions refuse to fork more than were reserved, as
    Kamailio's do. Reservations add up. Returns 0.

    :raises TypeError: ``n`` is not an int
    :raises ValueError: ``n`` < 0
    """
    from ._kamailio_procs import reserve  # the process layer, imported on first use

    return reserve("register_basic_timers", current_scheduler(), n)


register_dummy_timers = register_basic_timers
"""Kamailio's alias of :func:`register_basic_timers`."""


def register_sync_timers(n: int) -> int:
    """:func:`register_basic_timers` for ``fork_sync_*`` processes (one pool, as in Kamailio)."""
    from ._kamailio_procs import reserve

    return reserve("register_sync_timers", current_scheduler(), n)


def _fork(
    where: str,
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[..., Any],
    param: Any,
    callback: Callable[[Tick], Any],
    interval: int,
    *,
    unit: Unit,
    basic: bool,
    options: PolicyOptions,
) -> ProcessId:
    from ._kamailio_procs import fork

    return fork(
        where,
        current_scheduler(),
        child_id,
        desc,
        make_sock,
        f,
        param,
        callback,
        interval,
        unit,
        basic,
        _inline_processes,
        options,
    )


def fork_basic_timer(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, Any], Any],
    param: Any,
    interval_s: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """A dedicated process that runs ``f(ticks, param)``, then sleeps ``interval_s`` seconds,
    forever: the runs drift by ``f``'s run time, as Kamailio's basic timer does. The first run is
    one interval after the process starts (with the scheduler).

    Kept: the argument order; ``desc`` names the process (``ps`` shows ``aiotimer: <desc> [0]``);
    a fork beyond ``register_basic_timers(n)`` is refused.
    Changed: ``child_id`` (Kamailio's rank, e.g. :data:`PROC_TIMER`) and ``make_sock`` (SIP
    sockets for the child) are accepted and have no effect; the process is supervised (restarted
    if it dies) and stopped with the scheduler; ``ticks`` counts from the worker's start.

    :param desc: the process name, unique on the scheduler
    :param f: a module-level function (the worker imports it), or coroutine function
    :param param: picklable (it is sent to the worker)
    :param options: policy keywords for the timer (``thread=True``, ``timeout_s=``...)
    :return: a :class:`ProcessId`, whose ``.process`` is the ``TimerProcess``
    :raises RuntimeError: no reserved process left
    :raises TypeError: ``f`` not importable, ``param`` not picklable, bad argument types
    """
    _check_arity("fork_basic_timer", f, ("ticks", "param"), desc)
    call = ticks_call("fork_basic_timer", f, param, raw=False)
    return _fork(
        "fork_basic_timer",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_s,
        unit=Unit.S,
        basic=True,
        options=options,
    )


fork_dummy_timer = fork_basic_timer
"""Kamailio's alias of :func:`fork_basic_timer`."""


def fork_basic_timer_w(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, int, Any], Any],
    worker: int,
    param: Any,
    interval_s: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """:func:`fork_basic_timer` calling ``f(ticks, worker, param)`` (Kamailio's
    ``timer_function_w``): forking it ``n`` times with ``worker`` = 0..n-1 runs the same work in
    ``n`` processes that tell themselves apart (rtimer's ``mode=N``)."""
    _check_arity("fork_basic_timer_w", f, ("ticks", "worker", "param"), desc)
    call = worker_call(
        "fork_basic_timer_w", f, _worker("fork_basic_timer_w", worker), param, raw=False
    )
    return _fork(
        "fork_basic_timer_w",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_s,
        unit=Unit.S,
        basic=True,
        options=options,
    )


def fork_basic_utimer(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, Any], Any],
    param: Any,
    uinterval: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """:func:`fork_basic_timer` in **microseconds**, calling ``f(ticks_raw, param)`` (raw ticks,
    i.e. milliseconds: Kamailio's ``TICKS_TO_MS(get_ticks_raw())``).

    ``uinterval`` is in µs as Kamailio's code uses it (its header says ms, its code sleeps µs);
    aiotimer's resolution is 1 ms, so it is rounded **up** to whole ms (1500 µs -> 2 ms): never
    shorter than asked.
    """
    interval_ms = _us_to_ms("fork_basic_utimer", uinterval)
    _check_arity("fork_basic_utimer", f, ("ticks_raw", "param"), desc)
    call = ticks_call("fork_basic_utimer", f, param, raw=True)
    return _fork(
        "fork_basic_utimer",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_ms,
        unit=Unit.MS,
        basic=True,
        options=options,
    )


def fork_basic_utimer_w(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, int, Any], Any],
    worker: int,
    param: Any,
    uinterval: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """:func:`fork_basic_utimer` calling ``f(ticks_raw, worker, param)``."""
    interval_ms = _us_to_ms("fork_basic_utimer_w", uinterval)
    _check_arity("fork_basic_utimer_w", f, ("ticks_raw", "worker", "param"), desc)
    call = worker_call(
        "fork_basic_utimer_w", f, _worker("fork_basic_utimer_w", worker), param, raw=True
    )
    return _fork(
        "fork_basic_utimer_w",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_ms,
        unit=Unit.MS,
        basic=True,
        options=options,
    )


def fork_sync_timer(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, Any], Any],
    param: Any,
    interval_s: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """A dedicated process that runs ``f(ticks, param)`` every ``interval_s`` seconds on the
    anchored grid (reserve it with :func:`register_sync_timers`).

    Changed: Kamailio's sync timer subtracts the run time from its next sleep at 62.5 ms
    resolution, so oversleeping still accumulates, and an overrun makes it run again after 1 ms;
    here run k is due at ``start + k * interval``: no drift, and an overrun skips the grid points
    it covered (``tick.missed``; see :class:`aiotimer.Missed`).
    """
    _check_arity("fork_sync_timer", f, ("ticks", "param"), desc)
    call = ticks_call("fork_sync_timer", f, param, raw=False)
    return _fork(
        "fork_sync_timer",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_s,
        unit=Unit.S,
        basic=False,
        options=options,
    )


def fork_sync_utimer(
    child_id: int,
    desc: str,
    make_sock: int,
    f: Callable[[int, Any], Any],
    param: Any,
    uinterval: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """:func:`fork_sync_timer` in microseconds (rounded up to whole ms, see
    :func:`fork_basic_utimer`), calling ``f(ticks_raw, param)``. (Kamailio's mixes ticks and µs
    in its compensation, which therefore does not compensate.)"""
    interval_ms = _us_to_ms("fork_sync_utimer", uinterval)
    _check_arity("fork_sync_utimer", f, ("ticks_raw", "param"), desc)
    call = ticks_call("fork_sync_utimer", f, param, raw=True)
    return _fork(
        "fork_sync_utimer",
        child_id,
        desc,
        make_sock,
        f,
        param,
        call,
        interval_ms,
        unit=Unit.MS,
        basic=False,
        options=options,
    )


def register_timer_process(
    f: Callable[[int, Any], Any],
    param: Any,
    interval_s: int,
    **options: Unpack[PolicyOptions],
) -> ProcessId:
    """A dedicated process running ``f(ticks, param)`` every ``interval_s`` seconds, from
    ``mod_init`` in one call: reserves one process and forks a basic timer named after ``f``
    (``register_basic_timers(1)`` + ``fork_basic_timer(PROC_TIMER, <f's name>, 0, f, param,
    interval_s)``). The process is named after ``f``: for a second process running the same
    ``f``, use ``fork_basic_timer`` with a ``desc`` of its own."""
    _check_arity("register_timer_process", f, ("ticks", "param"), None)
    register_basic_timers(1)
    return fork_basic_timer(PROC_TIMER, callback_name(f), 0, f, param, interval_s, **options)


def _us_to_ms(where: str, uinterval: object) -> int:
    if isinstance(uinterval, bool) or not isinstance(uinterval, int):
        raise TypeError(f"{where}: uinterval (µs) must be an int, got {uinterval!r}")
    if uinterval <= 0:
        raise ValueError(f"{where}: uinterval (µs) must be > 0, got {uinterval}")
    return -(-uinterval // 1000)


def _worker(where: str, worker: object) -> int:
    if isinstance(worker, bool) or not isinstance(worker, int):
        raise TypeError(f"{where}: worker must be an int, got {worker!r}")
    if worker < 0:
        raise ValueError(f"{where}: worker must be >= 0, got {worker}")
    return worker


def _check_arity(where: str, f: object, params: tuple[str, ...], name: str | None) -> None:
    """Refuse, at registration, a handler that cannot take the arguments every run passes
    (it would fail on every run instead). A callable whose signature Python cannot read (some
    builtins) is taken as it is."""
    check_callable(where, f)
    try:
        problem = _arity_problem(f, params)  # (cached: timer_init runs once per transaction)
    except TypeError:  # unhashable
        problem = _arity_problem.__wrapped__(f, params)
    if problem is not None:
        label = name if name is not None else callback_name(f)
        raise TypeError(
            f"{where}: timer {label!r}: f must take {len(params)} positional arguments "
            f"({', '.join(params)}), got {problem}"
        )


@functools.lru_cache(maxsize=256)
def _arity_problem(f: object, params: tuple[str, ...]) -> str | None:
    """Why ``f`` cannot be called with ``params`` (its signature and the binding error), or
    ``None`` if it can (or has no signature Python can read)."""
    try:
        signature = inspect.signature(f)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*params)
    except TypeError as exc:
        return f"f{signature} ({exc})"
    return None


def __getattr__(name: str) -> Any:
    # ProcessId lives with the process layer, imported on first use (as aiotimer.TimerProcess):
    # a program without timer processes does not pay for multiprocessing.
    if name == "ProcessId":
        from ._kamailio_procs import ProcessId

        return ProcessId
    raise AttributeError(f"module 'aiotimer.kamailio' has no attribute {name!r}")
