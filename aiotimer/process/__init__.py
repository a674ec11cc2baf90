"""Dedicated timer processes: workers with their own event loop, connected by pipes.

Kamailio forks a timer process for slow timer work (``register_basic_timers`` then
``fork_basic_timer`` / ``fork_sync_timer``), so that it delays no other timer. Here a
:class:`TimerProcess` declares such a process: its timers (``every_s`` / ``every_ms`` for grid
("sync") timers, ``add_basic_s`` / ``add_basic_ms`` for "basic" ones that sleep after each run),
how many workers run them, and how they are supervised. Attached to a scheduler
(``attach(scheduler, proc)``), its workers start and stop with it::

    proc = TimerProcess("msilo-cleaner", workers=1)

    @proc.every_s(5)
    def clean(tick: aiotimer.Tick) -> None: ...

    attach(scheduler, proc)  # or proc.run_inline(scheduler) in tests
    await scheduler.start()  # returns once every worker is ready

On Linux, workers are forked by a fork server started once per parent, which imported the
worker, the event loop and the callbacks' modules first (``_start``); ``context="spawn"`` (the
default elsewhere) starts each from a fresh interpreter instead.

The tree shows the data flow: ``_timer_process`` (the declaration) and ``_spec`` (what crosses
to a child) -> ``_hub`` (the scheduler's service) -> ``_supervisor`` (parent side, one per
worker) <- ``_channel`` / ``_protocol`` (framed pipe) -> ``_worker`` (child side); ``_inline``
replaces the last three in tests; ``_context`` is what a worker's callbacks see; ``_start``
picks how workers start.
"""

from typing import TYPE_CHECKING, Any

from ._context import WorkerInfo, asend_to_parent, current_worker, send_to_parent
from ._errors import (
    MessageTooLarge,
    ProcessError,
    ProtocolError,
    SendBufferFull,
    WorkerCrashed,
    WorkerStartError,
)
from ._protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from ._handle import Worker, WorkerState, WorkerStats
    from ._hub import ProcessesStats, attach
    from ._restart import RestartMode, RestartPolicy
    from ._spec import Mode, ProcessTimer
    from ._timer_process import ContextName, TimerProcess

__all__ = [
    "PROTOCOL_VERSION",
    "ContextName",
    "MessageTooLarge",
    "Mode",
    "ProcessError",
    "ProcessesStats",
    "ProcessTimer",
    "ProtocolError",
    "RestartMode",
    "RestartPolicy",
    "SendBufferFull",
    "TimerProcess",
    "Worker",
    "WorkerCrashed",
    "WorkerInfo",
    "WorkerStartError",
    "WorkerState",
    "WorkerStats",
    "asend_to_parent",
    "attach",
    "current_worker",
    "send_to_parent",
]

# The parent's side is imported on first use: a worker imports this package for its callbacks'
# current_worker() and send_to_parent(), and has no use for supervisors and the hub.
_LAZY = {
    "ContextName": "_timer_process",
    "Mode": "_spec",
    "ProcessTimer": "_spec",
    "RestartMode": "_restart",
    "RestartPolicy": "_restart",
    "TimerProcess": "_timer_process",
    "Worker": "_handle",
    "WorkerState": "_handle",
    "WorkerStats": "_handle",
    "ProcessesStats": "_hub",
    "attach": "_hub",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
