"""The virtual clock: time moves only when told to, deadline by deadline, or by autojump."""

from __future__ import annotations

import threading

import anyio
import pytest

from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

S = 1_000_000_000


async def test_sleepers_wake_in_deadline_order_at_their_deadline(
    virtual_clock: VirtualClock,
) -> None:
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await virtual_clock.sleep(seconds)
        woke.append((name, virtual_clock.now_ns()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "b", 2)
        tg.start_soon(sleeper, "a", 1)
        tg.start_soon(sleeper, "c", 3)
        await virtual_clock.advance(2.5)
        assert woke == [("a", 1 * S), ("b", 2 * S)]
        assert virtual_clock.now_ns() == int(2.5 * S)
        await virtual_clock.advance(1)
    assert woke[-1] == ("c", 3 * S)


async def test_time_only_moves_forward(virtual_clock: VirtualClock) -> None:
    await virtual_clock.advance(1)
    with pytest.raises(ValueError, match="time only moves forward"):
        await virtual_clock.advance_to(0)
    with pytest.raises(ValueError, match="seconds must be a number >= 0, got -1"):
        await virtual_clock.advance(-1)


async def test_cancelled_sleepers_are_forgotten(virtual_clock: VirtualClock) -> None:
    with anyio.move_on_after(0.01):
        await virtual_clock.sleep(100)  # real-time cancel of a virtual sleep
    assert virtual_clock.sleepers == 0
    assert virtual_clock.next_deadline_ns() is None


async def test_autojump_jumps_to_the_next_deadline_when_idle(
    autojump_clock: VirtualClock,
) -> None:
    await autojump_clock.sleep(3600)
    assert autojump_clock.now_ns() == 3600 * S
    async with anyio.create_task_group() as tg:
        tg.start_soon(autojump_clock.sleep, 10)
        await autojump_clock.sleep(5)
        assert autojump_clock.now_ns() == 3605 * S
    assert autojump_clock.now_ns() == 3610 * S


async def test_time_waits_for_threads_that_hold_the_clock(virtual_clock: VirtualClock) -> None:
    woke: list[int] = []
    release = threading.Event()

    def work() -> None:
        with virtual_clock.hold():
            release.wait(5)

    async def sleeper() -> None:
        await virtual_clock.sleep(1)
        woke.append(virtual_clock.now_ns())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        tg.start_soon(anyio.to_thread.run_sync, work)
        await anyio.sleep(0.05)  # let the thread take the hold

        async def advance() -> None:
            await virtual_clock.advance(2)

        tg.start_soon(advance)
        await anyio.sleep(0.05)
        assert woke == []  # time cannot pass while the thread works
        release.set()
    assert woke == [1 * S]


def test_spend_moves_time_without_waking(virtual_clock: VirtualClock) -> None:
    virtual_clock.spend(0.25)
    assert virtual_clock.now_ns() == S // 4


async def test_wall_clock_follows_virtual_time_and_steps_alone() -> None:
    clock = VirtualClock(start_ns=5, wall_start_ns=1_000 * 10**9)
    assert clock.wall_ns() == 1_000 * 10**9
    await clock.advance(2)
    assert clock.wall_ns() == 1_002 * 10**9
    clock.step_wall(-3600)  # an NTP step back: monotonic time does not move
    assert clock.now_ns() == 5 + 2 * 10**9
    assert clock.wall_ns() == (1_002 - 3600) * 10**9
    clock.set_wall(7)
    assert clock.wall_ns() == 7
    with pytest.raises(ValueError, match="finite"):
        clock.step_wall(float("nan"))
