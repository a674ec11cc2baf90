"""The little the core must know about which event loop it runs on, in one object.

aiotimer runs on asyncio (and uvloop, an asyncio loop) and on trio, through anyio. anyio covers
most of it; what it does not, or does too slowly for a path run on every tick, lives here, in one
small :class:`Backend` chosen once (:func:`current_backend`, at a scheduler's start), as anyio
chooses its ``AsyncBackend``: the rest of the core calls its methods and never asks which loop
runs.

* starting a task that outlives its caller (``await scheduler.start()`` needs one: the
  scheduler's task group lives in it): ``loop.create_task`` on asyncio, a system task on trio;
* starting a run's task: a plain task on asyncio (anyio's ``start_soon`` costs ~8x more), a task
  of the scheduler's task group on trio, which forbids unstructured tasks;
* "yield to the loop once" without anyio's per-call backend lookup;
* telling whether a loop is idle (the virtual clock);
* a token naming the running loop, so a call from another loop is refused, not hung.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Literal, final

from anyio.abc import TaskGroup

__all__ = ["AsyncioBackend", "Backend", "BackendName", "TrioBackend", "current_backend"]

BackendName = Literal["asyncio", "trio"]
_MAX_IDLE_SPINS: Final = 100_000

# Tasks spawned on asyncio, kept referenced until done (the loop only holds weak references).
_background: set[asyncio.Task[None]] = set()


class Backend:
    """What the core needs from an event-loop family; one instance per family."""

    __slots__ = ()
    name: BackendName

    def loop_token(self) -> object:
        """An object that identifies the running loop (compared by identity)."""
        raise NotImplementedError

    def spawn_detached(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``fn()`` as a task of its own that outlives the caller. The task must handle
        its own errors (on trio an exception escaping a system task ends the whole run)."""
        raise NotImplementedError

    def checkpoint(self) -> Callable[[], Awaitable[None]]:
        """The loop's own "yield once", for a caller that yields on every tick."""
        raise NotImplementedError

    def start_run(
        self, coro: Coroutine[Any, Any, None], task_group: TaskGroup, tasks: set[Any]
    ) -> None:
        """Start a run's coroutine as a task; on asyncio it is tracked in ``tasks`` until done
        (the dispatcher cancels what is left there at stop)."""
        raise NotImplementedError

    async def wait_idle(self) -> None:
        """Return once no other task of the running loop can make progress."""
        raise NotImplementedError


@final
class AsyncioBackend(Backend):
    __slots__ = ()
    name: BackendName = "asyncio"

    def loop_token(self) -> object:
        return asyncio.get_running_loop()

    def spawn_detached(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        async def run() -> None:
            await fn()

        task = asyncio.get_running_loop().create_task(run(), name=name)
        _background.add(task)
        task.add_done_callback(_background.discard)

    def checkpoint(self) -> Callable[[], Awaitable[None]]:
        async def asyncio_checkpoint() -> None:
            await asyncio.sleep(0)

        return asyncio_checkpoint

    def start_run(
        self, coro: Coroutine[Any, Any, None], task_group: TaskGroup, tasks: set[Any]
    ) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def wait_idle(self) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        for _ in range(_MAX_IDLE_SPINS):
            await asyncio.sleep(0)
            if getattr(loop, "_ready", None):  # CPython's loop: callbacks queued to run
                continue
            if all(_blocked(task) for task in asyncio.all_tasks(loop) if task is not me):
                return
        raise RuntimeError(
            f"the loop never went idle in {_MAX_IDLE_SPINS} iterations "
            "(a task busy-loops without waiting on anything?)"
        )


def _blocked(task: asyncio.Task[object]) -> bool:
    """A task waiting on a future that has not completed (so it cannot run now)."""
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


@final
class TrioBackend(Backend):
    __slots__ = ()
    name: BackendName = "trio"

    def loop_token(self) -> object:
        import trio

        return trio.lowlevel.current_trio_token()

    def spawn_detached(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        import trio

        async def run() -> None:
            await fn()

        trio.lowlevel.spawn_system_task(run, name=name)

    def checkpoint(self) -> Callable[[], Awaitable[None]]:
        import trio

        return trio.lowlevel.checkpoint

    def start_run(
        self, coro: Coroutine[Any, Any, None], task_group: TaskGroup, tasks: set[Any]
    ) -> None:
        task_group.start_soon(lambda: coro)

    async def wait_idle(self) -> None:
        import trio.testing

        await trio.testing.wait_all_tasks_blocked()


ASYNCIO: Final = AsyncioBackend()
TRIO: Final = TrioBackend()


def current_backend() -> Backend:
    """The backend of the running loop; ``RuntimeError`` outside any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return ASYNCIO
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return TRIO
    raise RuntimeError("aiotimer needs a running asyncio or trio event loop")
