"""Timer specifications: small frozen value objects, validated when built.

A :class:`TimerSpec` cannot exist with a bad interval, a non-callable callback or a callback
whose signature the dispatcher cannot call, so no later code re-checks any of it. Every error
names the timer and the offending value, and is raised at registration, never at the 1000th tick.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from ._policy import DEFAULT_POLICY, MAX_DELAY_S, Policy

__all__ = ["Kind", "TimerSpec", "Unit", "callback_name"]

NS_PER_S: Final = 1_000_000_000


class Unit(enum.Enum):
    """The grid a timer runs on: milliseconds (raw ticks) or seconds."""

    MS = 1_000_000
    S = 1_000_000_000

    __hash__ = object.__hash__  # members are singletons: identity hashing, at C speed

    @property
    def tick_ns(self) -> int:
        return self.value

    @property
    def suffix(self) -> str:
        return "ms" if self is Unit.MS else "s"


class Kind(enum.Enum):
    """How a timer's next run is decided."""

    __hash__ = object.__hash__  # members are singletons: identity hashing, at C speed

    PERIODIC = "periodic"
    """Run every ``interval`` on an anchored grid; return values are ignored."""
    ONESHOT = "oneshot"
    """Run once, ``interval`` after it was added."""
    RETURNS_INTERVAL = "returns_interval"
    """The callback's return value decides: ``None`` keeps the interval, ``0`` stops, ``n > 0``
    is the next interval in the timer's unit (Kamailio's ``timer_ln`` handler contract)."""
    CALENDAR = "calendar"
    """Run at the wall-clock instants of a trigger (a cron expression, or one instant)."""


# Enum members read through their class cost ~0.2 µs each on CPython 3.11 (the enum
# metaclass has a __getattr__, which slows every attribute lookup on an enum class);
# module globals cost ~15 ns. The paths run per registration or per run read these.
UNIT_MS: Final = Unit.MS
UNIT_S: Final = Unit.S
PERIODIC: Final = Kind.PERIODIC
ONESHOT: Final = Kind.ONESHOT
RETURNS_INTERVAL: Final = Kind.RETURNS_INTERVAL
CALENDAR: Final = Kind.CALENDAR


def callback_name(callback: object) -> str:
    """A readable default name: ``module.qualname`` of the callback (of the function an
    adapter of :func:`declare_shape` wraps)."""
    if type(callback) in ADAPTER_SHAPES:  # (one per timer: the cache holds its function)
        callback = callback.func  # type: ignore[attr-defined]
    try:
        return _callback_name_cached(callback)
    except TypeError:  # unhashable
        return _callback_name(callback)


@functools.lru_cache(maxsize=1024)
def _callback_name_cached(callback: object) -> str:
    return _callback_name(callback)


def _callback_name(callback: object) -> str:
    target = getattr(callback, "func", callback)  # functools.partial
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def check_interval(timer: str, what: str, value: object, unit: Unit) -> int:
    """Return ``value`` as a whole, positive number of ``unit``, at most ``MAX_DELAY_S``;
    raise naming ``timer``.

    Floats are accepted when they hold a whole number (``20.0``). A fraction is refused rather
    than rounded, so a timer never runs at an interval other than the one written.
    """
    label = f"{what}_{unit.suffix}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"timer {timer!r}: {label} must be an int or float, "
            f"got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timer {timer!r}: {label} must be finite and > 0, got {value!r}")
    limit = MAX_DELAY_S * NS_PER_S // unit.tick_ns
    if value > limit:
        raise ValueError(
            f"timer {timer!r}: {label} must be at most {limit} (100 years), got {value!r}"
        )
    if value != int(value):
        hint = ""
        if unit is Unit.S and value * 1000 == int(value * 1000):
            call = "add_once_ms" if what == "delay" else "every_ms"
            hint = f"; use {call}({int(value * 1000)})"
        elif unit is Unit.S:
            hint = "; the finest grid is 1 ms"
        raise ValueError(
            f"timer {timer!r}: {label} must be a whole number of {unit.suffix}, got {value!r}{hint}"
        )
    return int(value)


