"""The core under faults (issue 11): each fault once found on the old core, as a regression test.

A timer that silently stops is the worst bug this library can have: these tests drive the core
the way production does (cancel storms inside a batch, absurd values, misbehaving clocks,
restarts) and check that no timer is lost, nothing is run twice and the scheduler survives.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading

import anyio
import anyio.lowlevel
import pytest

import aiotimer
from aiotimer import Missed, TimerState
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

MS = 1_000_000
S = 1_000_000_000


def ms(clock: VirtualClock) -> int:
    return clock.now_ns() // MS


# -- 1. a cancel storm inside a mixed batch ------------------------------------------------------


async def test_a_cancel_storm_inside_a_mixed_batch_loses_no_timer(
    virtual_clock: VirtualClock,
) -> None:
    """1500 timers of 20 ms and 1500 of 10 ms share tick 20; the first 20 ms run cancels every
    10 ms timer (enough discards to compact the queue mid-batch). Every 20 ms timer must go on
    running on its grid, none left active with a deadline in the past."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    runs: dict[int, list[int]] = {}
    b_timers: list[aiotimer.Timer] = []
    storm_done = []

    def a(tick: aiotimer.Tick) -> None:
        runs.setdefault(id(tick.timer), []).append(tick.scheduled_ns // MS)
        if not storm_done:
            storm_done.append(True)
            for t in b_timers:
                t.cancel()

    a_timers = [s.add_every_ms(20, a) for _ in range(1500)]
    b_timers.extend(s.add_every_ms(10, lambda: None) for _ in range(1500))
    async with s:
        await virtual_clock.advance_ms(105)
        now_ns = virtual_clock.now_ns()
        for t in a_timers:
            assert t.state is TimerState.ACTIVE
            assert t.next_deadline_ns is not None
            assert t.next_deadline_ns > now_ns
        assert all(t.state is TimerState.CANCELLED for t in b_timers)
    assert sorted({tuple(r) for r in runs.values()}) == [(20, 40, 60, 80, 100)]
    assert len(runs) == 1500


# -- 2. values that used to kill or spin the scheduler -------------------------------------------


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("add_every_ms", 10**30),
        ("add_every_ms", 1e300),
        ("add_every_ms", 2**64 * 1000),
        ("add_every_s", 10**19),
        ("add_every_s", 2**64 - 1),
        ("add_once_ms", 10**30),
        ("add_once_s", math.inf),
    ],
)
async def test_absurd_intervals_are_refused_at_registration_naming_timer_and_value(
    method: str, value: float
) -> None:
    s = aiotimer.Scheduler()
    with pytest.raises(ValueError, match=r"timer 'huge': .* must be .*, got ") as info:
        getattr(s, method)(value, lambda: None, name="huge")
    assert repr(value) in str(info.value)
    assert not s.timers


async def test_reschedule_and_the_facade_refuse_absurd_intervals_too(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None, name="t")
    with pytest.raises(ValueError, match=r"timer 't': interval_ms must be at most"):
        t.reschedule(2**64 * 1000)
    from aiotimer import kamailio

    tl = kamailio.TimerLn()
    kamailio.timer_init(tl, lambda ticks, tl, data: 0, None)
    with kamailio.use_scheduler(s), pytest.raises(ValueError, match="at most"):
        kamailio.timer_add(tl, 2**64 * 1000)


@pytest.mark.parametrize("timeout_s", [2.0**64, 1e300, math.inf, math.nan, -1, 0])
async def test_absurd_timeouts_are_refused_at_registration(timeout_s: float) -> None:
    s = aiotimer.Scheduler()
    with pytest.raises(ValueError, match=r"timer 'slow': timeout_s must be"):
        s.add_every_ms(10, lambda: None, name="slow", timeout_s=timeout_s)


