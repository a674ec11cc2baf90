"""Services: things that start and stop with a :class:`~aiotimer.Scheduler`.

The scheduler core knows nothing of worker processes, leader locks or metrics; they attach to
it as services (``scheduler.add_service(svc)``), started in the scheduler's task group after
its tick source, stopped before it drains its callbacks, and asked for their numbers by
``scheduler.stats()``. This keeps the core free of imports from the layers above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from anyio.abc import TaskStatus

from ._stats import JsonStats

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["Attachable", "Service"]


@runtime_checkable
class Service(Protocol):
    """What a scheduler needs from a service."""

    @property
    def name(self) -> str:
        """Unique among a scheduler's services; used in logs and errors."""
        ...

    async def serve(self, scheduler: Scheduler, *, task_status: TaskStatus[None]) -> None:
        """Run until cancelled; call ``task_status.started()`` once running (the scheduler's
        ``start()`` returns only after every service started). Raising before ``started()``
        fails ``start()``."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop gracefully within about ``grace_s``; ``serve`` is cancelled right after."""
        ...

    def stats(self) -> JsonStats:
        """The service's numbers, a typed object (``scheduler.stats().services[name]``) that
        turns into JSON-ready data with ``as_dict()``."""
        ...


@runtime_checkable
class Attachable(Protocol):
    """Something that attaches itself to a scheduler as a service (a ``TimerProcess``), for
    ``scheduler.add_process``: the core calls it without importing what it is."""

    def attach(self, scheduler: Scheduler) -> None: ...
