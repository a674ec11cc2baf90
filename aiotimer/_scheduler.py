"""The :class:`Scheduler`: the façade that owns the clock, both grids and the timer registry.

Ground rules:

* Nothing runs until :meth:`Scheduler.start` (or ``async with``); timers may be added and
  cancelled before and after it. Timers added before start are armed at start: their first run
  is one interval after it.
* A timer's first run is at the first grid point at least one interval after it was added:
  never earlier than the interval, at most one grid tick (1 ms, or 1 s on the second grid) later.
* Periodic timers then run on their anchored grid (``anchor + k * interval``) and never drift.
* ``stop()`` stops new runs, lets running coroutine callbacks finish within a grace period on
  the scheduler's clock, then cancels what is left. A stopped scheduler can be started again;
  its timers are re-armed from the new start.
* The registry maps unique names to live timers. Unnamed timers are named after their callback
  (``module.qualname``, then ``#2``, ``#3``... for the same callback added again); an explicit
  name that is taken, or a function decorated twice, is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, final

import anyio
from anyio.abc import TaskStatus

from ._backend import spawn_detached
from ._clock import NS_PER_MS, NS_PER_S, Clock, MonotonicClock
from ._dispatch import Dispatcher, current_timer, mode_of
from ._queue import NOT_QUEUED, TickQueue
from ._registrar import Registrar
from ._spec import TimerSpec, Unit, callback_name
from ._tick_source import TickSource
from ._timer import Timer, TimerState

__all__ = ["Scheduler"]

logger = logging.getLogger("aiotimer.scheduler")

_State = Literal["stopped", "starting", "running", "stopping"]
DEFAULT_GRACE_S: Final = 5.0


@final
class Scheduler(Registrar[Timer]):
    """Runs millisecond and second timers on an event loop (asyncio, uvloop or trio).

    :param clock: the clock to run on; the monotonic clock by default,
        :class:`aiotimer.testing.VirtualClock` in tests
    :param grid_origin_ns: where both grids start, on ``clock``; by default the time of
        :meth:`start`. A fixed origin lets several schedulers agree on grid points.
    :param name: used in logs and ``repr``
    """

    __slots__ = (
        "_by_callback",
        "_clock",
        "_dispatcher",
        "_drained",
        "_grace_ns",
        "_grid_origin_ns",
        "_ms",
        "_name_counts",
        "_s",
        "_start_ns",
        "_started_once",
        "_state",
        "_stop_requested",
        "_stopped",
        "_tick_scope",
        "_tick_source",
        "_timers",
        "name",
    )

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        grid_origin_ns: int | None = None,
        name: str = "aiotimer",
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"scheduler {name!r}: clock must implement Clock, got {clock!r}")
        if grid_origin_ns is not None and (
            isinstance(grid_origin_ns, bool) or not isinstance(grid_origin_ns, int)
        ):
            raise TypeError(
                f"scheduler {name!r}: grid_origin_ns must be an int, got {grid_origin_ns!r}"
            )
        self.name = name
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._grid_origin_ns = grid_origin_ns
        self._ms = TickQueue(NS_PER_MS)
        self._s = TickQueue(NS_PER_S)
        self._timers: dict[str, Timer] = {}
        self._name_counts: dict[str, int] = {}
        self._by_callback: dict[Callable[..., Any], Timer] = {}  # decorated functions
        self._dispatcher = Dispatcher(self)
        self._tick_source = TickSource(self._clock, (self._ms, self._s), self._on_due)
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
        return self._register(spec, decorated=False)

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

    def _register(self, spec: TimerSpec, *, decorated: bool) -> Timer:
        if decorated:
            other = self._by_callback.get(spec.callback)
            if other is not None:
                raise ValueError(
                    f"timer {spec.label!r}: function {callback_name(spec.callback)} is already "
                    f"registered on scheduler {self.name!r} as timer {other.name!r}"
                )
        name = self._claim_name(spec)
        queue = self._ms if spec.unit is Unit.MS else self._s
        timer = Timer(spec, name, self, queue)
        timer._mode = mode_of(timer)
        self._timers[name] = timer
        if decorated:
            self._by_callback[spec.callback] = timer
        if self._state == "running":  # else armed by the next start
            self._arm(timer, self._clock.now_ns())
        return timer

    def _claim_name(self, spec: TimerSpec) -> str:
        if spec.name is not None:
            if spec.name in self._timers:
                raise ValueError(
                    f"timer {spec.name!r}: a timer of that name is already registered on "
                    f"scheduler {self.name!r}"
                )
            return spec.name
        base = callback_name(spec.callback)
        if base not in self._timers:
            return base
        n = self._name_counts.get(base, 1)
        while True:
            n += 1
            name = f"{base}#{n}"
            if name not in self._timers:
                self._name_counts[base] = n
                return name

    def _forget(self, timer: Timer, state: TimerState) -> bool:
        if timer._state in (TimerState.CANCELLED, TimerState.FINISHED):
            return False
        if timer._due_tick != NOT_QUEUED:
            timer._due_tick = NOT_QUEUED
            timer._queue.discard()
        timer._state = state
        if self._timers.get(timer.name) is timer:
            del self._timers[timer.name]
        if self._by_callback.get(timer.spec.callback) is timer:
            del self._by_callback[timer.spec.callback]
        return True

    def _cancel(self, timer: Timer) -> bool:
        return self._forget(timer, TimerState.CANCELLED)

    def _finish(self, timer: Timer) -> None:
        self._forget(timer, TimerState.FINISHED)

    # -- arming ----------------------------------------------------------------------------

    def _arm(self, timer: Timer, now_ns: int) -> None:
        """Queue a timer for its first run: the first grid point >= now + interval."""
        queue = timer._queue
        elapsed_ns = now_ns - queue.origin_ns
        now_tick = -(-elapsed_ns // queue.tick_ns)  # ceil: the anchor is never before now
        self._queue_at(timer, now_tick + timer._interval)
        timer._state = TimerState.ACTIVE

    def _queue_at(self, timer: Timer, tick: int) -> None:
        queue = timer._queue
        timer._due_tick = tick
        queue.push(timer, tick)
        self._tick_source.wake_for(queue.origin_ns + tick * queue.tick_ns)

    def _requeue_after(self, timer: Timer, tick: int, interval: int) -> None:
        """Queue a timer that ran at grid point ``tick`` for ``tick + interval`` (or the first
        point of that grid after now, if that one is already past)."""
        if self._state not in ("running", "stopping"):
            return  # stopped meanwhile: re-armed at the next start
        queue = timer._queue
        now_tick = (self._clock.now_ns() - queue.origin_ns) // queue.tick_ns
        next_tick = tick + interval
        if next_tick <= now_tick:
            missed = (now_tick - tick) // interval
            timer._missed += missed
            next_tick = tick + (missed + 1) * interval
        self._queue_at(timer, next_tick)

    def _on_due(self, now_ns: int) -> None:
        """The tick source's call: run everything due by ``now_ns`` on both grids."""
        fire = self._dispatcher.fire
        for queue in (self._ms, self._s):
            now_tick = (now_ns - queue.origin_ns) // queue.tick_ns
            while (due := queue.pop_due(now_tick)) is not None:
                fire(queue, due[0], due[1], now_tick)

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
        self._check_startable()
        started = anyio.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            try:
                await self._serve(started.set)
            except BaseException as exc:
                if not started.is_set():
                    failure.append(exc)
                    started.set()
                    return
                logger.critical("scheduler %r stopped by %r", self.name, exc, exc_info=exc)
                raise

        self._state = "starting"
        try:
            spawn_detached(run, name=f"aiotimer scheduler {self.name!r}")
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
        self._check_startable()
        self._state = "starting"
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
        if self._state != "stopping":
            self._grace_ns = int(grace_s * NS_PER_S) if grace_s != float("inf") else 2**62
            self._stop_requested.set()
        own = current_timer.get()
        if own is not None and own._scheduler is self:
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

    def _check_startable(self) -> None:
        if self._state != "stopped":
            raise RuntimeError(f"scheduler {self.name!r} is already {self._state}")

    async def _serve(self, on_started: Callable[[], object]) -> None:
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._tick_scope = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as tg:
                self._dispatcher.task_group = tg
                self._begin()
                tg.start_soon(self._run_tick_source, self._tick_scope)
                self._state = "running"
                on_started()
                await self._stop_requested.wait()
                self._state = "stopping"
                self._tick_scope.cancel()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            self._end()

    async def _run_tick_source(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self._tick_source.run()

    def _begin(self) -> None:
        now_ns = self._clock.now_ns()
        self._start_ns = now_ns
        self._started_once = True
        origin_ns = now_ns if self._grid_origin_ns is None else self._grid_origin_ns
        self._ms.origin_ns = self._s.origin_ns = origin_ns
        for timer in self._timers.values():
            self._arm(timer, now_ns)

    def _end(self) -> None:
        self._dispatcher.task_group = None
        self._ms.clear()
        self._s.clear()
        for timer in self._timers.values():
            timer._due_tick = NOT_QUEUED
            timer._state = TimerState.PENDING
        self._state = "stopped"
        if self._stopped is not None:
            self._stopped.set()

    async def _drain(self) -> None:
        """Wait for coroutine runs in flight, at most the grace period on our clock."""
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
        """The dispatcher's call when a coroutine run ends."""
        if self._drained is not None and self._dispatcher.inflight == 0:
            self._drained.set()
