"""Timer specifications: small frozen value objects, validated when built.

A :class:`TimerSpec` cannot exist with a bad interval, a non-callable callback or a callback
whose signature the dispatcher cannot call, so no later code re-checks any of it. Every error
names the timer and the offending value, and is raised at registration, never at the 1000th tick.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Kind", "TimerSpec", "Unit", "callback_name"]


class Unit(enum.Enum):
    """The grid a timer runs on: milliseconds (raw ticks) or seconds."""

    MS = 1_000_000
    S = 1_000_000_000

    @property
    def tick_ns(self) -> int:
        return self.value

    @property
    def suffix(self) -> str:
        return "ms" if self is Unit.MS else "s"


class Kind(enum.Enum):
    """How a timer's next run is decided."""

    PERIODIC = "periodic"
    """Run every ``interval`` on an anchored grid; return values are ignored."""
    ONESHOT = "oneshot"
    """Run once, ``interval`` after it was added."""
    RETURNS_INTERVAL = "returns_interval"
    """The callback's return value decides: ``None`` keeps the interval, ``0`` stops, ``n > 0``
    is the next interval in the timer's unit (Kamailio's ``timer_ln`` handler contract)."""


def callback_name(callback: object) -> str:
    """A readable default name: ``module.qualname`` of the callback."""
    target = getattr(callback, "func", callback)  # functools.partial
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def check_interval(timer: str, what: str, value: object, unit: Unit) -> int:
    """Return ``value`` as a whole, positive number of ``unit``; raise naming ``timer``.

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
    if value != int(value):
        hint = f"; use every_ms({value * 1000:g})" if unit is Unit.S else ""
        raise ValueError(
            f"timer {timer!r}: {label} must be a whole number of {unit.suffix}, got {value!r}{hint}"
        )
    return int(value)


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
    """True for ``async def`` functions, partials of them and objects with an async ``__call__``."""
    if inspect.iscoroutinefunction(callback):
        return True
    if inspect.isfunction(callback) or inspect.ismethod(callback):
        return False
    return inspect.iscoroutinefunction(type(callback).__call__)


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """Everything that defines a timer, checked once.

    :param callback: a function or coroutine function taking no argument or one ``Tick``
    :param interval: the period (or the delay of a one-shot), a whole number of ``unit``
    :param unit: :attr:`Unit.MS` or :attr:`Unit.S`
    :param kind: periodic, one-shot, or returns-its-next-interval
    :param name: unique name on a scheduler; ``None`` derives one from the callback
    :param param: any object, handed to the callback as ``tick.param``
    :raises TypeError: a non-callable callback, a bad signature, an interval of the wrong type
    :raises ValueError: an interval that is not a whole, finite, positive number
    """

    callback: Callable[..., Any]
    interval: int
    unit: Unit
    kind: Kind = Kind.PERIODIC
    name: str | None = None
    param: Any = None
    takes_tick: bool = field(init=False)
    is_coroutine: bool = field(init=False)

    @classmethod
    def of(
        cls,
        callback: Callable[..., Any],
        interval: float,
        unit: Unit,
        kind: Kind = Kind.PERIODIC,
        *,
        name: str | None = None,
        param: Any = None,
    ) -> TimerSpec:
        """Build a spec from user input: ``interval`` may be a float holding a whole number."""
        label = name if isinstance(name, str) and name else callback_name(callback)
        what = "delay" if kind is Kind.ONESHOT else "interval"
        if not isinstance(unit, Unit):
            raise TypeError(f"timer {label!r}: unit must be a Unit, got {unit!r}")
        whole = check_interval(label, what, interval, unit)
        return cls(callback, whole, unit, kind, name=name, param=param)

    def __post_init__(self) -> None:
        label = self.label
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise TypeError(f"timer name must be a non-empty str, got {self.name!r}")
        if not callable(self.callback):
            raise TypeError(
                f"timer {label!r}: callback must be callable, got "
                f"{type(self.callback).__name__} {self.callback!r}"
            )
        if not isinstance(self.unit, Unit):
            raise TypeError(f"timer {label!r}: unit must be a Unit, got {self.unit!r}")
        if not isinstance(self.kind, Kind):
            raise TypeError(f"timer {label!r}: kind must be a Kind, got {self.kind!r}")
        what = "delay" if self.kind is Kind.ONESHOT else "interval"
        object.__setattr__(self, "interval", check_interval(label, what, self.interval, self.unit))
        object.__setattr__(self, "takes_tick", _takes_tick(label, self.callback))
        object.__setattr__(self, "is_coroutine", is_coroutine_callable(self.callback))

    @property
    def label(self) -> str:
        """The name used in messages: the given name, else the callback's qualified name."""
        return self.name if self.name is not None else callback_name(self.callback)

    @property
    def interval_ns(self) -> int:
        return self.interval * self.unit.tick_ns

    def describe(self) -> str:
        """``'every 20 ms'``, ``'once after 5 s'``: for listings and logs."""
        if self.kind is Kind.ONESHOT:
            return f"once after {self.interval} {self.unit.suffix}"
        return f"every {self.interval} {self.unit.suffix}"
