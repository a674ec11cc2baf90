"""Per-timer policies, each specified by a virtual-time timeline (ms from start)."""

from __future__ import annotations

import logging

import anyio
import pytest
from timeline import MS, ms

import aiotimer
from aiotimer import Missed, Overlap
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


def stall_at(clock: VirtualClock, at_ms: int, until_ms: int) -> aiotimer.TimerSpec:
    """A one-shot that blocks the loop from ``at_ms`` to ``until_ms``."""
    return aiotimer.TimerSpec(
        lambda: clock.spend((until_ms - at_ms) / 1000),
        at_ms,
        aiotimer.Unit.MS,
        aiotimer.Kind.ONESHOT,
    )


async def run_with_stall(clock: VirtualClock, missed: Missed, **options: object) -> list[str]:
    """period 100 ms, loop blocked from 120 to 390 ms, run until 600 ms."""
    s = aiotimer.Scheduler(clock=clock)
    runs: list[str] = []
    s.add_every_ms(
        100,
        lambda t: runs.append(f"{ms(clock)}" + (f"m{t.missed}" if t.missed else "")),
        missed=missed,
        **options,  # type: ignore[arg-type]
    )
    s.add(stall_at(clock, 120, 390))
    async with s:
        await clock.advance_ms(600)
    return runs


async def test_missed_skip_runs_once_then_realigns(virtual_clock: VirtualClock) -> None:
    """grid:  |100 |200 |300 |400 |500 |600
    SKIP:     |100        390  |400 |500 |600    the 390 run is 200's, 300 merged (missed=1)"""
    runs = await run_with_stall(virtual_clock, Missed.SKIP)
    assert runs == ["100", "390m1", "400", "500", "600"]


async def test_missed_burst_replays_each_missed_point(virtual_clock: VirtualClock) -> None:
    """BURST:  |100   390,390 |400 |500 |600    200's and 300's runs back to back"""
    runs = await run_with_stall(virtual_clock, Missed.BURST)
    assert runs == ["100", "390", "390", "400", "500", "600"]


async def test_missed_burst_is_bounded_by_max_catchup(virtual_clock: VirtualClock) -> None:
    """loop blocked 120..1050: grid points 200..1000 (9) passed. 200 runs late, max_catchup=2
    replays 900's and 1000's runs, the other 6 are missed:  |100  1050,1050,1050 |1100"""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: list[str] = []
    t = s.add_every_ms(
        100,
        lambda tk: runs.append(f"{ms(virtual_clock)}m{tk.missed}"),
        missed=Missed.BURST,
        max_catchup=2,
    )
    s.add(stall_at(virtual_clock, 120, 1050))
    async with s:
        await virtual_clock.advance_ms(1100)
    assert runs == ["100m0", "1050m6", "1050m0", "1050m0", "1100m0"]
    assert t.missed == 6


async def test_missed_delay_restarts_the_grid_from_the_late_run(
    virtual_clock: VirtualClock,
) -> None:
    """DELAY:  |100        390   |490 |590      Kamailio's basic-timer behaviour"""
    runs = await run_with_stall(virtual_clock, Missed.DELAY)
    assert runs == ["100", "390m1", "490", "590"]


