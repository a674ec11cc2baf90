"""The registration vocabulary shared by everything that collects timers.

:class:`~aiotimer.Scheduler` and :class:`~aiotimer.TimerTable` (and worker-process
declarations) offer the same ``every_ms`` / ``every_s`` decorators and ``add_*`` methods; they
differ only in what :meth:`Registrar._register` does with the validated :class:`TimerSpec`.
Policy options (``missed=``, ``overlap=``, ``timeout_s=``...) are accepted by all of them as
keywords, or bundled in a reusable ``policy=Policy(...)``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, Final, Generic, TypedDict, TypeVar, Unpack

from ._policy import DEFAULT_POLICY, ErrorHook, Missed, Overlap, Policy
from ._spec import (
    ADAPTER_SHAPES,
    CALENDAR,
    MAX_INTERVAL,
    ONESHOT,
    PERIODIC,
    RETURNS_INTERVAL,
    UNIT_MS,
    UNIT_S,
    Kind,
    TimerSpec,
    Unit,
    callback_name,
)

__all__ = ["PolicyOptions", "Registrar"]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


class PolicyOptions(TypedDict, total=False):
    """Keyword options accepted by every registration; see :class:`~aiotimer.Policy`."""

    policy: Policy
    missed: Missed
    max_catchup: int
    overlap: Overlap
    timeout_s: float
    thread: bool
    jitter_ms: int
    on_error: ErrorHook
    max_failures: int
    eager: bool


def build_policy(label: str, options: PolicyOptions) -> Policy:
    """The :class:`Policy` for ``options``; errors name the timer."""
    if not options:
        return DEFAULT_POLICY
    fields: dict[str, Any] = dict(options)
    base = fields.pop("policy", DEFAULT_POLICY)
    if not isinstance(base, Policy):
        raise TypeError(f"timer {label!r}: policy must be a Policy, got {base!r}")
    if not fields:
        return base
    try:
        return dataclasses.replace(base, **fields)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"timer {label!r}: {exc}") from None


class Registrar(ABC, Generic[R]):
    """Decorators and ``add_*`` methods over one abstract ``_register(spec, decorated)``."""

    __slots__ = ()

    @abstractmethod
    def _register(self, spec: TimerSpec, decorated: bool) -> R:
        """Take a validated spec; ``decorated`` is true when it came from a decorator."""

    def _register_once(self, spec: TimerSpec, delay_ms: int) -> R:
        """A per-call one-shot of ``spec``'s callback (anonymous, default policy, ms) with
        ``delay_ms`` (already checked) instead of the spec's delay. A registrar that keeps
        specs gets a spec of that delay; the scheduler overrides this to share ``spec``."""
        return self._register(_with_delay(spec, delay_ms), False)

    def _spec(
        self,
        callback: Callable[..., Any],
        interval: float,
        unit: Unit,
        kind: Kind,
        name: str | None,
        param: Any,
        options: PolicyOptions,
        cluster: bool = False,
    ) -> TimerSpec:
        if cluster is not False:
            label = name if isinstance(name, str) else callback_name(callback)
            policy = build_policy(label, options)
            return TimerSpec(
                callback,
                interval,
                unit,
                kind,
                name=name,
                param=param,
                policy=policy,
                cluster=cluster,
            )
        if options:
            label = name if isinstance(name, str) else callback_name(callback)
            policy = build_policy(label, options)
        elif name is None and param is None and type(interval) is int:
            last = _last_key  # the same registration again (bulk adds): not even a dict lookup
            if last[0] is callback and last[1] == interval and last[2] is unit and last[3] is kind:
                return _last
            return _shared_spec(callback, interval, unit, kind)
        else:
            policy = DEFAULT_POLICY
        return TimerSpec(callback, interval, unit, kind, name=name, param=param, policy=policy)

    # -- decorators: return the function unchanged ------------------------------------------

    def every_ms(
        self,
        interval_ms: float,
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> Callable[[F], F]:
        """Decorator: run the function every ``interval_ms`` milliseconds on the ms grid.

        :param returns_interval: the function's return value sets what happens next
            (``None`` same interval, ``0`` stop, ``n`` next interval in ms)
        :param cluster: run once per grid point across a cluster: grid points are wall-clock
            instants counted from the Unix epoch, each claimed by one node of the attached
            ``aiotimer.cluster.Cluster``
        :param options: policy options, see :class:`~aiotimer.Policy`
        """
        return self._decorator(
            UNIT_MS, interval_ms, name, param, returns_interval, options, cluster
        )

    def every_s(
        self,
        interval_s: float,
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> Callable[[F], F]:
        """Decorator: run the function every ``interval_s`` seconds on the second grid
        (``cluster=True``: once per grid point across a cluster, see :meth:`every_ms`)."""
        return self._decorator(UNIT_S, interval_s, name, param, returns_interval, options, cluster)

    def _decorator(
        self,
        unit: Unit,
        interval: float,
        name: str | None,
        param: Any,
        returns_interval: bool,
        options: PolicyOptions,
        cluster: bool = False,
    ) -> Callable[[F], F]:
        if callable(interval):  # @every_ms without the parentheses and the interval
            raise TypeError(
                f"every_{unit.suffix} needs an interval: write @every_{unit.suffix}(20), "
                f"not @every_{unit.suffix}"
            )
        kind = PERIODIC if returns_interval is False else _periodic_kind(returns_interval)

        def decorate(fn: F) -> F:
            self._register(
                self._spec(fn, interval, unit, kind, name, param, options, cluster), decorated=True
            )
            return fn

        return decorate

    # -- add_* methods ------------------------------------------------------------------------

    def add_every_ms(
        self,
        interval_ms: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` every ``interval_ms`` milliseconds; the first run one interval after
        it was added (or after the scheduler starts)."""
        # The same anonymous timer again (bulk adds): nothing to build or look up. Inlined in
        # add_every_ms and add_every_s, not shared: a call costs ~0.1 µs of the ~5 µs budget.
        last = _last_key
        if (
            last[0] is callback
            and last[1] == interval_ms
            and last[2] is UNIT_MS
            and last[3] is PERIODIC
            and type(interval_ms) is int
            and name is None
            and param is None
            and returns_interval is False
            and cluster is False
            and not options
        ):
            return self._register(_last, False)
        kind = PERIODIC if returns_interval is False else _periodic_kind(returns_interval)
        spec = self._spec(callback, interval_ms, UNIT_MS, kind, name, param, options, cluster)
        return self._register(spec, False)

    def add_every_s(
        self,
        interval_s: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` every ``interval_s`` seconds on the second grid."""
        last = _last_key  # the same anonymous timer again (see add_every_ms)
        if (
            last[0] is callback
            and last[1] == interval_s
            and last[2] is UNIT_S
            and last[3] is PERIODIC
            and type(interval_s) is int
            and name is None
            and param is None
            and returns_interval is False
            and cluster is False
            and not options
        ):
            return self._register(_last, False)
        kind = PERIODIC if returns_interval is False else _periodic_kind(returns_interval)
        spec = self._spec(callback, interval_s, UNIT_S, kind, name, param, options, cluster)
        return self._register(spec, False)

    def add_once_ms(
        self,
        delay_ms: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` once, ``delay_ms`` milliseconds from now (``call_later`` in ms)."""
        if name is None and param is None and not options:
            # Per-call one-shots (thousands a second, each with its own delay): they share the
            # last spec of their callback, whatever its delay, and the timer holds its own
            # (Timer.interval; ms ticks are the ms grid's). No spec to build or look up.
            last = _last
            if last[0] is callback and last[2] is UNIT_MS and last[3] is ONESHOT:
                if type(delay_ms) is int and 0 < delay_ms <= _MAX_MS:
                    return self._register_once(last, delay_ms)
                return self._register(_with_delay(last, delay_ms), False)  # checks it
        spec = self._spec(callback, delay_ms, UNIT_MS, ONESHOT, name, param, options)
        return self._register(spec, False)

    def add_once_s(
        self,
        delay_s: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` once, ``delay_s`` seconds from now, on the second grid."""
        spec = self._spec(callback, delay_s, UNIT_S, ONESHOT, name, param, options)
        return self._register(spec, False)

    # -- calendar timers (cron expressions, wall-clock instants) -------------------------------

    def every_cron(
        self,
        expr: str,
        *,
        tz: str | tzinfo,
        name: str | None = None,
        param: Any = None,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> Callable[[F], F]:
        """Decorator: run the function at the instants of a cron expression, read in the time
        zone ``tz`` (DST as Debian's cron: see the README's "Calendar timers"). Needs the
        ``cron`` extra (cronsim).

        :param expr: five fields (minute hour day-of-month month day-of-week) or an alias
            such as ``@hourly``
        :param tz: an IANA zone name (``"Europe/Berlin"``) or a ``ZoneInfo``; required, so a
            timer never depends on the host's local zone
        :param cluster: run each instant once across a cluster (claimed by its UTC instant)
        :raises ValueError: a malformed expression or an unknown zone, naming the timer and
            the field
        """

        def decorate(fn: F) -> F:
            spec = self._calendar_spec(fn, _cron(expr, tz, name, fn), name, param, options, cluster)
            self._register(spec, decorated=True)
            return fn

        return decorate

    def add_every_cron(
        self,
        expr: str,
        callback: Callable[..., Any],
        *,
        tz: str | tzinfo,
        name: str | None = None,
        param: Any = None,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` at the instants of a cron expression (see :meth:`every_cron`)."""
        trigger = _cron(expr, tz, name, callback)
        return self._register(
            self._calendar_spec(callback, trigger, name, param, options, cluster), False
        )

    def add_at(
        self,
        when: datetime,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        cluster: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> R:
        """Run ``callback`` once at the wall-clock instant ``when`` (an aware ``datetime``; an
        instant already past runs at once). Its wait is on the monotonic clock, re-checked
        against the wall clock: a wall-clock step never makes it run early.

        :raises ValueError: a naive ``datetime`` (or a local time a DST change skips)
        """
        from ._calendar import AtTrigger

        trigger = AtTrigger(when, label=name if name is not None else callback_name(callback))
        return self._register(
            self._calendar_spec(callback, trigger, name, param, options, cluster), False
        )

    def _calendar_spec(
        self,
        callback: Callable[..., Any],
        trigger: Any,
        name: str | None,
        param: Any,
        options: PolicyOptions,
        cluster: bool,
    ) -> TimerSpec:
        label = name if isinstance(name, str) else callback_name(callback)
        policy = build_policy(label, options)
        return TimerSpec(
            callback,
            1,
            UNIT_MS,
            CALENDAR,
            name=name,
            param=param,
            policy=policy,
            trigger=trigger,
            cluster=cluster,
        )


def _cron(expr: str, tz: str | tzinfo, name: str | None, callback: object) -> Any:
    from ._calendar import CronTrigger  # cronsim is an optional extra

    label = name if isinstance(name, str) else callback_name(callback)
    return CronTrigger(expr, tz, label=label)  # type: ignore[arg-type]


_SHARED_MAX: Final = 1024
_shared: dict[tuple[object, int, Unit, Kind], TimerSpec] = {}
_last: TimerSpec  # the last shared spec handed out (set below, after the helpers it needs)
_last_key: tuple[object, int, Unit, Kind]
"""``_last``'s callback, interval, unit and kind, as a plain tuple: the fast paths index it,
which is specialised for exact tuples (a TimerSpec, a tuple subclass, costs ~3x more)."""


def _shared_spec(callback: Callable[..., Any], interval: int, unit: Unit, kind: Kind) -> TimerSpec:
    """One spec for every anonymous, param-less, default-policy timer of the same callback and
    interval: specs are immutable, and a service adding 100,000 such timers (per-call timers,
    say) then pays for one spec, not 100,000 (~110 bytes and ~2 µs each). ``Registrar._spec``
    first compares with the last spec handed out (bulk adds repeat it)."""
    global _last, _last_key
    if type(callback) in ADAPTER_SHAPES:  # one timer's own (see declare_shape): not kept
        return TimerSpec(callback, interval, unit, kind)
    try:
        key = (callback, interval, unit, kind)
        spec = _shared.get(key)
    except TypeError:  # an unhashable callable
        return TimerSpec(callback, interval, unit, kind)
    if spec is None:
        last = _last
        if last[0] is callback and last[2] is unit and last[3] is kind:
            spec = last.with_interval(interval)  # the same callback, another delay: no re-check
        else:
            spec = TimerSpec(callback, interval, unit, kind)
        if len(_shared) >= _SHARED_MAX:
            _shared.clear()
        _shared[key] = spec
    _last, _last_key = spec, key
    return spec


_MAX_MS: Final = MAX_INTERVAL[UNIT_MS]


def _with_delay(last: TimerSpec, delay: float) -> TimerSpec:
    """``last`` (a one-shot's shared spec) with another delay, now the last spec handed out."""
    global _last, _last_key
    if last[1] == delay and type(delay) is int:
        return last
    spec = last.with_interval(delay)
    _last, _last_key = spec, (spec[0], spec[1], spec[2], spec[3])
    return spec


def _nothing() -> None:
    """The callback of the placeholder :data:`_last` (never registered)."""


_last = TimerSpec(_nothing, 1, UNIT_S)
_last_key = (_nothing, 1, UNIT_S, PERIODIC)


def _periodic_kind(returns_interval: bool) -> Kind:
    if returns_interval is False:
        return PERIODIC
    if returns_interval is True:
        return RETURNS_INTERVAL
    raise TypeError(f"returns_interval must be a bool, got {returns_interval!r}")
