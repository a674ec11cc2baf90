"""The :class:`Scheduler`: the façade that owns the clock, both grids and the timer registry.

Ground rules:

* Nothing runs until :meth:`Scheduler.start` (or ``async with``); timers may be added and
  cancelled before and after it. Timers added before start are armed at start: their first run
  is one interval after it.
* A timer's first run is at the first grid point at least one interval after it was added:
  never earlier than the interval, at most one grid tick (1 ms, or 1 s on the second grid) later.
  With ``grid_origin_ns``, run k of every timer is at ``origin + k * interval`` (the first one at
  or after "now + interval"), so schedulers sharing an origin share grid points.
* Periodic timers then run on their anchored grid (``anchor + k * interval``) and never drift.
* The scheduler owns the registry, the lifecycle and the services; each grid (``_grid.py``)
  owns its timers' positions; the dispatcher (``_dispatch.py``) runs what is due.
* ``stop()`` stops new runs, lets running coroutine callbacks finish within a grace period on
  the scheduler's clock, then cancels what is left. A stopped scheduler can be started again;
  its timers are re-armed from the new start.
* Not thread-safe: call a scheduler's methods (and its timers') from its event loop's thread.
  A ``thread=True`` callback that must change timers goes through ``anyio.from_thread``.
* The registry maps unique names to live timers. Unnamed timers are named after their callback
  (``module.qualname``, then ``#2``, ``#3``... for the same callback added again); an explicit
  name that is taken, or a function decorated twice, is refused. Name bookkeeping is freed with
  the last timer of a name.
* **Anonymous timers that end by themselves** (one-shots and returns-interval timers added
  without a name: per-call and per-transaction timers, by the thousand) are not in the
  registry: nothing looks them up, so an arm costs no unique name and a dropped handle leaves
  nothing behind. Their ``name`` is their callback's (not unique); :attr:`timers`,
  :meth:`get_timer` and ``stats().timers`` do not list them; ``stats().queued`` counts every
  armed timer, theirs included; the handle works as any other. Per-call ``add_once_ms``
  one-shots of one callback share one spec (see :meth:`_register_once`): a timer's own
  delay is :attr:`Timer.interval`, as after a ``reschedule``.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, final

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from ._backend import current_backend
from ._clock import NS_PER_MS, NS_PER_S, Clock, MonotonicClock
from ._dispatch import INTERNAL_SPEC, Dispatcher, current_timer
from ._gate import RunGate
from ._grid import Grid, WallGrid
from ._modes import GATED, INTERNAL, mode_of
from ._policy import ErrorHook
from ._queue import NOT_QUEUED
from ._registrar import Registrar
from ._service import Service
from ._spec import (
    ADAPTER_SHAPES,
    CALENDAR,
    MAX_INTERVAL,
    ONESHOT,
    RETURNS_INTERVAL,
    UNIT_MS,
    UNIT_NS,
    TimerSpec,
    callback_name,
    check_interval,
)
from ._stats import NO_HISTOGRAM, Histogram, HistogramSlab, SchedulerStats
from ._tick_source import TickSource
from ._timer import ACTIVE, CANCELLED, FINISHED, PAUSED, PENDING, Timer, TimerState
from ._timerfd import Precision, TimerFd, resolve_precision

if TYPE_CHECKING:
    from ._service import Attachable

__all__ = ["Scheduler"]

logger = logging.getLogger("aiotimer.scheduler")

_State = Literal["stopped", "starting", "running", "stopping"]
DEFAULT_GRACE_S: Final = 5.0
DEFAULT_BLOCK_WARN_S: Final = 0.1
DEFAULT_THREAD_LIMIT: Final = 8

_Layout = tuple[TimerSpec, int, Grid, int, str, str | None, bool]
"""How a spec registers (see ``Scheduler._lay_out``)."""


@final
class Scheduler(Registrar[Timer]):
    """Runs millisecond and second timers on an event loop (asyncio, uvloop or trio).

    :param clock: the clock to run on; the monotonic clock by default,
        :class:`aiotimer.testing.VirtualClock` in tests
    :param grid_origin_ns: where both grids start, on ``clock``; by default the time of
        :meth:`start`. A fixed origin lets several schedulers agree on grid points.
    :param name: used in logs and ``repr``
    :param on_error: ``on_error(timer, exc)``, called on the loop after any timer's run failed
        or timed out (besides the timer's own hook); it must not raise (if it does, that is
        logged)
    :param block_warn_s: an inline sync callback that holds the loop this long or longer is
        reported by name (a warning on ``aiotimer.dispatch`` and ``loop_blocks`` in its stats);
        ``None`` turns the watchdog off
    :param thread_limit: at most this many ``thread=True`` runs at once (aiotimer's own pool of
        as many threads on asyncio, its own capacity limiter on trio; never the loop's default
        executor)
    :param seed: seed of the random source for jitter (for reproducible tests)
    :param wall_check_s: while wall-clock timers (cluster, calendar) are queued, the wall clock
        is re-checked at least this often, so a wall-clock step (NTP, suspend) is seen within
        it (default 1 s)
    :param precision: how the tick source sleeps: ``"loop"`` on the event loop's timers,
        ``"timerfd"`` on a Linux timerfd armed at the absolute deadline (sub-millisecond
        lateness, never early; needs the monotonic clock), ``"auto"`` (default) the timerfd
        where it works, else the loop
    :raises ValueError: an unknown ``precision``, or ``"timerfd"`` where it cannot work
    """

    __slots__ = (
        "_bases",
        "_by_callback",
        "_clock",
        "_dispatcher",
        "_drained",
        "_grace_ns",
        "_grid_origin_ns",
        "_grids",
        "_hist",
        "_layout",
        "_loop_token",
        "_ms",
        "_now_ns",
        "_rearm",
        "_s",
        "_services",
        "_start_ns",
        "_started_once",
        "_state",
        "_stop_requested",
        "_stopped",
        "_tick_scope",
        "_tick_source",
        "_timerfd",
        "_timers",
        "_use_timerfd",
        "_wall",
        "name",
        "random",
    )

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        grid_origin_ns: int | None = None,
        name: str = "aiotimer",
        on_error: ErrorHook | None = None,
        block_warn_s: float | None = DEFAULT_BLOCK_WARN_S,
        thread_limit: int = DEFAULT_THREAD_LIMIT,
        seed: int | None = None,
        precision: Precision = "auto",
        wall_check_s: float = 1.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Scheduler: name must be a non-empty str, got {name!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"scheduler {name!r}: clock must implement Clock, got {clock!r}")
        if grid_origin_ns is not None and (
            isinstance(grid_origin_ns, bool) or not isinstance(grid_origin_ns, int)
        ):
            raise TypeError(
                f"scheduler {name!r}: grid_origin_ns must be an int, got {grid_origin_ns!r}"
            )
        if on_error is not None and (
            not callable(on_error) or inspect.iscoroutinefunction(on_error)
        ):
            raise TypeError(
                f"scheduler {name!r}: on_error must be a sync callable, got {on_error!r}"
            )
        if block_warn_s is not None and (
            isinstance(block_warn_s, bool)
            or not isinstance(block_warn_s, (int, float))
            or not math.isfinite(block_warn_s)
            or block_warn_s <= 0
        ):
            raise ValueError(
                f"scheduler {name!r}: block_warn_s must be a number > 0 or None, "
                f"got {block_warn_s!r}"
            )
        if (
            isinstance(wall_check_s, bool)
            or not isinstance(wall_check_s, (int, float))
            or not 0.001 <= wall_check_s <= 86_400
        ):
            raise ValueError(
                f"scheduler {name!r}: wall_check_s must be a number from 0.001 to 86400, "
                f"got {wall_check_s!r}"
            )
        if isinstance(thread_limit, bool) or not isinstance(thread_limit, int) or thread_limit < 1:
            raise ValueError(
                f"scheduler {name!r}: thread_limit must be an int >= 1, got {thread_limit!r}"
            )
        self.name = name
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._use_timerfd = resolve_precision(precision, self._clock, name)
        self._timerfd: TimerFd | None = None
        # Bound once: the hot paths call it per timed run and per registration. The real
        # clock's is time.monotonic_ns itself, a C call with no Python frame.
        self._now_ns: Callable[[], int] = (
            time.monotonic_ns if type(self._clock) is MonotonicClock else self._clock.now_ns
        )
        self.random = random.Random(seed)
        self._hist = HistogramSlab()
        self._services: dict[str, Service] = {}
        self._grid_origin_ns = grid_origin_ns
        self._ms = Grid(NS_PER_MS, self, self._hist, self.random)
        self._s = Grid(NS_PER_S, self, self._hist, self.random)
        self._wall = WallGrid(  # cluster and calendar timers
            self, self._hist, self.random, self._clock, round(wall_check_s * NS_PER_S)
        )
        self._grids = (self._ms, self._s, self._wall)
        # default name -> [live timers named after it, the last number given]; freed at 0
        self._bases: dict[str, list[int]] = {}
        self._layout = self._lay_out(INTERNAL_SPEC)  # the last spec registered, laid out
        self._timers: dict[str, Timer] = {}
        self._rearm: set[Timer] = set()  # unregistered timers to arm at the next start
        self._by_callback: dict[Callable[..., Any], Timer] = {}  # decorated functions
        self._dispatcher = Dispatcher(
            now_ns=self._now_ns,
            hold=self._clock.hold,
            slab=self._hist,
            ms_grid=self._ms,
            on_error=on_error,
            block_ns=None if block_warn_s is None else math.ceil(block_warn_s * NS_PER_S),
            thread_limit=thread_limit,
            finish=self._finish,
            run_finished=self._run_finished,
        )
        self._tick_source = TickSource(self._clock, self._grids, self._on_due)
        self._loop_token: object = None  # the loop it runs on
        self._state: _State = "stopped"
        self._start_ns = 0
        self._started_once = False
        self._grace_ns = 0
        self._stop_requested: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._tick_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Scheduler {self.name!r} {self._state} timers={len(self._timers)}>"

    # -- registry --------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def precision(self) -> Precision:
        """The tick source in use: ``"timerfd"`` or ``"loop"``."""
        return "timerfd" if self._use_timerfd else "loop"

    @property
    def timers(self) -> Mapping[str, Timer]:
        """Live timers by name (a read-only view)."""
        return MappingProxyType(self._timers)

    def get_timer(self, name: str) -> Timer:
        """The live timer called ``name``; ``KeyError`` naming it if there is none."""
        try:
            return self._timers[name]
        except KeyError:
            raise KeyError(f"scheduler {self.name!r} has no timer {name!r}") from None

    def add(self, spec: TimerSpec) -> Timer:
        """Add a timer from a prepared :class:`TimerSpec` (what ``add_*`` methods build)."""
        if not isinstance(spec, TimerSpec):
            raise TypeError(f"add() takes a TimerSpec, got {type(spec).__name__} {spec!r}")
        return self._register(spec, False)

    def add_table(self, table: Any) -> list[Timer]:
        """Add every timer of a :class:`~aiotimer.TimerTable`; all or none (names checked first)."""
        from ._table import TimerTable

        if not isinstance(table, TimerTable):
            raise TypeError(f"add_table() takes a TimerTable, got {type(table).__name__}")
        for spec in table:
            if spec.name is not None and spec.name in self._timers:
                raise ValueError(
                    f"timer {spec.name!r} of {table!r} is already registered on {self.name!r}"
                )
        return [self._register(spec, decorated=table.is_decorated(spec)) for spec in table]

    def _register_once(self, spec: TimerSpec, delay_ms: int) -> Timer:
        """A per-call one-shot shares its callback's spec, whatever the spec's delay: the
        timer holds its own (:attr:`Timer.interval`; the spec's unit is ms, its grid the ms
        grid). Nothing to build per call but the timer."""
        return self._register(spec, False, delay_ms)

    def _register(self, spec: TimerSpec, decorated: bool, ticks: int = 0) -> Timer:
        """Register a timer of ``spec``; ``ticks``: its interval in its grid's ticks instead of
        the spec's (see :meth:`_register_once`)."""
        if decorated:
            other = self._by_callback.get(spec.callback)
            if other is not None:
                raise ValueError(
                    f"timer {spec.label!r}: function {callback_name(spec.callback)} is already "
                    f"registered on scheduler {self.name!r} as timer {other.name!r}"
                )
        # This path is benchmarked (100,000 registrations): an anonymous timer's name is made
        # inline.
        layout = self._layout
        if layout[0] is not spec:  # bulk registrations share a spec: lay it out once
            layout = self._lay_out(spec, layout)
            if type(spec[0]) not in ADAPTER_SHAPES:  # (one timer's own: not kept, as in _spec)
                self._layout = layout
        _, mode, grid, interval, base, own_name, unnamed = layout
        if ticks:
            interval = ticks
        timers = self._timers
        if unnamed:  # no unique name, no registry entry
            timer = Timer(spec, base, grid, interval, mode)
        else:
            if own_name is not None:
                name = self._own_name(own_name)
            else:
                counts = self._bases.get(base)
                if counts is None:
                    counts = self._bases[base] = [0, 1]
                if counts[0] == 0 and base not in timers:
                    name = base
                else:  # base#2, base#3...: the next free number
                    n = counts[1] + 1
                    name = f"{base}#{n}"
                    while name in timers:
                        n += 1
                        name = f"{base}#{n}"
                    counts[1] = n
                counts[0] += 1
            timer = Timer(spec, name, grid, interval, mode)
            timers[name] = timer
            if decorated:
                self._by_callback[spec.callback] = timer
        if self._state == "running":
            timer._state = ACTIVE
            grid.arm(timer, self._now_ns())
        elif unnamed:
            self._rearm.add(timer)  # armed by the next start (the registry arms the others)
        return timer

    def _lay_out(self, spec: TimerSpec, last: _Layout | None = None) -> _Layout:
        """``(spec, dispatch mode, grid, interval in the grid's ticks, default name, own name or
        None, whether it stays out of the registry)``. ``last``: the previous layout, reused
        when only the interval differs (one-shots of one callback with varying delays)."""
        if last is not None and spec[2:] == last[0][2:] and spec[0] is last[0][0]:
            old = last[0]
            interval = last[3] * spec.interval // old.interval
            if interval * old.interval == last[3] * spec.interval:  # (exact: same unit, grid)
                return spec, last[1], last[2], interval, last[4], last[5], last[6]
        name = spec.name
        base = name if name is not None else callback_name(spec.callback)
        unnamed = name is None and (spec.kind is ONESHOT or spec.kind is RETURNS_INTERVAL)
        if spec.cluster or spec.kind is CALENDAR:  # wall-clock instants, ms since the epoch
            interval = spec.interval * spec.unit.tick_ns // NS_PER_MS
            return spec, mode_of(spec), self._wall, interval, base, name, unnamed
        # A jittered timer runs off the grid points, so it lives on the ms grid whatever its
        # unit; its grid points stay those of its unit (the grids share their origin).
        if spec.unit is UNIT_MS:
            return spec, mode_of(spec), self._ms, spec.interval, base, name, unnamed
        if spec.policy.jitter_ms:
            return spec, mode_of(spec), self._ms, spec.interval * 1000, base, name, unnamed
        return spec, mode_of(spec), self._s, spec.interval, base, name, unnamed

    def _own_name(self, name: str) -> str:
        """A timer's own name, refused when taken (anonymous timers are numbered instead)."""
        if name in self._timers:
            raise ValueError(
                f"timer {name!r}: a timer of that name is already registered on "
                f"scheduler {self.name!r}"
            )
        return name

    def _forget(self, timer: Timer, state: TimerState) -> bool:
        """End ``timer``: off its grid, out of the registry, its name bookkeeping freed, its
        final numbers kept on the handle. (Per-call one-shots are cancelled by the thousand a
        second: the common case, an unregistered timer with no stats yet, is a few stores.)"""
        if timer._state is CANCELLED or timer._state is FINISHED:
            return False
        timer._grid.forget(timer)
        timer._state = state
        trouble = timer._trouble
        if trouble is not None:
            trouble.queued_run = None
            trouble.pending.clear()
        if timer._hist != NO_HISTOGRAM:
            timer.release_histograms()
        spec = timer.spec
        if spec[4] is None and (spec[3] is ONESHOT or spec[3] is RETURNS_INTERVAL):
            if self._rearm:
                self._rearm.discard(timer)
            return True  # unregistered (see _lay_out)
        if self._timers.get(timer.name) is timer:
            del self._timers[timer.name]
            if spec.name is None:  # a default name: one timer less named after its base
                base = callback_name(spec.callback)
                counts = self._bases.get(base)
                if counts is not None:
                    counts[0] -= 1
                    if counts[0] <= 0:
                        del self._bases[base]
        if self._by_callback.get(spec.callback) is timer:
            del self._by_callback[spec.callback]
        return True

    def _cancel(self, timer: Timer) -> bool:
        return self._forget(timer, CANCELLED)

    def _finish(self, timer: Timer) -> None:
        self._forget(timer, FINISHED)

    # -- timer control (through Timer's methods) --------------------------------------------

    def _check_alive(self, timer: Timer, action: str) -> None:
        if timer._state in (CANCELLED, FINISHED):
            raise RuntimeError(f"timer {timer.name!r}: cannot {action}: it is {timer._state.value}")

    def _pause(self, timer: Timer) -> None:
        state = timer._state
        if state is PAUSED:
            return
        if state is CANCELLED or state is FINISHED:
            self._check_alive(timer, "pause")
        timer._grid.unqueue(timer)  # its grid point is kept: resume keeps its phase
        trouble = timer._trouble
        if trouble is not None:
            trouble.queued_run = None
            trouble.pending.clear()
        timer._state = PAUSED

    def _resume(self, timer: Timer) -> None:
        self._check_alive(timer, "resume")
        if timer._state is PAUSED and self._unpause(timer):
            timer._grid.resume(timer, self._clock.now_ns())

    def _unpause(self, timer: Timer) -> bool:
        """A paused timer goes on: ``ACTIVE`` if the scheduler runs (the caller queues it,
        then), else ``PENDING``, armed by the next start. Returns whether it is active."""
        if self._state != "running":
            timer._state = PENDING  # armed by the next start
            if self._timers.get(timer.name) is not timer:
                self._rearm.add(timer)
            return False
        timer._state = ACTIVE
        return True

    def _reschedule(self, timer: Timer, interval: float, resume: bool = False) -> None:
        # Per-transaction timers re-arm by the thousand a second: whole ints in range take no
        # validation call, and the unit's length is a dict lookup (an enum property is slow).
        state = timer._state
        if state is CANCELLED or state is FINISHED:
            self._check_alive(timer, "reschedule")
        spec = timer.spec
        unit = spec[2]
        if type(interval) is int and 0 < interval <= MAX_INTERVAL[unit]:
            whole = interval
        else:
            what = "delay" if spec[3] is ONESHOT else "interval"
            whole = check_interval(timer.name, what, interval, unit)
        self._rearm_ticks(timer, whole * UNIT_NS[unit] // timer._grid.tick_ns, resume)

    def _rearm_ticks(self, timer: Timer, ticks: int, resume: bool) -> None:
        """:meth:`_reschedule` for an interval checked and given in grid ticks (> 0, in range)
        and a timer not ended. Kamailio's ``timer_add`` comes here directly: its ms are the ms
        grid's ticks, so it reads nothing of the timer's spec (cold memory with 100,000
        ``timer_ln``, each with a spec of its own)."""
        timer._interval = ticks
        state = timer._state
        if resume and state is PAUSED and self._unpause(timer):
            state = ACTIVE
        timer._grid.rearm(timer, self._now_ns() if state is ACTIVE else None)

    def _on_due(self, now_ns: int) -> None:
        """The tick source's call: run everything due by ``now_ns`` on every grid (the wall
        grid first re-checks the wall clock), and take out the dead buckets ahead (see
        ``TickQueue.prune``); then the gate gets the batch's cluster runs."""
        self._wall.reanchor()
        dispatcher = self._dispatcher
        fire = dispatcher.fire
        set_aside = dispatcher.begin_wakeup()
        try:
            for grid in self._grids:
                queue = grid.queue
                now_tick = grid.tick_of(now_ns)
                while (due := queue.pop_due(now_tick)) is not None:
                    try:
                        fire(grid, due[0], due[1], due[2], now_tick)
                    finally:
                        queue.batch_done()
                queue.prune()  # buckets ahead with no run in them: no wake-up for those
            if dispatcher._gated:
                dispatcher.flush_gated()
        finally:
            dispatcher.end_wakeup(set_aside)

    def guard(self, timer: Timer) -> None:
        """Make ``timer`` a cluster timer (as if registered with ``cluster=True``): its grid
        becomes the epoch-anchored wall grid and each due run is offered to the run gate (a
        ``Cluster`` service). Only while the scheduler is stopped.

        :raises RuntimeError: the scheduler is not stopped, or the timer has ended
        :raises ValueError: the timer is not periodic or calendar, or not this scheduler's
        """
        if timer.scheduler is not self:
            raise ValueError(f"scheduler {self.name!r}: timer {timer.name!r} is not one of mine")
        if self._state != "stopped":
            raise RuntimeError(f"scheduler {self.name!r}: guard timers before start()")
        self._check_alive(timer, "guard")
        if timer._mode & GATED:
            return
        spec = timer.spec.replace(cluster=True)
        layout = self._lay_out(spec)
        timer.spec = spec
        timer._mode, timer._grid, timer._interval = layout[1], layout[2], layout[3]
        timer._grid_tick = timer._due_tick = NOT_QUEUED

    @property
    def gate(self) -> RunGate | None:
        """The run gate of cluster timers: the attached service that implements it."""
        return self._dispatcher.gate

    # -- services ----------------------------------------------------------------------------

    def add_service(self, service: Service) -> None:
        """Attach a :class:`~aiotimer.Service` (worker processes, a leader lock...): started with
        the scheduler, stopped with it. Only while the scheduler is stopped.

        :raises ValueError: a service of that name is already attached
        :raises RuntimeError: the scheduler is not stopped
        """
        if not isinstance(service, Service):
            raise TypeError(f"scheduler {self.name!r}: not a Service: {service!r}")
        if self._state != "stopped":
            raise RuntimeError(
                f"scheduler {self.name!r}: add service {service.name!r} before start()"
            )
        if service.name in self._services:
            raise ValueError(
                f"scheduler {self.name!r}: a service named {service.name!r} is already attached"
            )
        if isinstance(service, RunGate):
            if self._dispatcher.gate is not None:
                raise ValueError(
                    f"scheduler {self.name!r}: a run gate is attached already "
                    f"({self._dispatcher.gate!r}); one Cluster per scheduler"
                )
            self._dispatcher.gate = service
        self._services[service.name] = service

    def add_process(self, process: Attachable) -> None:
        """Run a :class:`~aiotimer.TimerProcess`'s workers with this scheduler: started by
        :meth:`start`, stopped by :meth:`stop`. Only while the scheduler is stopped. (A thin
        convenience for ``process.attach(scheduler)``: the core knows nothing of processes.)

        :raises TypeError: not a TimerProcess
        :raises ValueError: one of that name is attached, or it is attached elsewhere
        :raises RuntimeError: the scheduler is not stopped
        """
        attach = getattr(process, "attach", None)
        if not callable(attach):
            raise TypeError(f"scheduler {self.name!r}: not a TimerProcess: {process!r}")
        attach(self)

    @property
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    # -- observability -----------------------------------------------------------------------

    def stats(self, *, timers: bool = True) -> SchedulerStats:
        """A snapshot of the scheduler, its live timers and its services (typed; ``as_dict()``
        for JSON).

        :param timers: include every live timer's :class:`TimerStats` (O(timers)); ``False``
            gives the summary only (``timer_count``), cheap whatever the number of timers
        """
        return SchedulerStats(
            scheduler=self.name,
            state=self._state,
            ticks=self.get_ticks(),
            ticks_raw=self.get_ticks_raw(),
            wakeups=self._tick_source.wakeups,
            running=self._dispatcher.inflight,
            timer_count=len(self._timers),
            queued=sum(len(grid.queue) for grid in self._grids),
            timers={name: t.stats for name, t in self._timers.items()} if timers else {},
            services={name: svc.stats() for name, svc in self._services.items()},
        )

    def histograms(self) -> tuple[Histogram, Histogram]:
        """The lateness and the duration histograms of every timer, added up (timed runs; see
        :meth:`Timer.histograms`): the scheduler's own distribution, for benchmarks and
        exporters."""
        return self._hist.totals()

    # -- ticks -----------------------------------------------------------------------------

    def get_ticks(self) -> int:
        """Whole seconds since the scheduler started (0 before the first start)."""
        if not self._started_once:
            return 0
        return (self._clock.now_ns() - self._start_ns) // NS_PER_S

    def get_ticks_raw(self) -> int:
        """Raw ticks: whole milliseconds since the scheduler started (0 before the first start)."""
        if not self._started_once:
            return 0
        return (self._clock.now_ns() - self._start_ns) // NS_PER_MS

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        """Start the tick source in a task of its own; return once it runs.

        :raises RuntimeError: if the scheduler is already starting, running or stopping
        """
        self._claim_start()
        started = anyio.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            try:
                await self._serve(started.set)
            except BaseException as exc:
                if not started.is_set():
                    # A service that failed to start comes out of the task group as a group
                    # of one: raise the error itself, as a caller of start() expects.
                    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]
                    failure.append(exc)
                    started.set()
                    return
                logger.critical("scheduler %r stopped by %r", self.name, exc, exc_info=exc)
                raise

        try:
            current_backend().spawn_detached(run, name=f"aiotimer scheduler {self.name!r}")
        except BaseException:
            self._state = "stopped"
            raise
        await started.wait()
        if failure:
            raise failure[0]

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the scheduler in the calling task until :meth:`stop` (structured form).

        Use it with a task group: ``await tg.start(scheduler.serve)`` returns once it runs.
        Cancelling the task stops the scheduler at once, without a grace period.
        """
        self._claim_start()
        await self._serve(task_status.started)

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop: no new runs; running coroutine callbacks get ``grace_s`` to finish, then are
        cancelled. Returns once everything has stopped. Idempotent.

        From inside one of this scheduler's own coroutine callbacks, it requests the stop and
        returns at once (waiting would wait for the caller itself).
        """
        if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not grace_s >= 0:
            raise ValueError(f"scheduler {self.name!r}: grace_s must be >= 0, got {grace_s!r}")
        if self._state == "stopped" or self._stop_requested is None:
            return
        if self._loop_token is not None and current_backend().loop_token() is not self._loop_token:
            raise RuntimeError(
                f"scheduler {self.name!r}: stop() called from another event loop than the one "
                "it runs on (call it from that loop, e.g. asyncio.run_coroutine_threadsafe)"
            )
        if self._state != "stopping":
            self._grace_ns = int(grace_s * NS_PER_S) if grace_s != float("inf") else 2**62
            self._stop_requested.set()
        own = current_timer.get()
        if own is not None and own.scheduler is self:
            return
        assert self._stopped is not None
        await self._stopped.wait()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _claim_start(self) -> None:
        """Move to "starting", or raise if not stopped; a stop() from now on is honoured."""
        if self._state != "stopped":
            raise RuntimeError(f"scheduler {self.name!r} is already {self._state}")
        now_ns = self._clock.now_ns()
        if type(now_ns) is not int:
            raise TypeError(
                f"scheduler {self.name!r}: clock {self._clock!r} broke the Clock contract: "
                f"now_ns() must return an int of nanoseconds, got {type(now_ns).__name__} "
                f"{now_ns!r}"
            )
        if self._dispatcher.gate is not None:
            self._dispatcher.gate.bind(self)  # (it may guard timers: before the state changes)
        else:
            gated = [t.name for t in self._all_timers() if t._mode & GATED]
            if gated:
                raise RuntimeError(
                    f"scheduler {self.name!r}: timer(s) {gated[:5]} have cluster=True but no "
                    "Cluster service is attached (scheduler.add_service(Cluster(url)))"
                )
        self._state = "starting"
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()

    async def _serve(self, on_started: Callable[[], object]) -> None:
        assert self._stop_requested is not None
        self._tick_scope = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as tg:
                self._begin(tg)
                tg.start_soon(self._run_tick_source, self._tick_scope)
                self._state = "running"
                for service in self._services.values():
                    await tg.start(service.serve, self)
                on_started()
                await self._stop_requested.wait()
                self._state = "stopping"
                # No new runs from here; the tick source goes on only for the scheduler's own
                # one-shots (the timeouts of runs draining must still fire).
                self._dispatcher.stopping = True
                if self._services:
                    async with anyio.create_task_group() as stopping:
                        for service in self._services.values():
                            stopping.start_soon(service.stop, self._grace_ns / NS_PER_S)
                await self._drain()
                self._tick_scope.cancel()
                await self._dispatcher.cancel_runs()
                tg.cancel_scope.cancel()
        finally:
            self._end()

    async def _run_tick_source(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self._tick_source.run()

    def _begin(self, task_group: anyio.abc.TaskGroup) -> None:
        backend = current_backend()  # chosen once, here: the dispatcher keeps it
        self._loop_token = backend.loop_token()
        if self._use_timerfd:
            self._timerfd = TimerFd()
            self._tick_source.use_timerfd(self._timerfd)
        now_ns = self._clock.now_ns()
        self._start_ns = now_ns
        self._started_once = True
        self._dispatcher.open(task_group, backend, now_ns)
        aligned = self._grid_origin_ns is not None
        origin_ns = now_ns if self._grid_origin_ns is None else self._grid_origin_ns
        for grid in self._grids:
            grid.start(origin_ns, aligned, self._tick_source.wake_for)
        for timer in self._all_timers():
            if timer._state is PENDING:
                timer._state = ACTIVE
                timer._grid.arm(timer, now_ns)
        self._rearm.clear()  # queued now: the grids hold them

    def _end(self) -> None:
        self._dispatcher.close()
        if self._timerfd is not None:
            self._tick_source.use_timerfd(None)
            self._timerfd.close()
            self._timerfd = None
        for timer in self._all_timers():
            running = timer._state is ACTIVE and timer._due_tick == NOT_QUEUED
            if running and timer.spec.kind is ONESHOT:
                self._finish(timer)  # its run started (stop may have cancelled it): done
        timers = self._timers
        for grid in self._grids:
            for timer in grid.stop():  # unregistered timers are kept for the next start
                if timer._mode & INTERNAL == 0 and timers.get(timer.name) is not timer:
                    self._rearm.add(timer)
        for timer in self._all_timers():
            timer._grid_tick = NOT_QUEUED
            trouble = timer._trouble
            if trouble is not None:
                trouble.queued_run = None
                trouble.pending.clear()
            if timer._state is ACTIVE:
                timer._state = PENDING
        self._loop_token = None
        self._state = "stopped"
        if self._stopped is not None:
            self._stopped.set()

    def _all_timers(self) -> list[Timer]:
        """Every timer the scheduler holds: the registry's, and unregistered ones waiting for
        the next start."""
        return [*self._timers.values(), *self._rearm]

    async def _drain(self) -> None:
        """Wait for asynchronous runs in flight, at most the grace period on our clock."""
        if self._dispatcher.inflight == 0:
            return
        drained = self._drained = anyio.Event()
        deadline_ns = self._clock.now_ns() + self._grace_ns
        async with anyio.create_task_group() as race:

            async def grace_timeout() -> None:
                while self._clock.now_ns() < deadline_ns:
                    await self._clock.sleep_until(deadline_ns)
                logger.warning(
                    "scheduler %r: %d callback(s) still running after the grace period; "
                    "cancelling them",
                    self.name,
                    self._dispatcher.inflight,
                )
                race.cancel_scope.cancel()

            race.start_soon(grace_timeout)
            await drained.wait()
            race.cancel_scope.cancel()
        self._drained = None

    def _run_finished(self) -> None:
        """The dispatcher's call when an asynchronous run ends."""
        if self._drained is not None and self._dispatcher.inflight == 0:
            self._drained.set()
