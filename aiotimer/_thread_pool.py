"""The scheduler's own bounded pool for ``thread=True`` runs on asyncio.

A run goes to a :class:`~concurrent.futures.ThreadPoolExecutor` of ``thread_limit`` threads
(never the loop's default executor), and comes back to the loop without an asyncio future:
a worker that ends a run appends its future to a queue and wakes the loop only if no wake-up is
pending already. ``loop.run_in_executor`` wraps every run in an asyncio future chained to the
executor's and wakes the loop (a write to its self-pipe) once per run; with 500 runs due at
once that is 500 wake-ups where this takes a few. (Measured: ``python -m benchmarks policies``.)

The executor keeps what the standard library does well: its threads start on demand up to the
limit, idle ones are reused, queued runs are cancelled at shutdown, and the interpreter waits for
running ones at exit. Its threads are marked as AnyIO worker threads of the running loop, so a
callback can reach the loop with ``anyio.from_thread.run_sync`` (a documented contract).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    import asyncio

__all__ = ["ThreadPool", "thread_pool"]

RunEnded = Callable[["Future[Any] | None"], None]
"""Called on the loop when a run ended: with its future, or ``None`` when it was abandoned."""


@final
class ThreadPool:
    """Runs sync callables in threads; each run's end is handed back on the loop's thread.

    :param loop: the running loop the ends are handed to
    :param executor: the bounded executor the runs go to (this pool shuts it down)
    """

    __slots__ = ("_ended", "_executor", "_lock", "_loop", "_runs", "_wake_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        self._loop = loop
        self._executor = executor
        self._runs: dict[Future[Any], RunEnded] = {}  # in flight: what to call when each ends
        self._ended: deque[Future[Any]] = deque()  # ended in a thread, not yet handed back
        self._lock = threading.Lock()
        self._wake_pending = False  # a hand-back is scheduled on the loop

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def __len__(self) -> int:
        """Runs in flight (started, not yet handed back nor abandoned)."""
        return len(self._runs)

    def submit(self, ended: RunEnded, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in a thread; ``ended(future)`` is called on the loop after."""
        future = self._executor.submit(fn, *args)
        self._runs[future] = ended
        future.add_done_callback(self._run_ended)

    def abandon(self) -> None:
        """A hard stop: every run in flight is handed back now as abandoned (``ended(None)``);
        runs still queued are cancelled, running ones finish in their thread, their results
        dropped."""
        runs, self._runs = self._runs, {}
        for future, ended in runs.items():
            future.cancel()
            ended(None)

    def close(self) -> None:
        """Abandon what is in flight and let the threads go (without waiting for them)."""
        self.abandon()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run_ended(self, future: Future[Any]) -> None:
        # A worker thread (or the loop's, for a run cancelled before it started).
        self._ended.append(future)
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake()

    def _wake(self) -> None:
        with suppress(RuntimeError):  # (the loop is closed: nobody is left to hand the end to)
            self._loop.call_soon_threadsafe(self._hand_back)

    def _hand_back(self) -> None:
        # On the loop: the runs ended by now. One that ends from here on schedules the next
        # hand-back itself (the loop is never held by runs that keep ending meanwhile).
        with self._lock:
            self._wake_pending = False
        ended, runs = self._ended, self._runs
        try:
            for _ in range(len(ended)):
                future = ended.popleft()
                run_ended = runs.pop(future, None)
                if run_ended is not None:  # (None: abandoned at a hard stop)
                    run_ended(future)
        except BaseException:
            if ended:  # the others are handed back on the loop's next turn, not forgotten
                with self._lock:
                    self._wake_pending = True
                self._wake()
            raise


def thread_pool(loop: asyncio.AbstractEventLoop, size: int) -> ThreadPool | None:
    """The pool of ``size`` threads for the running ``loop``, its threads marked as AnyIO
    worker threads of that loop. That mark is AnyIO's thread-local, not public API, so where it
    is missing ``None`` is returned and runs go through ``anyio.to_thread`` instead. (Tested:
    the mark works, ``test_policies.py``; runs use this pool, ``test_thread_pool.py``.)"""
    try:
        from anyio._core._eventloop import threadlocals
        from anyio.lowlevel import current_token
    except ImportError:
        return None
    token = current_token()

    def mark() -> None:
        threadlocals.current_token = token

    return ThreadPool(loop, ThreadPoolExecutor(size, "aiotimer", initializer=mark))
