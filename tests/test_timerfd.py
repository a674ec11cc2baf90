"""The precise tick source: a Linux timerfd armed at absolute deadlines."""

from __future__ import annotations

import os
import sys
import time

import anyio
import pytest

import aiotimer
from aiotimer._timerfd import timerfd_available
from aiotimer.testing import VirtualClock

linux_only = pytest.mark.skipif(not timerfd_available(), reason="timerfd is Linux-only")


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scheduler 's': precision must be one of .*got 'fast'"):
        aiotimer.Scheduler(name="s", precision="fast")  # type: ignore[arg-type]


def test_timerfd_with_a_virtual_clock_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"precision='timerfd' cannot work: .*needs the MonotonicClock"
    ):
        aiotimer.Scheduler(clock=VirtualClock(), precision="timerfd")


def test_auto_keeps_the_loop_source_on_a_virtual_clock() -> None:
    assert aiotimer.Scheduler(clock=VirtualClock()).precision == "loop"


@linux_only
def test_auto_picks_the_timerfd_on_linux() -> None:
    assert aiotimer.Scheduler().precision == "timerfd"
    assert aiotimer.Scheduler(precision="loop").precision == "loop"


def test_timerfd_where_unavailable_is_refused_and_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiotimer._timerfd as timerfd

    monkeypatch.setattr(timerfd, "timerfd_available", lambda: False)
    with pytest.raises(ValueError, match="timerfd is Linux-only and unavailable"):
        aiotimer.Scheduler(precision="timerfd")
    assert aiotimer.Scheduler(precision="auto").precision == "loop"


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@linux_only
@pytest.mark.anyio
async def test_the_timerfd_is_closed_on_stop_no_leak_across_cycles() -> None:
    s = aiotimer.Scheduler(precision="timerfd")
    s.add_every_ms(1, lambda: None)
    await s.start()
    await s.stop()
    before = open_fds()
    for _ in range(20):
        await s.start()
        assert open_fds() == before + 1
        await anyio.sleep(0.003)
        await s.stop()
    assert open_fds() == before


@linux_only
@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("precision", ["timerfd", "loop"])
async def test_a_1ms_timer_never_fires_early(precision: str) -> None:
    """Real time, 300 ms of a 1 ms timer: every run at or after its grid point."""
    s = aiotimer.Scheduler(precision=precision)  # type: ignore[arg-type]
    late_ns: list[int] = []
    s.add_every_ms(1, lambda t: late_ns.append(time.monotonic_ns() - t.scheduled_ns))
    async with s:
        await anyio.sleep(0.3)
    assert len(late_ns) > 50  # generous: a loaded 2-core CI machine may skip many
    assert min(late_ns) >= 0


def test_timerfd_module_reports_platform() -> None:
    assert timerfd_available() == sys.platform.startswith("linux")


@linux_only
@pytest.mark.anyio
async def test_an_earlier_timer_rearms_the_sleeping_timerfd() -> None:
    """The tick source sleeps on the fd until the 60 s timer; a 20 ms one-shot added then
    re-arms the fd and runs on time (real time, generous bound)."""
    s = aiotimer.Scheduler(precision="timerfd")
    s.add_every_s(60, lambda: None)
    fired = anyio.Event()
    async with s:
        await anyio.sleep(0.01)
        added = time.monotonic()
        s.add_once_ms(20, fired.set)
        with anyio.fail_after(5):
            await fired.wait()
        assert 0.02 <= time.monotonic() - added < 1.0


@linux_only
@pytest.mark.anyio
async def test_an_idle_scheduler_sleeps_on_a_disarmed_timerfd() -> None:
    s = aiotimer.Scheduler(precision="timerfd")
    async with s:
        await anyio.sleep(0.05)
        assert s.stats().wakeups == 0
        fired = anyio.Event()
        s.add_once_ms(5, fired.set)
        with anyio.fail_after(5):
            await fired.wait()


@linux_only
@pytest.mark.anyio
@pytest.mark.parametrize("precision", ["timerfd", "loop"])
async def test_an_error_out_of_a_wake_up_ends_the_scheduler_with_it(precision: str) -> None:
    """Not a callback's error (a callback's is its own): the scheduler's, out of a wake-up.
    Whether the wake-up is the timerfd's callback (asyncio, uvloop) or a task's step (trio,
    the loop source), it comes out of ``serve()`` and the scheduler stops: it does not go on
    half-broken, nor hang."""
    s = aiotimer.Scheduler(precision=precision)  # type: ignore[arg-type]
    runs: list[int] = []
    s.add_every_ms(5, lambda: runs.append(1))

    def broken(now_ns: int) -> None:
        raise RuntimeError("a broken wake-up")

    async def serve_broken() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(s.serve)
            s._tick_source._on_due = broken  # type: ignore[method-assign]
            await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(BaseExceptionGroup) as caught:
        await serve_broken()
    assert caught.group_contains(RuntimeError, match="a broken wake-up", depth=None)
    assert (runs, s.running) == ([], False)


@linux_only
@pytest.mark.anyio
async def test_a_wake_up_on_the_timerfd_rearms_it_without_a_read_and_never_spins() -> None:
    """On asyncio the fd's callback re-arms it without reading it (re-arming resets its count
    of expiries, so it is not readable until the next deadline): were it left readable, the
    loop would call back at once, over and over. A 20 ms timer for 0.2 s: about 10 wake-ups
    (real time, generous bound)."""
    s = aiotimer.Scheduler(precision="timerfd")
    runs: list[int] = []
    s.add_every_ms(20, lambda: runs.append(1))
    async with s:
        await anyio.sleep(0.2)
        wakeups = s.stats(timers=False).wakeups
    assert len(runs) >= 3
    assert wakeups <= 2 * len(runs) + 5
