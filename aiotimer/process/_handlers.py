"""Calling user message handlers: sync ones at once, coroutine ones as tasks, failures logged.

Ground rules: a frame is decoded in a reader callback, which cannot start tasks itself, so
coroutine handlers (and, with ``defer=True``, every handler) go through a queue (a deque and
an event: no stream object per message) to a pump task that runs them, in order; sync handlers
run right in the reader callback, which is what keeps a ping-pong between parent and child in
the tens of microseconds. A handler that raises is logged with its name; it never stops the
reader, the pump or the other handlers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, final

import anyio

from .._spec import callback_name, is_coroutine_callable_cached

__all__ = ["Handler", "HandlerPump"]

logger = logging.getLogger("aiotimer.process.handlers")

Handler = Callable[..., Any]
_Item = tuple[Handler, tuple[Any, ...]]


_is_async: Callable[[Handler], bool] = is_coroutine_callable_cached
"""Paid on every message: cached (reading a function's flags costs microseconds)."""


@final
class HandlerPump:
    """Runs handlers for one side of one worker pipe (or of all workers of a timer process)."""

    __slots__ = ("_pending", "_wakeup", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self._pending: deque[_Item] = deque()
        self._wakeup: anyio.Event | None = None  # set while the pump task waits

    def dispatch(self, handlers: Sequence[Handler], args: tuple[Any, ...], *, defer: bool) -> None:
        """Call each handler with ``args``: now if it is sync (unless ``defer``), else from the
        pump task. Never raises."""
        for handler in handlers:
            if defer or _is_async(handler):
                self._pending.append((handler, args))
                if self._wakeup is not None:
                    self._wakeup.set()
            else:
                try:  # _call, inlined: the path of every message to a sync handler
                    handler(*args)
                except Exception:
                    self._log_failure(handler)

    async def run(self) -> None:
        """Run deferred handlers, in the order they came, until cancelled."""
        pending = self._pending
        async with anyio.create_task_group() as tg:
            try:
                while True:
                    while pending:
                        handler, args = pending.popleft()
                        if _is_async(handler):
                            tg.start_soon(self._call_async, handler, args)
                        else:
                            self._call(handler, args)
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
            finally:
                self._wakeup = None

    def _call(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            handler(*args)
        except Exception:
            self._log_failure(handler)

    async def _call_async(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            coro: Awaitable[Any] = handler(*args)
            await coro
        except Exception:
            self._log_failure(handler)

    def _log_failure(self, handler: Handler) -> None:
        """Log the exception being handled, naming the handler."""
        logger.exception("%s: message handler %s failed", self.label, callback_name(handler))
