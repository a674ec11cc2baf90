"""Who am I: the worker a callback runs in, and its way to talk to the parent.

Ground rules:

* Inside a worker (a real child process, or an inline worker in tests) every callback can ask
  :func:`current_worker` for its :class:`WorkerInfo` (Kamailio's ``fork_basic_timer_w`` worker
  index, rtimer's ``$rtimer_worker``) and call :func:`send_to_parent`.
* The worker is found in a context variable, which tasks and ``thread=True`` runs inherit, so
  inline workers sharing the parent's loop each see their own; a real child also records it
  process-wide, for threads the user starts.
* Outside a worker both raise ``RuntimeError``: a callback that talks to a parent that does not
  exist is a bug worth hearing about.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Protocol, final

__all__ = ["WorkerInfo", "WorkerLink", "asend_to_parent", "current_worker", "send_to_parent"]


@final
@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's identity.

    :ivar name: the :class:`~aiotimer.process.TimerProcess`'s name
    :ivar index: ``0 .. workers - 1``; a restarted worker keeps its index
    :ivar pid: the worker's process id (the parent's own pid for an inline worker)
    """

    name: str
    index: int
    pid: int

    def __str__(self) -> str:
        return f"{self.name}[{self.index}]"


class WorkerLink(Protocol):
    """What a running worker offers its callbacks (the child's channel, or the inline queue)."""

    @property
    def info(self) -> WorkerInfo: ...

    def send_to_parent(self, obj: Any) -> None: ...

    async def asend_to_parent(self, obj: Any) -> None: ...


_current: contextvars.ContextVar[WorkerLink | None] = contextvars.ContextVar(
    "aiotimer_process_worker", default=None
)
_process_wide: list[WorkerLink] = []  # the real child's link (at most one), for foreign threads


def set_process_link(link: WorkerLink) -> None:
    """Record the link of this child process (called once, by the child's bootstrap)."""
    _process_wide[:] = [link]
    _current.set(link)


def bind(link: WorkerLink) -> contextvars.Token[WorkerLink | None]:
    """Make ``link`` the current worker of this context (inline workers)."""
    return _current.set(link)


def unbind(token: contextvars.Token[WorkerLink | None]) -> None:
    _current.reset(token)


def _link(what: str) -> WorkerLink:
    link = _current.get()
    if link is None and _process_wide:
        link = _process_wide[0]
    if link is None:
        raise RuntimeError(
            f"{what}() called outside an aiotimer worker: it works in the timers and message "
            "handlers of a TimerProcess"
        )
    return link


def current_worker() -> WorkerInfo:
    """The worker the calling callback runs in.

    :raises RuntimeError: outside a worker
    """
    return _link("current_worker").info


def send_to_parent(obj: Any) -> None:
    """Send ``obj`` to the parent, whose ``TimerProcess.on_message`` handlers get
    ``(worker_info, obj)``. Never blocks: buffered until the pipe takes it; callable from any
    thread of the worker; messages from one worker arrive in order. Lost if the parent is gone.
    The buffer is bounded: when 16 MiB already wait for a parent that reads slower than the
    worker sends, the message is refused (``SendBufferFull``; nothing sent). A sender that
    may outrun its parent awaits :func:`asend_to_parent` instead.

    :raises RuntimeError: outside a worker
    :raises TypeError: ``obj`` does not pickle
    :raises MessageTooLarge: its pickle is above 256 MiB (nothing sent)
    :raises SendBufferFull: the buffer is full (nothing sent)
    """
    _link("send_to_parent").send_to_parent(obj)


async def asend_to_parent(obj: Any) -> None:
    """:func:`send_to_parent` with backpressure: first waits while more than 1 MiB waits for
    the pipe, so a fast sender goes at the parent's pace, with bounded memory. Call it from the
    worker's event loop (a coroutine callback or message handler).

    :raises RuntimeError: outside a worker
    :raises TypeError: ``obj`` does not pickle
    :raises MessageTooLarge: its pickle is above 256 MiB (nothing sent)
    """
    await _link("asend_to_parent").asend_to_parent(obj)
