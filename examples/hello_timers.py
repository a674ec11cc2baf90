"""A few millisecond and second timers for a few seconds, printing what fired.

python examples/hello_timers.py [--seconds 5]

Ctrl-C stops it early: the timers stop, it says "interrupted" and exits with code 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiotimer

scheduler = aiotimer.Scheduler(name="hello")
fired: dict[str, int] = {}


@scheduler.every_ms(250)
def quarter(tick: aiotimer.Tick) -> None:
    fired["every 250 ms"] = fired.get("every 250 ms", 0) + 1


@scheduler.every_s(1, name="heartbeat")
async def heartbeat(tick: aiotimer.Tick) -> None:
    late_ms = (scheduler.clock.now_ns() - tick.scheduled_ns) / 1e6
    print(f"[{tick.ticks:>3} s] heartbeat, {late_ms:.2f} ms late; so far: {fired}")


def adaptive(tick: aiotimer.Tick) -> int:
    """Kamailio's timer_ln contract: the return value is the next interval (here: slower)."""
    fired["adaptive"] = fired.get("adaptive", 0) + 1
    return min(tick.timer.interval * 2, 2000)


async def main(seconds: float) -> None:
    scheduler.add_every_ms(100, adaptive, returns_interval=True, name="adaptive")
    scheduler.add_once_s(2, lambda: print("one-shot after 2 s"))
    async with scheduler:
        await asyncio.sleep(seconds)
    for name, stats in scheduler.stats().timers.items():
        p99 = stats.lateness.p99_s
        lateness = f"p99 lateness {p99 * 1e3:.2f} ms" if p99 is not None else "no runs"
        print(f"{name:>12}: {stats.runs} runs, {lateness}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    try:
        asyncio.run(main(parser.parse_args().seconds))
    except KeyboardInterrupt:  # Ctrl-C: the timers were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
