"""aiotimer: Kamailio's timer API for asyncio, and beyond.

Millisecond and second periodic timers, one-shots and self-rescheduling timers on anchored
grids, dispatched on the event loop (asyncio, uvloop or trio). This module only re-exports the
public names; the implementation lives in the private modules next to it.
"""

from typing import TYPE_CHECKING, Any

from ._clock import Clock, MonotonicClock
from ._default import default_scheduler, every_ms, every_s, get_ticks, get_ticks_raw
from ._dispatch import current_timer
from ._policy import Missed, Overlap, Policy
from ._scheduler import Scheduler
from ._service import Service
from ._spec import Kind, TimerSpec, Unit
from ._stats import BUCKET_UPPER_NS, Distribution, Histogram, JsonStats, SchedulerStats, TimerStats
from ._table import TimerTable
from ._timer import Tick, Timer, TimerState

if TYPE_CHECKING:
    from .process import TimerProcess

__all__ = [
    "BUCKET_UPPER_NS",
    "Clock",
    "Distribution",
    "Histogram",
    "JsonStats",
    "Kind",
    "Missed",
    "MonotonicClock",
    "Overlap",
    "Policy",
    "Scheduler",
    "SchedulerStats",
    "Service",
    "Tick",
    "Timer",
    "TimerProcess",
    "TimerSpec",
    "TimerState",
    "TimerStats",
    "TimerTable",
    "Unit",
    "current_timer",
    "default_scheduler",
    "every_ms",
    "every_s",
    "get_ticks",
    "get_ticks_raw",
]


def __getattr__(name: str) -> Any:
    # aiotimer.TimerProcess is imported on first use: worker processes need multiprocessing,
    # sockets and ctypes, which a program without timer processes should not pay to import.
    if name == "TimerProcess":
        from .process import TimerProcess

        return TimerProcess
    raise AttributeError(f"module 'aiotimer' has no attribute {name!r}")
