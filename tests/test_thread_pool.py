"""thread=True runs on asyncio: the scheduler's own bounded pool hands each run's end back to
the loop (a few wake-ups for many ends), exactly once, and never loses one. Real threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anyio
import pytest

import aiotimer
from aiotimer._thread_pool import ThreadPool
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.param == "uvloop":
        import uvloop

        return ("asyncio", {"loop_factory": uvloop.new_event_loop})
    return ("asyncio", {})


async def wait_for(predicate: Any) -> None:
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 (real threads: no event to wait on)
            await asyncio.sleep(0.001)


async def test_every_end_is_handed_back_once_on_the_loop_thread() -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPool(loop, ThreadPoolExecutor(4))
    ends: list[tuple[int, object, bool]] = []
    try:
        for i in range(2_000):

            def ended(future: Future[Any] | None, i: int = i) -> None:
                assert future is not None
                ends.append((i, future.result(), threading.current_thread() is loop_thread))

            pool.submit(ended, lambda i=i: i * i)
        loop_thread = threading.current_thread()
        await wait_for(lambda: len(ends) == 2_000)
        await asyncio.sleep(0.01)  # nothing comes twice
    finally:
        pool.close()
    assert sorted(ends) == [(i, i * i, True) for i in range(2_000)]
    assert len(pool) == 0


async def test_an_end_that_raises_does_not_lose_the_others() -> None:
    """A hand-back whose handler raises is reported by the loop; the ends queued behind it
    are handed back on the loop's next turn, not left until some later run ends."""
    loop = asyncio.get_running_loop()
    reported: list[object] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reported.append(context.get("exception")))
    pool = ThreadPool(loop, ThreadPoolExecutor(1))
    release = threading.Event()
    handed: list[int] = []

    def ended(i: int) -> Any:
        def end(future: Future[Any] | None) -> None:
            handed.append(i)
            if i == 0:
                raise RuntimeError("handler bug")

        return end

    try:
        pool.submit(ended(0), release.wait)
        for i in range(1, 50):
            pool.submit(ended(i), lambda: None)
        release.set()  # the one thread then ends all 50 before the loop wakes up
        await wait_for(lambda: len(handed) == 50)
    finally:
        pool.close()
        loop.set_exception_handler(handler)
    assert sorted(handed) == list(range(50))
    assert [str(e) for e in reported] == ["handler bug"]


async def test_an_abandoned_run_is_handed_back_at_once_and_its_late_end_dropped() -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPool(loop, ThreadPoolExecutor(1))
    release = threading.Event()
    ends: list[tuple[str, Future[Any] | None]] = []
    pool.submit(lambda f: ends.append(("running", f)), release.wait)
    pool.submit(lambda f: ends.append(("queued", f)), lambda: None)
    try:
        pool.abandon()
        assert ends == [("running", None), ("queued", None)]
        assert len(pool) == 0
        release.set()
        await asyncio.sleep(0.05)
        assert len(ends) == 2  # the running one's own end came later: dropped
    finally:
        release.set()
        pool.close()


@pytest.mark.parametrize("new_loop", ["asyncio", "uvloop"])
def test_a_run_that_ends_after_its_loop_closed_is_dropped_quietly(
    new_loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody is left to hand the end to: no error from the worker thread (the executor
    logs what a done callback raises)."""
    if new_loop == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    release = threading.Event()
    pool = ThreadPool(loop, ThreadPoolExecutor(1))
    pool.submit(lambda f: None, release.wait)
    loop.close()
    release.set()
    pool.executor.shutdown(wait=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_batch_of_thread_runs_all_end_and_count(virtual_clock: VirtualClock) -> None:
    """300 thread=True timers due at once, 8 threads: every run is counted, none is lost, and
    they ran on the scheduler's own pool (not anyio's threads, its fallback)."""
    s = aiotimer.Scheduler(clock=virtual_clock, thread_limit=8)
    names: set[str] = set()

    def record() -> None:
        names.add(threading.current_thread().name)

    timers = [s.add_every_ms(10, record, thread=True) for _ in range(300)]
    async with s:
        await virtual_clock.advance_ms(30)
        await wait_for(lambda: all(t.running == 0 for t in timers))
    assert [t.runs for t in timers] == [3] * 300
    assert s.stats().running == 0
    assert 1 <= len(names) <= 8
    assert all(name.startswith("aiotimer_") for name in names)


@pytest.mark.slow
async def test_a_hard_stop_ends_a_thread_run_in_flight() -> None:
    """The serving task cancelled (no grace): the thread run still going is ended for the
    scheduler (a one-shot counts as finished), and its result, which comes later, is dropped.
    Real time (a thread holds a virtual clock still): generous bounds."""
    release = threading.Event()
    s = aiotimer.Scheduler()
    once = s.add_once_ms(1, lambda: release.wait(5), thread=True, name="blocking")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(s.serve)
            await wait_for(lambda: once.running == 1)
            tg.cancel_scope.cancel()
    finally:
        release.set()
    await asyncio.sleep(0.05)
    assert (once.state, once.running) == (aiotimer.TimerState.FINISHED, 0)
    assert s.stats().running == 0