async def test_a_returned_interval_out_of_range_is_that_runs_error_not_the_schedulers(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    times: list[int] = []
    other: list[int] = []

    def wild() -> float:
        times.append(ms(virtual_clock))
        return 1e300

    s.add_every_ms(10, wild, returns_interval=True, name="wild")
    s.add_every_ms(7, lambda: other.append(ms(virtual_clock)), name="other")
    async with s:
        await virtual_clock.advance_ms(35)
    assert times == [10, 20, 30]  # the bad value is reported; the interval is kept
    assert other == [7, 14, 21, 28, 35]
    assert "timer 'wild' failed: ValueError: timer 'wild': returned interval_ms" in caplog.text


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
async def test_the_longest_interval_arms_the_real_timerfd_and_stop_returns() -> None:
    """Tokio's interval_doesnt_panic_max_duration_when_polling, on the real clock: a timer at
    the upper bound (100 years) sleeps; nothing spins, stop() returns at once."""
    s = aiotimer.Scheduler()
    s.add_every_s(100 * 365 * 86400, lambda: None)
    async with s:
        await anyio.sleep(0.05)
        assert s.stats(timers=False).wakeups <= 1
    assert not s.running


# -- 3. names ------------------------------------------------------------------------------------


async def test_name_bookkeeping_is_freed_with_the_timers(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    async with s:
        for i in range(5000):
            s.add_once_ms(30_000, lambda: None, name=f"call-{i}").cancel()
        for _ in range(5000):
            s.add_every_ms(30_000, lambda: None).cancel()
        assert not s.timers
        assert not s._bases  # nothing kept per distinct name
        assert s.stats(timers=False).timer_count == 0


async def test_default_names_number_from_the_base_again_once_all_are_gone(
    virtual_clock: VirtualClock,
) -> None:
    def job() -> None:
        pass

    s = aiotimer.Scheduler(clock=virtual_clock)
    first, second = s.add_every_ms(10, job), s.add_every_ms(10, job)
    assert (first.name, second.name) == (f"{__name__}.{job.__qualname__}", f"{first.name}#2")
    first.cancel()
    assert s.add_every_ms(10, job).name == f"{first.name}#3"  # live #2 keeps the numbering
    second.cancel()


# -- 4. BURST for coroutine timers ---------------------------------------------------------------


async def test_burst_replays_coroutine_timers_as_it_replays_sync_ones(
    virtual_clock: VirtualClock,
) -> None:
    """After a 200 ms stall, a 10 ms timer with max_catchup=10 runs as often whether its
    callback is sync or a coroutine: catch-up runs wait for the run before them."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    sync_runs: list[int] = []
    async_runs: list[int] = []

    async def coro(tick: aiotimer.Tick) -> None:
        async_runs.append(tick.scheduled_ns // MS)

    s.add_every_ms(
        10, lambda t: sync_runs.append(t.scheduled_ns // MS), missed=Missed.BURST, max_catchup=10
    )
    s.add_every_ms(10, coro, missed=Missed.BURST, max_catchup=10)
    s.add_once_ms(105, lambda: virtual_clock.spend(0.2))
    async with s:
        await virtual_clock.advance_ms(400)
    assert async_runs == sync_runs
    timer = s.get_timer(f"{__name__}.{coro.__qualname__}")
    assert len(sync_runs) == 31  # 40 grid points: 10 replayed (max_catchup), 9 merged
    assert (timer.runs, timer.missed, timer.overlaps) == (31, 9, 0)


# -- 5. misbehaving clocks -----------------------------------------------------------------------


class _SteppingClock:
    """A virtual clock that steps back 5 ms during every callback that asks it to."""

    def __init__(self, inner: VirtualClock) -> None:
        self.inner = inner
        self.back_ns = 0

    def now_ns(self) -> int:
        return self.inner.now_ns() - self.back_ns

    def wall_ns(self) -> int:
        return self.inner.wall_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        await self.inner.sleep_until(deadline_ns + self.back_ns)

    def hold(self) -> object:
        return self.inner.hold()


async def test_a_clock_that_steps_back_during_a_callback_is_reported_once_not_fatal(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _SteppingClock(virtual_clock)
    s = aiotimer.Scheduler(clock=clock)  # type: ignore[arg-type]
    runs: list[int] = []

    def step_back() -> None:
        runs.append(1)
        clock.back_ns += 5 * MS

    s.add_every_ms(10, step_back)
    async with s:
        await virtual_clock.advance_ms(100)
        assert s.running
    assert len(runs) >= 5
    assert caplog.text.count("the clock went back") == 1


class _FloatClock:
    def now_ns(self) -> float:
        return 1.5

    def wall_ns(self) -> int:
        return 0

    async def sleep_until(self, deadline_ns: int) -> None:
        await anyio.lowlevel.checkpoint()

    def hold(self) -> object:
        return threading.Lock()


async def test_a_clock_returning_a_float_is_refused_at_start() -> None:
    s = aiotimer.Scheduler(clock=_FloatClock(), precision="loop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"now_ns\(\) must return an int .* got float 1.5"):
        await s.start()
    assert not s.running


# -- 6. a shared origin aligns grids -------------------------------------------------------------


async def test_schedulers_sharing_an_origin_share_grid_points(virtual_clock: VirtualClock) -> None:
    a = aiotimer.Scheduler(clock=virtual_clock, grid_origin_ns=0)
    b = aiotimer.Scheduler(clock=virtual_clock, grid_origin_ns=0)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    a.add_every_ms(100, lambda: seen["a"].append(ms(virtual_clock)))
    b.add_every_ms(100, lambda: seen["b"].append(ms(virtual_clock)))
    await virtual_clock.advance_ms(5)
    async with a:
        await virtual_clock.advance_ms(37)
        async with b:
            await virtual_clock.advance_ms(400)
    assert seen["a"] == [200, 300, 400]  # first point at or after start + interval: 105 -> 200
    assert seen["b"] == [200, 300, 400]  # started at 42: first point at or after 142 -> 200


async def test_a_shared_origin_aligns_second_timers_and_resumed_timers(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock, grid_origin_ns=0)
    seen: list[int] = []
    t = s.add_every_s(3, lambda: seen.append(ms(virtual_clock)))
    await virtual_clock.advance_ms(1500)
    async with s:
        await virtual_clock.advance(5)  # first point at or after 4.5 s: 6 s
        t.pause()
        await virtual_clock.advance(4)
        t.resume()  # at 10.5 s: the next point of its grid, 12 s
        await virtual_clock.advance(3)
    assert seen == [6000, 12000]


# -- 7. the rest ---------------------------------------------------------------------------------


async def test_a_oneshot_whose_run_stop_cancelled_is_finished_not_rerun(
    virtual_clock: VirtualClock,
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    started: list[int] = []

    async def slow() -> None:
        started.append(ms(virtual_clock))
        await virtual_clock.sleep(60)

    t = s.add_once_ms(10, slow, name="once")
    async with s:
        await virtual_clock.advance_ms(20)
        await s.stop(grace_s=0)
    assert t.state is TimerState.FINISHED
    async with s:
        await virtual_clock.advance_ms(100)
    assert started == [10]


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
async def test_stop_from_another_event_loop_is_refused_not_hung() -> None:
    s = aiotimer.Scheduler()
    await s.start()
    errors: list[BaseException] = []

    def other_loop() -> None:
        try:
            asyncio.run(s.stop())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "another event loop" in str(errors[0])
    await s.stop()


async def test_an_ended_timer_keeps_its_final_stats(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: None, name="t")
    once = s.add_once_ms(15, lambda: None, name="once")
    async with s:
        await virtual_clock.advance_ms(35)
        t.cancel()
    for timer, runs in ((t, 3), (once, 1)):
        stats = timer.stats
        assert stats.runs == runs
        assert stats.last_run_ns is not None
        assert stats.lateness.count == runs
        assert timer.histograms()[0].count == runs
    assert t.stats.state == "cancelled"
    assert once.stats.state == "finished"


async def test_module_level_decorators_take_the_policy_keywords() -> None:
    def job() -> None:
        pass

    aiotimer.every_ms(50, name="policy-kw", missed=Missed.BURST, max_catchup=3)(job)
    try:
        timer = aiotimer.default_scheduler().get_timer("policy-kw")
        assert timer.spec.policy.missed is Missed.BURST
        assert timer.spec.policy.max_catchup == 3
    finally:
        aiotimer.default_scheduler().get_timer("policy-kw").cancel()


async def test_callbacks_that_would_never_run_right_are_refused() -> None:
    async def agen() -> object:
        yield 1

    async def coro() -> None:
        pass

    s = aiotimer.Scheduler()
    with pytest.raises(TypeError, match=r"timer 'g': .*async generator function"):
        s.add_every_ms(10, agen, name="g")
    with pytest.raises(TypeError, match="timer 'c': thread=True is for blocking sync"):
        s.add_every_ms(10, coro, name="c", thread=True)
    for name in (None, "", 3):
        with pytest.raises(TypeError, match="name must be a non-empty str"):
            aiotimer.Scheduler(name=name)  # type: ignore[arg-type]


async def test_fraction_hints_name_a_call_that_works() -> None:
    s = aiotimer.Scheduler()
    with pytest.raises(ValueError, match=r"use add_once_ms\(1500\)"):
        s.add_once_s(1.5, lambda: None)
    with pytest.raises(ValueError, match=r"use every_ms\(250\)"):
        s.add_every_s(0.25, lambda: None)
    with pytest.raises(ValueError, match="the finest grid is 1 ms") as info:
        s.add_every_s(1e-9, lambda: None)
    assert "use" not in str(info.value)


async def test_no_warning_noise_from_the_fixes(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    s = aiotimer.Scheduler(clock=virtual_clock)
    s.add_every_ms(10, lambda: None)
    async with s:
        await virtual_clock.advance_ms(50)
    assert caplog.text == ""


async def test_a_runs_timeout_still_fires_while_the_scheduler_stops(
    virtual_clock: VirtualClock,
) -> None:
    """stop() drains running callbacks within the grace; a draining run's timeout_s must still
    fire then (it used to wait the whole grace: the tick source had stopped)."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    new_runs: list[int] = []

    async def hangs() -> None:
        await virtual_clock.sleep(3600)

    t = s.add_every_ms(100, hangs, timeout_s=0.05)
    s.add_every_ms(10, lambda: new_runs.append(ms(virtual_clock)))
    await s.start()
    await virtual_clock.advance_ms(120)  # the 100 ms run hangs; its timeout is at 150 ms
    runs_before = len(new_runs)
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.stop, 5.0)
        await virtual_clock.advance_ms(40)
    assert not s.running
    assert t.timeouts == 1  # it timed out at 150 ms, within the grace
    assert virtual_clock.now_ns() == 160 * MS  # the stop did not wait out its grace
    assert len(new_runs) == runs_before  # a stopping scheduler starts no run
