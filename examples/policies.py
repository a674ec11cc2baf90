"""Every timing policy on a virtual clock: prints the timeline each one produces.

    python examples/policies.py

A 100 ms timer whose loop is blocked from 120 to 390 ms (missed-tick policies), and a 100 ms
coroutine whose runs take 260 ms (overlap policies). Virtual time: runs in milliseconds.
"""

from __future__ import annotations

import asyncio

import aiotimer
from aiotimer import Missed, Overlap
from aiotimer.testing import VirtualClock


async def missed_timeline(policy: Missed) -> list[int]:
    clock = VirtualClock()
    s = aiotimer.Scheduler(clock=clock)
    runs: list[int] = []
    s.add_every_ms(100, lambda: runs.append(clock.now_ns() // 1_000_000), missed=policy)
    s.add_once_ms(120, lambda: clock.spend(0.27))  # a sync callback that blocks 270 ms
    async with s:
        await clock.advance_ms(600)
    return runs


async def overlap_timeline(policy: Overlap) -> list[int]:
    clock = VirtualClock()
    s = aiotimer.Scheduler(clock=clock)
    starts: list[int] = []

    async def slow() -> None:
        starts.append(clock.now_ns() // 1_000_000)
        await clock.sleep(0.26)

    s.add_every_ms(100, slow, overlap=policy)
    async with s:
        await clock.advance_ms(650)
        await s.stop(grace_s=0)
    return starts


async def main() -> None:
    print("missed-tick policy (period 100 ms, loop blocked 120..390 ms): run times in ms")
    for missed in Missed:
        print(f"  {missed.name:<6} {await missed_timeline(missed)}")
    print("overlap policy (period 100 ms, each run takes 260 ms): start times in ms")
    for overlap in (Overlap.SKIP, Overlap.QUEUE, Overlap.CONCURRENT(2)):
        print(f"  {overlap!r:<24} {await overlap_timeline(overlap)}")


if __name__ == "__main__":
    asyncio.run(main())
