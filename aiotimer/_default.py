"""The default scheduler and the module-level shortcuts that use it, for scripts.

Libraries should not use these: they collect timers on a :class:`~aiotimer.TimerTable` and let
the application choose its scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from ._registrar import PolicyOptions
from ._scheduler import Scheduler

__all__ = ["default_scheduler", "every_ms", "every_s", "get_ticks", "get_ticks_raw"]

F = TypeVar("F", bound=Callable[..., Any])

_default: Scheduler | None = None


def default_scheduler() -> Scheduler:
    """The process-wide scheduler that module-level decorators register on (created lazily)."""
    global _default
    if _default is None:
        _default = Scheduler(name="default")
    return _default


def every_ms(
    interval_ms: float,
    *,
    name: str | None = None,
    param: Any = None,
    returns_interval: bool = False,
    **options: Unpack[PolicyOptions],
) -> Callable[[F], F]:
    """``default_scheduler().every_ms(...)``, policy options included."""
    return default_scheduler().every_ms(
        interval_ms, name=name, param=param, returns_interval=returns_interval, **options
    )


def every_s(
    interval_s: float,
    *,
    name: str | None = None,
    param: Any = None,
    returns_interval: bool = False,
    **options: Unpack[PolicyOptions],
) -> Callable[[F], F]:
    """``default_scheduler().every_s(...)``, policy options included."""
    return default_scheduler().every_s(
        interval_s, name=name, param=param, returns_interval=returns_interval, **options
    )


def get_ticks() -> int:
    """Whole seconds since the default scheduler started."""
    return default_scheduler().get_ticks()


def get_ticks_raw() -> int:
    """Whole milliseconds (raw ticks) since the default scheduler started."""
    return default_scheduler().get_ticks_raw()