async def test_runs_plus_missed_is_the_number_of_grid_points(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(100, lambda: None)
    s.add(stall_at(virtual_clock, 120, 790))
    async with s:
        await virtual_clock.advance_ms(1000)
    assert t.runs + t.missed == 10


async def overlap_timeline(
    clock: VirtualClock, overlap: Overlap
) -> tuple[list[str], aiotimer.Timer]:
    """period 100 ms, each run takes 260 ms; record start times until 650 ms."""
    s = aiotimer.Scheduler(clock=clock)
    starts: list[str] = []

    async def slow() -> None:
        starts.append(str(ms(clock)))
        await clock.sleep(0.26)

    t = s.add_every_ms(100, slow, overlap=overlap)
    async with s:
        await clock.advance_ms(650)
        await s.stop(grace_s=0)  # runs in flight sleep on the clock: no grace to wait for
    return starts, t


async def test_overlap_skip(virtual_clock: VirtualClock) -> None:
    """SKIP:  |100=========360  |400=========660   200, 300, 500, 600 skipped (counted)"""
    starts, t = await overlap_timeline(virtual_clock, Overlap.SKIP)
    assert starts == ["100", "400"]
    assert t.overlaps == 4


async def test_overlap_queue(virtual_clock: VirtualClock) -> None:
    """QUEUE: |100=====360|360=====620|620...  200's run waits for 100's, 400's for 200's;
    300, 500 and 600 find a run already waiting and are skipped"""
    starts, t = await overlap_timeline(virtual_clock, Overlap.QUEUE)
    assert starts == ["100", "360", "620"]
    assert t.overlaps == 3


async def test_overlap_concurrent(virtual_clock: VirtualClock) -> None:
    """CONCURRENT(2): 100 and 200 run together; 300 skipped (2 running); 400 and 500 start
    (100's and 200's ended at 360 and 460); 600 skipped."""
    starts, t = await overlap_timeline(virtual_clock, Overlap.CONCURRENT(2))
    assert starts == ["100", "200", "400", "500"]
    assert t.overlaps == 2


async def test_coroutine_timeout_cancels_and_counts(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    events: list[str] = []
    errors: list[BaseException] = []

    async def hangs() -> None:
        events.append(f"start {ms(virtual_clock)}")
        try:
            await virtual_clock.sleep(10)
        except anyio.get_cancelled_exc_class():
            events.append(f"cancelled {ms(virtual_clock)}")
            raise

    t = s.add_every_s(1, hangs, timeout_s=0.25, on_error=lambda timer, exc: errors.append(exc))
    async with s:
        await virtual_clock.advance(2.5)
    assert events == ["start 1000", "cancelled 1250", "start 2000", "cancelled 2250"]
    assert t.timeouts == 2
    assert all(isinstance(e, TimeoutError) for e in errors)
    assert len(errors) == 2


async def test_sync_callback_in_a_thread_runs_off_the_loop(virtual_clock: VirtualClock) -> None:
    import threading

    s = aiotimer.Scheduler(clock=virtual_clock)
    threads: list[str] = []
    s.add_every_ms(10, lambda: threads.append(threading.current_thread().name), thread=True)
    async with s:
        await virtual_clock.advance_ms(30)
    assert len(threads) == 3
    assert threading.main_thread().name not in threads


async def test_a_thread_run_reaches_the_loop_through_anyio_from_thread(
    virtual_clock: VirtualClock,
) -> None:
    """The documented way for a thread=True callback to change timers: anyio.from_thread."""
    import anyio.from_thread

    s = aiotimer.Scheduler(clock=virtual_clock)
    other = s.add_every_ms(5, lambda: None, name="other")
    seen: list[aiotimer.TimerState] = []

    def blocking() -> None:
        anyio.from_thread.run_sync(other.pause)
        seen.append(anyio.from_thread.run_sync(lambda: other.state))

    once = s.add_once_ms(10, blocking, thread=True, name="blocking")
    async with s:
        await virtual_clock.advance_ms(20)
    assert seen == [aiotimer.TimerState.PAUSED]
    assert once.errors == 0


async def test_thread_overrun_is_reported_and_counted(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread cannot be killed: a run that takes 80 ms with timeout_s=0.05 completes, and is
    reported and counted as a timeout. (Time stands still for the loop while a thread holds
    the virtual clock; the thread itself spends the 80 ms.)"""
    s = aiotimer.Scheduler(clock=virtual_clock)
    finished: list[int] = []

    def slow_db() -> None:
        virtual_clock.spend(0.08)
        finished.append(ms(virtual_clock))

    t = s.add_every_ms(100, slow_db, thread=True, timeout_s=0.05, name="slowdb")
    async with s:
        await virtual_clock.advance_ms(250)
    assert finished == [180, 280]
    assert t.timeouts == 2
    assert "timer 'slowdb': run ran after 80.0 ms, past its timeout_s=0.05" in caplog.text


@pytest.mark.slow
async def test_thread_still_running_past_its_timeout_is_reported_while_it_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real time: the report comes at the timeout, while the thread still runs."""
    import time

    s = aiotimer.Scheduler()
    reported_at: list[float] = []
    s.add_once_ms(
        10,
        lambda: time.sleep(0.4),
        thread=True,
        timeout_s=0.05,
        name="stuck",
        on_error=lambda timer, exc: reported_at.append(time.monotonic()),
    )
    async with s:
        started = time.monotonic()
        await anyio.sleep(0.6)
    assert "timer 'stuck': run is still running after" in caplog.text
    assert reported_at
    assert reported_at[0] - started < 0.3


async def test_jitter_stays_within_the_grid_and_never_accumulates(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock, seed=7)
    offsets: list[int] = []
    s.add_every_s(
        1, lambda t: offsets.append(virtual_clock.now_ns() // MS - t.ticks * 1000), jitter_ms=300
    )
    async with s:
        await virtual_clock.advance(1000.5)
    assert len(offsets) == 1000
    assert all(0 <= o < 300 for o in offsets)
    assert len(set(offsets)) > 100  # really random, drawn per run


async def test_max_failures_cancels_after_consecutive_failures(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    outcomes = iter([1, 0, 0, 1, 0, 0, 0, 1])  # 1 = success

    def sometimes() -> None:
        if not next(outcomes):
            raise RuntimeError("down")

    t = s.add_every_ms(10, sometimes, max_failures=3, name="probe")
    async with s:
        await virtual_clock.advance_ms(100)
    assert t.state is aiotimer.TimerState.CANCELLED
    assert t.runs == 7
    assert t.errors == 5
    assert "cancelled after 3 consecutive failures" in caplog.text


async def test_scheduler_on_error_hook_gets_every_failure(virtual_clock: VirtualClock) -> None:
    seen: list[tuple[str, str]] = []

    def hook(timer: aiotimer.Timer, exc: BaseException) -> None:
        seen.append((timer.name, str(exc)))
        raise RuntimeError("hooks may fail too")  # logged, never propagated

    s = aiotimer.Scheduler(clock=virtual_clock, on_error=hook)

    def bad() -> None:
        raise ValueError("nope")

    s.add_every_ms(10, bad, name="bad")
    async with s:
        await virtual_clock.advance_ms(20)
    assert seen == [("bad", "nope"), ("bad", "nope")]


async def test_loop_block_watchdog_names_the_timer(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock, block_warn_s=0.05)
    t = s.add_every_ms(100, lambda: virtual_clock.spend(0.08), name="hog")
    s.add_every_ms(100, lambda: virtual_clock.spend(0.01), name="fine")
    with caplog.at_level(logging.WARNING, logger="aiotimer"):
        async with s:
            await virtual_clock.advance_ms(100)
    assert t.stats.loop_blocks == 1
    assert "timer 'hog' blocked the event loop for 80.0 ms" in caplog.text
    assert "'fine'" not in caplog.text


async def test_a_returns_interval_timer_follows_its_missed_policy(
    virtual_clock: VirtualClock,
) -> None:
    """returns_interval with DELAY, period 100 ms, loop blocked from 120 to 390 ms:
    grid:   |100  |200  |300  |400
    runs:   |100        390   |490 |590      (the grid restarts from the late run)"""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: list[int] = []

    def handler() -> None:
        runs.append(ms(virtual_clock))

    s.add_every_ms(100, handler, returns_interval=True, missed=Missed.DELAY)
    s.add(stall_at(virtual_clock, 120, 390))
    async with s:
        await virtual_clock.advance_ms(600)
    assert runs == [100, 390, 490, 590]


@pytest.mark.slow
async def test_thread_runs_fail_in_isolation_see_their_timer_and_stop_waits_for_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """thread=True without a timeout (on asyncio: the executor's future, no task): a failing
    run is counted and keeps its schedule, a run sees its timer as current_timer, stop()
    waits for a run within the grace, and reports one it could not wait for. Real threads and
    the real clock: generous bounds."""
    import threading

    release = threading.Event()
    current: list[aiotimer.Timer | None] = []

    def fails() -> None:
        raise ValueError("thread failure")

    def blocks() -> str:
        current.append(aiotimer.current_timer.get())
        release.wait(5)
        return "done"

    s = aiotimer.Scheduler()
    failing = s.add_every_ms(20, fails, thread=True, name="fails")
    blocking = s.add_once_ms(10, blocks, thread=True, name="blocks")
    await s.start()
    with anyio.fail_after(10):
        while failing.runs < 3 or blocking.running != 1:  # noqa: ASYNC110 (no event to wait on)
            await anyio.sleep(0.01)
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.stop, 5.0)
            await anyio.sleep(0.1)
            assert s.running or blocking.running == 1  # stop waits for the thread run
            release.set()
    assert failing.errors == failing.runs >= 3
    assert current == [blocking]
    assert (blocking.state, blocking.runs, blocking.running) == (
        aiotimer.TimerState.FINISHED,
        1,
        0,
    )
    assert "stopping with thread runs still going" not in caplog.text

    release.clear()
    s2 = aiotimer.Scheduler()
    stuck = s2.add_once_ms(10, blocks, thread=True, name="stuck")
    await s2.start()
    with anyio.fail_after(10):
        while stuck.running != 1:  # noqa: ASYNC110 (no event to wait on)
            await anyio.sleep(0.01)
        await s2.stop(grace_s=0.05)  # returns: the thread cannot be killed, it is reported
    assert "'stuck' x1" in caplog.text
    release.set()
    await anyio.sleep(0.05)  # it ends on its own; its result is dropped
