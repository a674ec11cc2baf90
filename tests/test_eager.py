"""Eager coroutine runs (asyncio and uvloop): a run starts at its grid point, synchronously in
the dispatch of its batch, and becomes a task only if it suspends; everything else about a
coroutine run stays as it was (policies, stats, errors, cancellation at stop)."""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import pytest

import aiotimer
from aiotimer import Overlap
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

MS = 1_000_000


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.param == "uvloop":
        import uvloop

        return ("asyncio", {"loop_factory": uvloop.new_event_loop})
    return ("asyncio", {})


async def test_a_run_that_does_not_suspend_completes_in_the_dispatch_without_a_task(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    order: list[str] = []
    tasks_during: list[int] = []

    async def eager(tick: aiotimer.Tick) -> None:
        order.append("coroutine")
        tasks_during.append(len(s._dispatcher._tasks))

    s.add_every_ms(10, eager, name="a")
    s.add_every_ms(10, lambda: order.append("sync"), name="b")
    async with s:
        await virtual_clock.advance_ms(10)
        assert s._dispatcher._tasks == set()  # no task was made
        assert s.get_timer("a").runs == 1
        assert s.get_timer("a").running == 0
        assert s.get_timer("a").stats.duration.count == 1  # an eager run has a duration too
    assert order == ["coroutine", "sync"]  # before the next timer of its batch


async def test_a_run_that_suspends_becomes_a_task_and_finishes_there(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[tuple[str, object, str]] = []

    async def suspends() -> None:
        var.set("inside")
        seen.append(("before", aiotimer.current_timer.get(), var.get()))
        await virtual_clock.sleep(0.005)
        seen.append(("after", aiotimer.current_timer.get(), var.get()))

    timer = s.add_once_ms(10, suspends, name="t")
    async with s:
        await virtual_clock.advance_ms(10)
        assert [p for p, _, _ in seen] == ["before"]
        assert timer.running == 1
        await virtual_clock.advance_ms(5)
    assert seen == [("before", timer, "inside"), ("after", timer, "inside")]
    assert var.get() == "unset"  # the run's context is its own
    assert timer.state is aiotimer.TimerState.FINISHED


async def test_anyio_works_before_the_first_suspension(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    done: list[bool] = []

    async def uses_anyio() -> None:
        event = anyio.Event()  # needs a current task, as sniffio sees it
        event.set()
        await event.wait()
        await anyio.sleep(0.001)  # a real anyio sleep, on the loop's clock
        done.append(True)

    s.add_once_ms(10, uses_anyio)
    async with s:
        await virtual_clock.advance_ms(20)
    assert done == [True]


async def test_the_eager_host_is_the_current_task_of_a_wake_ups_callbacks_and_of_a_waiting_run(
    virtual_clock: VirtualClock,
) -> None:
    """The dispatcher makes the eager host current once per wake-up (not per run): sync
    callbacks and eager steps of the wake-up all see it, never the scheduler's own task; a
    queued run that starts at the end of the previous one (in that run's task, outside any
    wake-up) sees it too."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: dict[str, list[asyncio.Task[object] | None]] = {"sync": [], "eager": [], "queued": []}
    after: list[bool] = []

    def sync() -> None:
        seen["sync"].append(asyncio.current_task())

    async def eager() -> None:
        seen["eager"].append(asyncio.current_task())

    async def slow() -> None:
        seen["queued"].append(asyncio.current_task())
        await virtual_clock.sleep(0.015)
        after.append(asyncio.current_task() in s._dispatcher._tasks)  # the run's own task

    s.add_every_ms(10, sync, name="sync-1")
    s.add_every_ms(10, eager, name="eager")
    s.add_every_ms(10, sync, name="sync-2")
    s.add_every_ms(10, slow, name="slow", overlap=Overlap.QUEUE)
    async with s:
        await virtual_clock.advance_ms(40)
        eager_runner = s._dispatcher._eager
        assert eager_runner is not None
        host = eager_runner._host
        await s.stop(grace_s=0)
    assert host is not None
    assert len(seen["sync"]) == 8
    assert len(seen["eager"]) == 4
    assert set(seen["sync"]) | set(seen["eager"]) == {host}  # sync ones before the eager too
    # slow's runs: 10 in the wake-up, 25 and 40 (queued) at the end of the one before
    assert len(seen["queued"]) == 3
    assert set(seen["queued"]) == {host}
    assert after
    assert all(after)  # after its first step, each run goes on in a task of its own


async def test_an_error_before_the_first_suspension_is_isolated_and_counted(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    others: list[int] = []

    async def bad() -> None:
        raise RuntimeError("boom")

    t = s.add_every_ms(10, bad, name="bad")
    s.add_every_ms(10, lambda: others.append(1), name="other")
    async with s:
        await virtual_clock.advance_ms(30)
    assert t.errors == 3
    assert others == [1, 1, 1]
    assert "timer 'bad' failed: RuntimeError: boom" in caplog.text


async def test_a_suspended_eager_run_overlaps_like_a_task_run(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    starts: list[int] = []

    async def slow() -> None:
        starts.append(virtual_clock.now_ns() // MS)
        await virtual_clock.sleep(0.025)

    t = s.add_every_ms(10, slow, overlap=Overlap.SKIP)
    async with s:
        await virtual_clock.advance_ms(70)
        await s.stop(grace_s=0)
    assert starts == [10, 40, 70]  # 20 and 30 skipped while the first run went on; 50, 60 too
    assert t.overlaps == 4


async def test_stop_cancels_a_suspended_eager_run_after_the_grace(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    ends: list[str] = []

    async def forever() -> None:
        try:
            await virtual_clock.sleep(3600)
        except BaseException as exc:
            ends.append(type(exc).__name__)
            raise

    s.add_every_ms(10, forever)
    await s.start()
    await virtual_clock.advance_ms(10)
    await s.stop(grace_s=0)
    assert ends == ["CancelledError"]
    assert s._dispatcher._tasks == set()


async def test_timeout_runs_and_eager_false_are_tasks_from_the_start(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    current: list[bool] = []

    async def needs_a_task() -> None:
        async with asyncio.timeout(1):  # binds to the current task: not eager
            current.append(asyncio.current_task() is not None)
            await virtual_clock.sleep(0.001)

    async def too_slow() -> None:
        await virtual_clock.sleep(1)

    s.add_once_ms(10, needs_a_task, eager=False)
    slow = s.add_once_ms(10, too_slow, timeout_s=0.02)
    async with s:
        await virtual_clock.advance_ms(50)
    assert current == [True]
    assert slow.timeouts == 1


async def test_a_big_uniform_batch_of_eager_runs_keeps_every_policy(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """600 coroutine timers of one interval share a uniform bucket: the lean loop starts their
    runs (sampled timing past 256 a batch). Runs that complete, suspend, fail or overlap keep
    their counts and their schedule, mixed with sync timers of the same bucket."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen_current: list[bool] = []

    async def quick() -> None:
        var.set(var.get() + 1)  # a run's context is its own: never leaks into the next run

    async def suspends(tick: aiotimer.Tick) -> None:
        await asyncio.sleep(0)
        seen_current.append(aiotimer.current_timer.get() is tick.timer)

    async def fails() -> None:
        raise ValueError("eager failure")

    async def slow() -> None:
        await virtual_clock.sleep(0.025)

    quicks = [s.add_every_ms(10, quick) for _ in range(200)]
    suspenders = [s.add_every_ms(10, suspends) for _ in range(200)]
    failers = [s.add_every_ms(10, fails) for _ in range(100)]
    slows = [s.add_every_ms(10, slow, overlap=Overlap.SKIP) for _ in range(99)]
    syncs: list[int] = []
    s.add_every_ms(10, lambda: syncs.append(1))
    async with s:
        bucket = s._ms.queue._buckets[10]
        assert s._ms.queue._uniform.get(10) == 10  # the lean loop's bucket
        assert len(bucket) == 600
        await virtual_clock.advance_ms(70)
        await s.stop(grace_s=0)
    assert {t.runs for t in quicks} == {7}
    assert var.get() == 0
    assert {t.runs for t in suspenders} == {7}
    assert seen_current == [True] * 7 * 200
    # past 256 a batch, runs are timed by rotating sample: suspended ones as the others
    timed = sum(t.stats.lateness.count for t in suspenders)
    assert 7 * 200 // 5 <= timed < 7 * 200
    assert {(t.runs, t.errors) for t in failers} == {(7, 7)}
    assert {(t.runs, t.overlaps) for t in slows} == {(3, 4)}  # runs at 10, 40, 70
    assert len(syncs) == 7
    assert s._dispatcher.inflight == 0
    assert sum("eager failure" in r.getMessage() for r in caplog.records) == 7 * 100


async def test_a_returned_interval_holds_whether_the_run_completes_or_suspends(
    virtual_clock: VirtualClock,
) -> None:
    """A returns-interval coroutine's result sets its next interval, from a run that completes
    in the dispatch and from one that finishes in its task; a run that raises keeps the
    interval, and the runs after it (of any timer) still see their own ``current_timer``."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    starts: dict[str, list[int]] = {"quick": [], "suspends": []}
    current: list[bool] = []

    async def quick() -> int:
        starts["quick"].append(virtual_clock.now_ns() // MS)
        current.append(aiotimer.current_timer.get() is q)
        return 30

    async def suspends() -> int:
        starts["suspends"].append(virtual_clock.now_ns() // MS)
        await asyncio.sleep(0)
        current.append(aiotimer.current_timer.get() is w)
        return 20

    async def fails() -> int:
        raise ValueError("no interval")

    f = s.add_every_ms(10, fails, returns_interval=True)
    q = s.add_every_ms(10, quick, returns_interval=True)
    w = s.add_every_ms(10, suspends, returns_interval=True)
    async with s:
        await virtual_clock.advance_ms(75)
        await s.stop(grace_s=0)
    assert starts == {"quick": [10, 40, 70], "suspends": [10, 30, 50, 70]}
    assert current == [True] * 7
    assert (f.runs, f.errors, f.interval) == (7, 7, 10)
    assert (q.interval, w.interval) == (30, 20)


async def test_a_suspended_run_that_returns_when_cancelled_at_stop_ends_as_a_run(
    virtual_clock: VirtualClock,
) -> None:
    """Cancelled at stop, a run that catches the cancellation and returns ends like any run:
    a one-shot finishes, nothing stays in flight."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    ends: list[str] = []

    async def cleans_up() -> str:
        try:
            await virtual_clock.sleep(3600)
        except asyncio.CancelledError:
            ends.append("cleaned up")
        return "done"

    t = s.add_once_ms(10, cleans_up)
    await s.start()
    await virtual_clock.advance_ms(10)
    assert t.running == 1
    await s.stop(grace_s=0)
    assert ends == ["cleaned up"]
    assert t.state is aiotimer.TimerState.FINISHED
    assert (t.running, s._dispatcher.inflight) == (0, 0)
    assert s._dispatcher._tasks == set()


@pytest.mark.parametrize("waits_for", ["a future", "one pass of the loop"])
async def test_a_run_whose_task_is_cancelled_before_its_first_step_still_ends_as_a_run(
    virtual_clock: VirtualClock, waits_for: str
) -> None:
    """Whoever cancels the task of a run that suspended before the task's first step (a stop,
    or code that cancels every task): the coroutine hears it at the ``await`` it suspended in
    (its cleanup runs), the run ends as a run (nothing stays in flight) and the timer runs
    again at its next point."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen: list[str] = []

    async def suspends() -> None:
        try:
            if waits_for == "a future":
                await virtual_clock.sleep(0.005)
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("resumed")

    def cancels_its_task() -> None:  # (the next timer of the batch: before the task's first step)
        (task,) = s._dispatcher._tasks
        task.cancel()

    t = s.add_every_ms(10, suspends, name="a")
    s.add_once_ms(10, cancels_its_task, name="b")
    async with s:
        await virtual_clock.advance_ms(10)
        for _ in range(3):
            await asyncio.sleep(0)
        assert seen == ["cancelled"]
        assert (t.running, s._dispatcher.inflight, s._dispatcher._tasks) == (0, 0, set())
        await virtual_clock.advance_ms(10)
        await virtual_clock.advance_ms(5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert (t.running, t.state) == (0, aiotimer.TimerState.ACTIVE)
    assert seen == ["cancelled", "resumed"]
    assert (t.runs, t.stats.errors) == (2, 0)


async def test_a_run_waiting_for_a_future_hears_how_it_ended_as_a_task_run_would(
    virtual_clock: VirtualClock,
) -> None:
    """The future an eager run suspended on is the task's to wait for: its result, or its
    exception, reaches the coroutine at its ``await``; one it lets through is the run's
    failure (counted, isolated), and the timer goes on."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    futures: list[asyncio.Future[str]] = []
    seen: list[str] = []

    async def waits() -> None:
        future = asyncio.get_running_loop().create_future()
        futures.append(future)
        try:
            seen.append(await future)
        except ValueError as exc:
            seen.append(f"caught {exc}")
            if str(exc) == "second":
                raise

    t = s.add_every_ms(10, waits, name="t")
    async with s:
        for outcome in ("result", "first", "second", "last"):
            await virtual_clock.advance_ms(10)
            if outcome == "result" or outcome == "last":
                futures[-1].set_result(outcome)
            else:
                futures[-1].set_exception(ValueError(outcome))
            for _ in range(3):
                await asyncio.sleep(0)
            assert t.running == 0
    assert seen == ["result", "caught first", "caught second", "last"]
    assert (t.runs, t.stats.errors) == (4, 1)


async def test_a_run_that_yields_to_the_loop_once_goes_on_in_the_next_pass(
    virtual_clock: VirtualClock,
) -> None:
    """``await asyncio.sleep(0)`` in an eager run asks for one pass of the loop, as in a task:
    the run goes on in the pass after the dispatch, before what the dispatch scheduled after it
    (not a pass later)."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    order: list[str] = []

    async def yields_once() -> None:
        order.append("before")
        await asyncio.sleep(0)
        order.append("resumed")

    def schedules_after_it() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: (order.append("soon"), loop.call_soon(order.append, "later")))

    t = s.add_once_ms(10, yields_once, name="a")
    s.add_once_ms(10, schedules_after_it, name="b")
    async with s:
        await virtual_clock.advance_ms(10)
        for _ in range(5):
            await asyncio.sleep(0)
    assert order == ["before", "resumed", "soon", "later"]
    assert t.state is aiotimer.TimerState.FINISHED


async def test_runs_that_suspend_one_after_another_each_see_only_their_own_timer_and_context(
    virtual_clock: VirtualClock,
) -> None:
    """A run that suspended and returned leaves its driver for the next run that suspends
    (``_eager.SPARE_DRIVERS``): each later run still sees its own ``current_timer`` and a
    context of its own, before and after its first suspension, whatever ran there before."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[tuple[str, str, str, str]] = []

    def make(name: str) -> aiotimer.Timer:
        async def run(tick: aiotimer.Tick) -> str:
            timer = aiotimer.current_timer.get()
            assert timer is not None
            before = var.get()
            var.set(f"{name}@{tick.ticks_raw}")
            await virtual_clock.sleep(0.003)
            after = aiotimer.current_timer.get()
            assert after is timer
            seen.append((name, before, timer.name, var.get()))
            return name

        return s.add_every_ms(10, run, name=name)

    timers = [make(f"t{i}") for i in range(5)]
    drivers: list[set[int]] = []
    async with s:
        runner = s._dispatcher._eager
        assert runner is not None
        idle: list[object] = []  # (held: their ids stay theirs)
        await virtual_clock.advance_ms(5)
        for _ in range(5):
            await virtual_clock.advance_ms(10)  # all five suspended and returned: all idle
            idle += [runner._driver, *runner._spare]
            drivers.append({id(runner._driver), *map(id, runner._spare)})
    # The first round made a driver per run that suspended; the later ones reused them.
    assert len(drivers[0]) == 1 + 5
    assert all(d == drivers[0] for d in drivers), [len(d) for d in drivers]
    assert len(seen) == 5 * 5
    assert all(before == "unset" for _, before, _, _ in seen)  # nothing left from another run
    assert all(name == timer for name, _, timer, _ in seen)
    assert all(value.startswith(f"{name}@") for name, _, _, value in seen)
    assert [t.runs for t in timers] == [5] * 5
    assert all(t.stats.errors == 0 for t in timers)


async def test_a_spare_driver_holds_no_coroutine_and_closing_an_ended_run_touches_none(
    virtual_clock: VirtualClock,
) -> None:
    """The driver a returned run leaves behind holds nothing of it (its coroutine is freed at
    once), and closing that run's coroutine object afterwards (``task.get_coro().close()``)
    does not close the driver later runs use."""
    import weakref

    s = aiotimer.Scheduler(clock=virtual_clock)
    resumed: list[int] = []

    async def suspends() -> None:
        await virtual_clock.sleep(0.003)
        resumed.append(1)

    t = s.add_every_ms(10, suspends, name="t")
    async with s:
        await virtual_clock.advance_ms(10)
        (task,) = s._dispatcher._tasks
        rest = task.get_coro()
        rest_of = rest.cr_await  # type: ignore[union-attr]  # (_eager._resumed, in flight)
        coro = weakref.ref(rest_of.gi_frame.f_locals["driver"].gi_yieldfrom)
        await virtual_clock.advance_ms(5)  # returned: its driver is spare
        del task, rest_of
        assert coro() is None  # nothing holds the ended coroutine
        rest.close()  # type: ignore[union-attr]  # (an ended run: nothing to close)
        await virtual_clock.advance_ms(20)  # the next runs suspend and resume on the drivers
    assert resumed == [1, 1, 1]
    assert t.stats.errors == 0