UNIT_NS: Final = {u: u.value for u in Unit}
"""Each unit's length in ns, by a dict lookup (an enum's ``value`` is a slow property)."""
MAX_INTERVAL: Final = {u: MAX_DELAY_S * NS_PER_S // u.value for u in Unit}
"""The longest interval in each unit (``MAX_DELAY_S``)."""


def _label(name: str | None, callback: object) -> str:
    return name if name is not None else callback_name(callback)


ADAPTER_SHAPES: Final[dict[type, tuple[bool, bool]]] = {}
"""The classes of :func:`declare_shape`, with their instances' ``(takes_tick, is_coroutine)``."""

_C = TypeVar("_C", bound=type)


def declare_shape(*, takes_tick: bool, is_coroutine: bool) -> Callable[[_C], _C]:
    """Class decorator: the ``(takes_tick, is_coroutine)`` of every instance of an adapter
    class of aiotimer's own (one instance per timer, as the Kamailio façade makes one per
    ``timer_ln``; its ``func`` is the function it wraps, checked by its factory). Such
    callbacks skip the signature reading (~30 µs) and stay out of the per-callback caches
    (shape, name, shared specs): one entry each would crowd out the users' functions and keep
    each adapter, and what it holds, alive after its timer ended."""

    def declare(cls: _C) -> _C:
        ADAPTER_SHAPES[cls] = (takes_tick, is_coroutine)
        return cls

    return declare


def callback_shape(callback: Callable[..., Any], name: str | None) -> tuple[bool, bool]:
    """``(takes_tick, is_coroutine)`` of a callback, cached: reading a signature costs ~30 µs
    and a service registering 100,000 timers usually does so with a handful of functions
    (an instance of a class of :func:`declare_shape` is not read at all).

    ``name`` (or the callback's) names the timer in the error for a callback that cannot be
    called.
    """
    declared = ADAPTER_SHAPES.get(type(callback))
    if declared is not None:
        return declared
    try:
        return _shape_cached(callback)
    except TypeError:
        pass  # unhashable, or a signature we refuse: redo it uncached, naming the timer
    label = _label(name, callback)
    try:
        is_coroutine = is_coroutine_callable(callback)
    except TypeError as exc:
        raise TypeError(f"timer {label!r}: {exc}") from None
    return _takes_tick(label, callback), is_coroutine


@functools.lru_cache(maxsize=1024)
def _shape_cached(callback: Callable[..., Any]) -> tuple[bool, bool]:
    return _takes_tick(callback_name(callback), callback), is_coroutine_callable(callback)


def _what(kind: Kind) -> str:
    return "delay" if kind is Kind.ONESHOT else "interval"


def _takes_tick(timer: str, callback: Callable[..., Any]) -> bool:
    """Whether the callback wants the :class:`~aiotimer.Tick` (one positional argument) or none."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"timer {timer!r}: cannot read the signature of callback {callback!r} ({exc}); "
            "wrap it in a def taking no argument or one Tick"
        ) from None
    required = 0
    for p in signature.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            required += p.default is p.empty
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise TypeError(
                f"timer {timer!r}: callback {callback_name(callback)} has a required "
                f"keyword-only parameter {p.name!r}; a callback takes no argument or one Tick"
            )
    if required > 1:
        raise TypeError(
            f"timer {timer!r}: callback {callback_name(callback)} requires {required} arguments; "
            "a callback takes no argument or one Tick (use Tick.param for extra data)"
        )
    return required == 1


def is_coroutine_callable(callback: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with an async ``__call__``.

    :raises TypeError: for an async generator function (``async def`` with ``yield``): calling
        it runs nothing, so such a timer would silently never run
    """
    target = getattr(callback, "func", callback)  # functools.partial
    if inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(type(target).__call__):
        raise TypeError(
            f"callback {callback_name(callback)} is an async generator function (async def "
            "with yield): calling it runs nothing; a timer callback is a plain or async def"
        )
    if inspect.iscoroutinefunction(callback):
        return True
    if inspect.isfunction(callback) or inspect.ismethod(callback):
        return False
    return inspect.iscoroutinefunction(type(callback).__call__)


def is_coroutine_callable_cached(callback: object) -> bool:
    """:func:`is_coroutine_callable`, cached for hashable callbacks, for callers that ask of
    the same few functions over and over (the façade's ``timer_init``, once per transaction;
    the process handler pump, once per message)."""
    try:
        return _coroutine_cached(callback)
    except TypeError:  # unhashable (or an async generator function: raised again, below)
        return is_coroutine_callable(callback)


@functools.lru_cache(maxsize=1024)
def _coroutine_cached(callback: object) -> bool:
    return is_coroutine_callable(callback)


@final
class TimerSpec(tuple[Any, ...]):
    """Everything that defines a timer, checked once; immutable (a tuple underneath, so
    building one is cheap: registration is benchmarked at 100,000 timers).

    :param callback: a function or coroutine function taking no argument or one ``Tick``
    :param interval: the period (or the delay of a one-shot), a whole number of ``unit``
    :param unit: :attr:`Unit.MS` or :attr:`Unit.S`
    :param kind: periodic, one-shot, or returns-its-next-interval
    :param name: unique name on a scheduler; ``None`` derives one from the callback
    :param param: any object, handed to the callback as ``tick.param``
    :param policy: what the timer does on stalls, overlaps, timeouts and failures
    :param trigger: for a :attr:`Kind.CALENDAR` timer, its instants (``_calendar.Trigger``)
    :param cluster: run once per grid point across a cluster (a wall-clock grid anchored on
        the Unix epoch; a ``Cluster`` service claims each point); see ``aiotimer.cluster``
    :raises TypeError: a non-callable callback, a bad signature, a value of the wrong type
    :raises ValueError: an interval that is not a whole, finite, positive number; a jitter not
        below the interval
    """

    __slots__ = ()

    def __new__(
        cls,
        callback: Callable[..., Any],
        interval: float,
        unit: Unit,
        kind: Kind = Kind.PERIODIC,
        *,
        name: str | None = None,
        param: Any = None,
        policy: Policy = DEFAULT_POLICY,
        trigger: Any = None,
        cluster: bool = False,
    ) -> TimerSpec:
        # The happy path is a handful of identity checks: registration is benchmarked.
        if name is not None and (type(name) is not str or not name):
            raise TypeError(f"timer name must be a non-empty str, got {name!r}")
        if type(unit) is not Unit:
            raise TypeError(f"timer {_label(name, callback)!r}: unit must be a Unit, got {unit!r}")
        if type(kind) is not Kind:
            raise TypeError(f"timer {_label(name, callback)!r}: kind must be a Kind, got {kind!r}")
        if not callable(callback):
            raise TypeError(
                f"timer {_label(name, callback)!r}: callback must be callable, got "
                f"{type(callback).__name__} {callback!r}"
            )
        if type(interval) is not int or not 0 < interval <= MAX_INTERVAL[unit]:
            interval = check_interval(_label(name, callback), _what(kind), interval, unit)
        if policy is not DEFAULT_POLICY and kind is not Kind.CALENDAR:  # (instants: no interval)
            _check_policy(_label(name, callback), policy, interval, unit)
        takes_tick, is_coroutine = callback_shape(callback, name)
        if is_coroutine and policy.thread:
            raise TypeError(
                f"timer {_label(name, callback)!r}: thread=True is for blocking sync callbacks; "
                f"{callback_name(callback)} is a coroutine function (it runs on the loop)"
            )
        if (trigger is None) is (kind is Kind.CALENDAR):
            raise TypeError(
                f"timer {_label(name, callback)!r}: a trigger goes with kind CALENDAR, and only "
                f"there (kind {kind.value}, trigger {trigger!r})"
            )
        if type(cluster) is not bool:
            raise TypeError(
                f"timer {_label(name, callback)!r}: cluster must be a bool, got {cluster!r}"
            )
        if cluster and kind is not Kind.PERIODIC and kind is not Kind.CALENDAR:
            raise ValueError(
                f"timer {_label(name, callback)!r}: cluster=True is for periodic and calendar "
                f"timers (each grid point claimed once), not {kind.value} ones"
            )
        return tuple.__new__(
            cls,
            (
                callback,
                interval,
                unit,
                kind,
                name,
                param,
                policy,
                takes_tick,
                is_coroutine,
                trigger,
                cluster,
            ),
        )

    def with_interval(self, interval: float) -> TimerSpec:
        """This spec with another interval (validated; the rest was checked when this one was
        built): what a thousand one-shots of one callback with varying delays cost to specify."""
        if type(interval) is not int or not 0 < interval <= MAX_INTERVAL[self[2]]:
            interval = check_interval(self.label, _what(self[3]), interval, self[2])
        if self[6] is not DEFAULT_POLICY:
            _check_policy(self.label, self[6], interval, self[2])
        return tuple.__new__(TimerSpec, (self[0], interval, *self[2:]))

    def replace(self, **changes: Any) -> TimerSpec:
        """A copy with some fields changed, validated again."""
        fields = {
            "callback": self.callback,
            "interval": self.interval,
            "unit": self.unit,
            "kind": self.kind,
            "name": self.name,
            "param": self.param,
            "policy": self.policy,
            "trigger": self.trigger,
            "cluster": self.cluster,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"TimerSpec has no field(s) {sorted(unknown)}")
        fields.update(changes)
        return TimerSpec(
            fields["callback"],
            fields["interval"],
            fields["unit"],
            fields["kind"],
            name=fields["name"],
            param=fields["param"],
            policy=fields["policy"],
            trigger=fields["trigger"],
            cluster=fields["cluster"],
        )

    if TYPE_CHECKING:  # typed views for the checker; C-level itemgetters at run time

        @property
        def callback(self) -> Callable[..., Any]: ...
        @property
        def interval(self) -> int:
            """The period, or a one-shot's delay, in ``unit``."""

        @property
        def unit(self) -> Unit: ...
        @property
        def kind(self) -> Kind: ...
        @property
        def name(self) -> str | None: ...
        @property
        def param(self) -> Any: ...
        @property
        def policy(self) -> Policy: ...
        @property
        def takes_tick(self) -> bool:
            """The callback takes the :class:`~aiotimer.Tick` (else it takes no argument)."""

        @property
        def is_coroutine(self) -> bool: ...
        @property
        def trigger(self) -> Any:
            """A calendar timer's trigger (``_calendar.Trigger``), else ``None``."""

        @property
        def cluster(self) -> bool: ...
    else:
        callback = property(itemgetter(0), doc="The function called on each run.")
        interval = property(itemgetter(1), doc="The period, or a one-shot's delay, in unit.")
        unit = property(itemgetter(2), doc="Unit.MS or Unit.S.")
        kind = property(itemgetter(3), doc="Periodic, one-shot or returns-interval.")
        name = property(itemgetter(4), doc="The given name, or None.")
        param = property(itemgetter(5), doc="Handed to the callback as tick.param.")
        policy = property(itemgetter(6), doc="The timer's Policy.")
        takes_tick = property(itemgetter(7), doc="The callback takes the Tick.")
        is_coroutine = property(itemgetter(8), doc="The callback is a coroutine function.")
        trigger = property(itemgetter(9), doc="A calendar timer's trigger, else None.")
        cluster = property(itemgetter(10), doc="Runs once per grid point across a cluster.")

    @property
    def label(self) -> str:
        """The name used in messages: the given name, else the callback's qualified name."""
        return self.name if self.name is not None else callback_name(self.callback)

    def describe(self, interval: int | None = None) -> str:
        """``'every 20 ms'``, ``'once after 5 s'``: for listings and logs.

        :param interval: the interval (or delay) to show instead of the spec's, in its unit (a
            timer's own: see :attr:`Timer.interval`)
        """
        if interval is None:
            interval = self.interval
        if self.kind is Kind.CALENDAR:
            text = str(self.trigger.describe())
        elif self.kind is Kind.ONESHOT:
            text = f"once after {interval} {self.unit.suffix}"
        else:
            text = f"every {interval} {self.unit.suffix}"
        return f"{text} (cluster)" if self.cluster else text

    def __repr__(self) -> str:
        return f"TimerSpec({self.label!r}, {self.describe()}, {self.kind.value})"


def _check_policy(label: str, policy: Policy, interval: int, unit: Unit) -> None:
    if not isinstance(policy, Policy):
        raise TypeError(f"timer {label!r}: policy must be a Policy, got {policy!r}")
    interval_ms = interval * unit.tick_ns // 1_000_000
    if policy.jitter_ms >= interval_ms:
        raise ValueError(
            f"timer {label!r}: jitter_ms must be below the interval ({interval_ms} ms), "
            f"got {policy.jitter_ms}"
        )
