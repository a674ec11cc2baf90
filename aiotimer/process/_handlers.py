"""Calling user message handlers: sync ones at once, coroutine ones as tasks, failures logged.

Ground rules: a frame is decoded in a reader callback, which cannot start tasks itself, so
coroutine handlers (and, with ``defer=True``, every handler) go through a memory stream to a
pump task that runs them; sync handlers run right in the reader callback, which is what keeps
a ping-pong between parent and child in the tens of microseconds. A handler that raises is
logged with its name; it never stops the reader, the pump or the other handlers.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._spec import callback_name, is_coroutine_callable

__all__ = ["Handler", "HandlerPump"]

logger = logging.getLogger("aiotimer.process.handlers")

Handler = Callable[..., Any]
_Item = tuple[Handler, tuple[Any, ...]]


@functools.lru_cache(maxsize=256)
def _is_async(handler: Handler) -> bool:
    """:func:`is_coroutine_callable`, cached: it costs microseconds, paid on every message."""
    return is_coroutine_callable(handler)


@final
class HandlerPump:
    """Runs handlers for one side of one worker pipe (or of all workers of a timer process)."""

    __slots__ = ("_receive", "_send", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self._send: MemoryObjectSendStream[_Item]
        self._receive: MemoryObjectReceiveStream[_Item]
        self._send, self._receive = anyio.create_memory_object_stream[_Item](math.inf)

    def dispatch(self, handlers: Sequence[Handler], args: tuple[Any, ...], *, defer: bool) -> None:
        """Call each handler with ``args``: now if it is sync (unless ``defer``), else from the
        pump task. Never raises."""
        for handler in handlers:
            if defer or _is_async(handler):
                try:
                    self._send.send_nowait((handler, args))
                except anyio.ClosedResourceError:
                    return
            else:
                self._call(handler, args)

    async def run(self) -> None:
        """Run deferred handlers until cancelled."""
        async with anyio.create_task_group() as tg:
            async for handler, args in self._receive:
                if _is_async(handler):
                    tg.start_soon(self._call_async, handler, args)
                else:
                    self._call(handler, args)

    def _call(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            handler(*args)
        except Exception:
            logger.exception("%s: message handler %s failed", self.label, callback_name(handler))

    async def _call_async(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            coro: Awaitable[Any] = handler(*args)
            await coro
        except Exception:
            logger.exception("%s: message handler %s failed", self.label, callback_name(handler))
