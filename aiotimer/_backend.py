"""The little the core must know about which event loop it runs on.

aiotimer runs on asyncio (and uvloop, an asyncio loop) and on trio, through anyio. anyio covers
everything but one thing: starting a task that outlives its caller, which ``await
scheduler.start()`` needs (the scheduler's task group lives in that task). asyncio spells that
``loop.create_task``; trio, which forbids unstructured tasks, offers system tasks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

__all__ = ["Backend", "current_backend", "native_checkpoint", "spawn_detached"]

Backend = Literal["asyncio", "trio"]

# Tasks spawned on asyncio, kept referenced until done (the loop only holds weak references).
_background: set[asyncio.Task[None]] = set()


def current_backend() -> Backend:
    """The async library of the running task; ``RuntimeError`` outside any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    raise RuntimeError("aiotimer needs a running asyncio or trio event loop")


def native_checkpoint() -> Callable[[], Awaitable[None]]:
    """The running backend's own "yield to the loop once", looked up once by a caller that
    yields on every tick (``anyio.lowlevel.checkpoint`` asks which backend runs, every call)."""
    if current_backend() == "trio":
        import trio

        return trio.lowlevel.checkpoint

    async def asyncio_checkpoint() -> None:
        await asyncio.sleep(0)

    return asyncio_checkpoint


def spawn_detached(fn: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``fn()`` as a task of its own that outlives the caller.

    The task must handle its own errors: on trio an exception escaping a system task ends the
    whole run; on asyncio it would only be logged by the loop.
    """
    if current_backend() == "trio":
        import trio

        async def run() -> None:
            await fn()

        trio.lowlevel.spawn_system_task(run, name=name)
        return

    async def run_asyncio() -> None:
        await fn()

    task = asyncio.get_running_loop().create_task(run_asyncio(), name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)
