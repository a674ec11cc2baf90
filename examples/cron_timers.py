"""Calendar timers through the night clocks go back in Berlin, on a virtual clock.

    pip install 'aiotimer[cron]'
    python examples/cron_timers.py

The virtual wall clock starts at 2026-10-24 23:30 UTC (01:30 CEST) and four virtual hours pass
in milliseconds: the every-30-minutes timer runs in both passes of the repeated 02:xx hour,
the 02:30 timer once. Then the wall clock jumps a day forward (each timer runs once,
``tick.missed`` counts the instants it skipped) and an hour back (nothing runs twice).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiotimer
from aiotimer.testing import VirtualClock

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)  # 01:30 CEST, half an hour before 02:00


def show(tick: aiotimer.Tick) -> None:
    missed = f"  (skipped {tick.missed})" if tick.missed else ""
    print(f"  {tick.timer.name:<12} {tick.wall:%a %H:%M %Z}{missed}")


async def main() -> None:
    clock = VirtualClock(wall_start_ns=int(START.timestamp()) * 1_000_000_000)
    scheduler = aiotimer.Scheduler(clock=clock)
    scheduler.add_every_cron("*/30 * * * *", show, tz="Europe/Berlin", name="half-hourly")
    scheduler.add_every_cron("30 2 * * *", show, tz=BERLIN, name="nightly")
    scheduler.add_at(datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN), show, name="once")
    async with scheduler:
        print("the night of 2026-10-25 in Europe/Berlin (03:00 CEST -> 02:00 CET):")
        await clock.advance(4 * 3600)
        print("the wall clock steps a day forward:")
        clock.step_wall(24 * 3600)
        await clock.advance(30 * 60)
        print("the wall clock steps an hour back (no instant runs twice):")
        clock.step_wall(-3600)
        await clock.advance(60 * 60)
        await scheduler.stop(grace_s=0)


if __name__ == "__main__":
    asyncio.run(main())
