"""The registration vocabulary shared by everything that collects timers.

:class:`~aiotimer.Scheduler` and :class:`~aiotimer.TimerTable` (and later worker-process
declarations) offer the same ``every_ms`` / ``every_s`` decorators and ``add_*`` methods; they
differ only in what :meth:`Registrar._register` does with the validated :class:`TimerSpec`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._spec import Kind, TimerSpec, Unit

__all__ = ["Registrar"]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


class Registrar(ABC, Generic[R]):
    """Decorators and ``add_*`` methods over one abstract ``_register(spec, decorated)``."""

    __slots__ = ()

    @abstractmethod
    def _register(self, spec: TimerSpec, *, decorated: bool) -> R:
        """Take a validated spec; ``decorated`` is true when it came from a decorator."""

    # -- decorators: return the function unchanged ------------------------------------------

    def every_ms(
        self,
        interval_ms: float,
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
    ) -> Callable[[F], F]:
        """Decorator: run the function every ``interval_ms`` milliseconds on the ms grid.

        :param returns_interval: the function's return value sets what happens next
            (``None`` same interval, ``0`` stop, ``n`` next interval in ms)
        """
        return self._decorator(Unit.MS, interval_ms, name, param, returns_interval)

    def every_s(
        self,
        interval_s: float,
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
    ) -> Callable[[F], F]:
        """Decorator: run the function every ``interval_s`` seconds on the second grid."""
        return self._decorator(Unit.S, interval_s, name, param, returns_interval)

    def _decorator(
        self, unit: Unit, interval: float, name: str | None, param: Any, returns_interval: bool
    ) -> Callable[[F], F]:
        kind = _periodic_kind(returns_interval)
        if callable(interval):  # @every_ms without the parentheses and the interval
            raise TypeError(
                f"every_{unit.suffix} needs an interval: write @every_{unit.suffix}(20), "
                f"not @every_{unit.suffix}"
            )

        def decorate(fn: F) -> F:
            self._register(
                TimerSpec.of(fn, interval, unit, kind, name=name, param=param),
                decorated=True,
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
    ) -> R:
        """Run ``callback`` every ``interval_ms`` milliseconds; the first run one interval from now
        (or from start)."""
        kind = _periodic_kind(returns_interval)
        return self._register(
            TimerSpec.of(callback, interval_ms, Unit.MS, kind, name=name, param=param),
            decorated=False,
        )

    def add_every_s(
        self,
        interval_s: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
        returns_interval: bool = False,
    ) -> R:
        """Run ``callback`` every ``interval_s`` seconds on the second grid."""
        kind = _periodic_kind(returns_interval)
        return self._register(
            TimerSpec.of(callback, interval_s, Unit.S, kind, name=name, param=param),
            decorated=False,
        )

    def add_once_ms(
        self,
        delay_ms: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
    ) -> R:
        """Run ``callback`` once, ``delay_ms`` milliseconds from now (``call_later`` in ms)."""
        return self._register(
            TimerSpec.of(callback, delay_ms, Unit.MS, Kind.ONESHOT, name=name, param=param),
            decorated=False,
        )

    def add_once_s(
        self,
        delay_s: float,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        param: Any = None,
    ) -> R:
        """Run ``callback`` once, ``delay_s`` seconds from now, on the second grid."""
        return self._register(
            TimerSpec.of(callback, delay_s, Unit.S, Kind.ONESHOT, name=name, param=param),
            decorated=False,
        )


def _periodic_kind(returns_interval: bool) -> Kind:
    if not isinstance(returns_interval, bool):
        raise TypeError(f"returns_interval must be a bool, got {returns_interval!r}")
    return Kind.RETURNS_INTERVAL if returns_interval else Kind.PERIODIC
