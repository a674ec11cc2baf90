""":class:`TimerProcess`: the declaration of a dedicated timer process and its timers.

Ground rules:

* A ``TimerProcess`` only declares: its timers (the same ``every_ms`` / ``every_s`` / ``add_*``
  as a Scheduler, plus Kamailio's *basic* timers), how many workers run them, how they are
  started and supervised. Nothing runs until a scheduler it is attached to starts
  (``attach(scheduler, proc)``, or ``proc.run_inline(scheduler)`` for tests); the scheduler's
  ``stop()`` stops the workers.
* Everything a worker runs must cross to another process, so it is checked when declared:
  callbacks and handlers importable, params picklable (see ``_spec.py``); again, whole, before
  any process starts.
* Each of the ``workers`` workers runs every timer (rtimer's ``mode=N``): the work is
  duplicated, and a callback tells the workers apart by :func:`current_worker`'s ``index``.
* Timers are declared while no worker runs; a running spec is frozen.
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, Unpack, cast, final

from .._registrar import PolicyOptions, Registrar
from .._spec import Kind, TimerSpec, Unit, callback_name
from ._context import WorkerInfo
from ._errors import WorkerCrashed
from ._handle import Worker, WorkerStats
from ._handlers import Handler, HandlerPump
from ._restart import RestartMode, RestartPolicy
from ._spec import Mode, ProcessTimer, check_importable, check_timer, encode_timers
from ._start import default_context, forkserver_available

if TYPE_CHECKING:
    from .._scheduler import Scheduler

__all__ = ["ContextName", "TimerProcess"]

ContextName = Literal["spawn", "forkserver"]
H = TypeVar("H", bound=Callable[..., Any])
_NOT_FOR_BASIC: Final = ("missed", "max_catchup", "overlap")


@final
class TimerProcess(Registrar[TimerSpec]):
    """A dedicated timer process: ``workers`` worker processes, each with its own event loop
    (uvloop where installed) and its own :class:`~aiotimer.Scheduler` running these timers,
    supervised by the parent (Kamailio's ``register_basic_timers`` / ``fork_*_timer``).

    :param name: names the workers (``ps`` shows ``aiotimer: <name> [i]``), logs and stats
    :param workers: how many processes run the timers (each runs all of them)
    :param inline: run the workers as schedulers on the parent's loop and clock instead of
        processes (for tests; see :meth:`run_inline`)
    :param context: the multiprocessing start method, ``"spawn"`` or ``"forkserver"``; never
        ``"fork"`` (forking a process with a running event loop copies its loop and threads).
        ``None``: ``"forkserver"`` on Linux (one warm server per parent, which preloads the
        worker, the event loop and the callbacks' modules: see ``_start.py``), ``"spawn"``
        elsewhere
    :param restart: a :class:`RestartPolicy`, or just its mode (``"on-failure"``, ``"always"``,
        ``"never"``)
    :param heartbeat_s: how often a worker says it is alive
    :param heartbeat_timeout_s: a worker silent this long is hung: it is killed (and restarted)
    :param stats_interval_s: how often a worker sends its scheduler's stats
    :param start_timeout_s: a worker not ready this long after its start is killed
    :param term_timeout_s: on stop, after the grace period, how long SIGTERM gets before SIGKILL
    :param use_uvloop: run the workers on uvloop; ``None``: where installed
    :param log_level: the level of the records workers forward; ``None``: the parent root
        logger's effective level when the workers start
    :param on_crash: ``on_crash(exc: WorkerCrashed)``, on the parent's loop, each time a worker
        ends without being asked to (before any restart); it must not raise
    :raises TypeError: an argument of the wrong type
    :raises ValueError: a bad value (naming it)
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int = 1,
        inline: bool = False,
        context: ContextName | None = None,
        restart: RestartPolicy | RestartMode = "on-failure",
        heartbeat_s: float = 1.0,
        heartbeat_timeout_s: float = 5.0,
        stats_interval_s: float = 1.0,
        start_timeout_s: float = 30.0,
        term_timeout_s: float = 1.0,
        use_uvloop: bool | None = None,
        log_level: int | None = None,
        on_crash: Callable[[WorkerCrashed], object] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"timer process name must be a non-empty str, got {name!r}")
        label = f"timer process {name!r}"
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"{label}: workers must be an int >= 1, got {workers!r}")
        if cast(str, context) == "fork":
            raise ValueError(
                f"{label}: context 'fork' is refused: forking a process that runs an event loop "
                "copies the loop, its threads and locks mid-flight; use 'spawn' or 'forkserver'"
            )
        if context is None:
            context = default_context()
        elif context not in ("spawn", "forkserver"):
            raise ValueError(f"{label}: context must be 'spawn' or 'forkserver', got {context!r}")
        elif context == "forkserver" and not forkserver_available():
            raise ValueError(f"{label}: context 'forkserver' is not available on {sys.platform}")
        if not isinstance(restart, RestartPolicy):
            try:
                restart = RestartPolicy(mode=restart)
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
        for what, value in (
            ("heartbeat_s", heartbeat_s),
            ("heartbeat_timeout_s", heartbeat_timeout_s),
            ("stats_interval_s", stats_interval_s),
            ("start_timeout_s", start_timeout_s),
            ("term_timeout_s", term_timeout_s),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{label}: {what} must be a finite number > 0, got {value!r}")
        if heartbeat_timeout_s <= heartbeat_s:
            raise ValueError(
                f"{label}: heartbeat_timeout_s must be above heartbeat_s ({heartbeat_s}), "
                f"got {heartbeat_timeout_s!r}"
            )
        if use_uvloop is not None and not isinstance(use_uvloop, bool):
            raise TypeError(f"{label}: use_uvloop must be a bool or None, got {use_uvloop!r}")
        if log_level is not None and (
            isinstance(log_level, bool) or not isinstance(log_level, int)
        ):
            raise TypeError(f"{label}: log_level must be an int or None, got {log_level!r}")
        if on_crash is not None and not callable(on_crash):
            raise TypeError(f"{label}: on_crash must be callable, got {on_crash!r}")
        if not isinstance(inline, bool):
            raise TypeError(f"{label}: inline must be a bool, got {inline!r}")
        self.name = name
        self.inline = inline
        self.context: ContextName = context
        self.restart = restart
        self.heartbeat_s = float(heartbeat_s)
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.stats_interval_s = float(stats_interval_s)
        self.start_timeout_s = float(start_timeout_s)
        self.term_timeout_s = float(term_timeout_s)
        self.use_uvloop = use_uvloop
        self.log_level = log_level
        self.on_crash = on_crash
        self.workers: tuple[Worker, ...] = tuple(Worker(name, i) for i in range(workers))
        self._timers: list[ProcessTimer] = []
        self._decorated: set[Callable[..., Any]] = set()
        self._name_counts: dict[str, int] = {}
        self._message_handlers: list[Handler] = []
        self._parent_message_handlers: list[Handler] = []
        self._scheduler: Scheduler | None = None
        self._running = False
        self._pump = HandlerPump(f"timer process {name!r}")

    def __repr__(self) -> str:
        where = "inline" if self.inline else self.context
        return (
            f"<TimerProcess {self.name!r} workers={len(self.workers)} {where} "
            f"timers={len(self._timers)}>"
        )

    @property
    def timers(self) -> tuple[ProcessTimer, ...]:
        """The declared timers, in order."""
        return tuple(self._timers)

    @property
    def scheduler(self) -> Scheduler | None:
        """The scheduler it is attached to, if any."""
        return self._scheduler

    # -- declaring timers --------------------------------------------------------------------

    def _register(self, spec: TimerSpec, decorated: bool) -> TimerSpec:
        return self._add(spec, Mode.SYNC, decorated)

    def add_basic_s(
        self,
        interval_s: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        **options: Unpack[PolicyOptions],
    ) -> TimerSpec:
        """Kamailio's ``fork_basic_timer``: run ``callback``, then sleep ``interval_s`` seconds
        after each run ends, so the runs drift by their run time (the sleep is on the
        millisecond grid: the drift is not rounded to whole seconds). The first run is one
        interval after the worker starts.

        :param options: policy options (``timeout_s``, ``thread``, ``on_error``...); ``missed``
            and ``overlap`` do not apply: a basic timer never misses nor overlaps a run
        :raises TypeError: see :meth:`every_s`; an option that does not apply
        """
        return self._add_basic(interval_s, Unit.S, callback, name, param, options)

    def add_basic_ms(
        self,
        interval_ms: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        **options: Unpack[PolicyOptions],
    ) -> TimerSpec:
        """Kamailio's ``fork_basic_utimer``: :meth:`add_basic_s` in milliseconds."""
        return self._add_basic(interval_ms, Unit.MS, callback, name, param, options)

    def _add_basic(
        self,
        interval: float,
        unit: Unit,
        callback: Callable[..., Any],
        name: str | None,
        param: Any,
        options: PolicyOptions,
    ) -> TimerSpec:
        label = name if isinstance(name, str) else callback_name(callback)
        for key in _NOT_FOR_BASIC:
            if key in options:
                raise TypeError(
                    f"timer {label!r}: {key}= does not apply to a basic timer: it sleeps after "
                    "each run, so it never misses nor overlaps a run"
                )
        spec = self._spec(callback, interval, unit, Kind.PERIODIC, name, param, options)
        return self._add(spec, Mode.BASIC, decorated=False)

    def _add(self, spec: TimerSpec, mode: Mode, decorated: bool) -> TimerSpec:
        if self._running:
            raise RuntimeError(
                f"timer {spec.label!r}: timer process {self.name!r} is running; declare its "
                "timers before its scheduler starts"
            )
        if decorated and spec.callback in self._decorated:
            raise ValueError(
                f"timer {spec.label!r}: function {callback_name(spec.callback)} is already a "
                f"timer of timer process {self.name!r}"
            )
        name = self._claim_name(spec)
        timer = ProcessTimer(spec, mode, name)
        check_timer(timer, strict=False)
        self._timers.append(timer)
        if decorated:
            self._decorated.add(spec.callback)
        return spec

    def _claim_name(self, spec: TimerSpec) -> str:
        taken = {t.name for t in self._timers}
        if spec.name is not None:
            if spec.name in taken:
                raise ValueError(
                    f"timer {spec.name!r}: a timer of that name is already declared on timer "
                    f"process {self.name!r}"
                )
            return spec.name
        base = callback_name(spec.callback)
        if base not in taken:
            return base
        n = self._name_counts.get(base, 1)
        while True:
            n += 1
            if f"{base}#{n}" not in taken:
                self._name_counts[base] = n
                return f"{base}#{n}"

    # -- messages ----------------------------------------------------------------------------

    def on_message(self, handler: H) -> H:
        """Parent side: call ``handler(worker_info, obj)`` for each object a worker sends with
        :func:`~aiotimer.process.send_to_parent`. Sync handlers run at once on the parent's
        loop (keep them short), coroutine handlers as tasks. Usable as a decorator.

        :raises TypeError: ``handler`` is not callable
        """
        if not callable(handler):
            raise TypeError(
                f"timer process {self.name!r}: on_message needs a callable, got {handler!r}"
            )
        self._message_handlers.append(handler)
        return handler

    def on_parent_message(self, handler: H) -> H:
        """Worker side: in each worker, call ``handler(obj)`` for each object the parent sends
        with ``proc.workers[i].send(obj)``. It runs in the worker, so it must be importable (a
        module-level function), checked here. Usable as a decorator.

        :raises TypeError: ``handler`` is not callable, or not importable
        """
        owner = f"timer process {self.name!r}"
        if not callable(handler):
            raise TypeError(f"{owner}: on_parent_message needs a callable, got {handler!r}")
        if self._running:
            raise RuntimeError(f"{owner} is running; add message handlers before it starts")
        check_importable(owner, "on_parent_message handler", handler, strict=False)
        self._parent_message_handlers.append(handler)
        return handler

    def _deliver(self, worker: WorkerInfo, obj: Any, *, defer: bool = False) -> None:
        """A user message from ``worker`` arrived (on the loop)."""
        self._pump.dispatch(self._message_handlers, (worker, obj), defer=defer)

    # -- lifecycle ----------------------------------------------------------------------------

    def attach(self, scheduler: Scheduler) -> None:
        """Run this process's workers with ``scheduler`` (``scheduler.add_process(self)``):
        started by its ``start()``, stopped by its ``stop()`` (:func:`aiotimer.process.attach`)."""
        from ._hub import attach  # (_hub imports this module)

        attach(scheduler, self)

    def run_inline(self, scheduler: Scheduler) -> None:
        """Attach to ``scheduler`` in inline mode: each worker is a scheduler on ``scheduler``'s
        loop and clock (a :class:`~aiotimer.testing.VirtualClock` in tests) running the same
        timers, after the same checks and the same pickle round trip as for a process, so a
        unit test of the spec tests what a worker process would run.
        """
        self.inline = True
        from ._hub import attach

        attach(scheduler, self)

    def _payload(self) -> bytes:
        """The spec, checked whole and pickled, for the workers (before any process starts).

        :raises TypeError: naming the timer or handler that cannot reach a worker
        """
        for timer in self._timers:
            check_timer(timer, strict=True)
        owner = f"timer process {self.name!r}"
        for handler in self._parent_message_handlers:
            check_importable(owner, "on_parent_message handler", handler, strict=True)
        try:
            return pickle.dumps(
                (encode_timers(self._timers), list(self._parent_message_handlers)),
                pickle.HIGHEST_PROTOCOL,
            )
        except Exception as exc:  # something check_timer cannot see (a param's state...)
            raise TypeError(
                f"{owner}: its timers do not pickle: {type(exc).__name__}: {exc}"
            ) from None

    def _start_options(self) -> dict[str, Any]:
        level = self.log_level
        if level is None:
            level = logging.getLogger().getEffectiveLevel()
        return {
            "heartbeat_s": self.heartbeat_s,
            "stats_interval_s": self.stats_interval_s,
            "log_level": level,
            "use_uvloop": self.use_uvloop,
        }

    def stats(self) -> list[WorkerStats]:
        """Each worker's :meth:`Worker.stats`, by index."""
        return [w.stats() for w in self.workers]
