"""Dedicated timer processes: a sync and a basic timer, run by two worker processes.

Run: ``python examples/worker_process.py [seconds]`` (default 3). Ctrl-C stops it early: the
workers are stopped, it says "interrupted" and exits with code 130.

Each worker is a process with its own event loop and Scheduler, started, watched and stopped
by the parent's scheduler. The sync timer stays on its 500 ms grid; the basic one sleeps
500 ms after each run, so it drifts by the 100 ms each run takes (Kamailio's fork_sync_timer
and fork_basic_timer). Callbacks live at module level: workers import them by name.
"""

import sys
import time

import anyio

import aiotimer
from aiotimer.process import TimerProcess, WorkerInfo, current_worker, send_to_parent

cleaner = TimerProcess("cleaner", workers=2, stats_interval_s=0.5)


@cleaner.every_ms(500, name="sync")
def sync_clean(tick: aiotimer.Tick) -> None:
    send_to_parent(("sync", current_worker().index, tick.ticks_raw))


def basic_clean(tick: aiotimer.Tick) -> None:
    time.sleep(0.1)  # slow, blocking work: what a dedicated process is for
    send_to_parent(("basic", current_worker().index, tick.ticks_raw))


cleaner.add_basic_ms(500, basic_clean, name="basic", thread=True)


@cleaner.on_message
def show(worker: WorkerInfo, message: tuple[str, int, int]) -> None:
    kind, _, at_ms = message
    print(f"{worker} (pid {worker.pid}): {kind} timer ran at {at_ms} ms")


async def main(seconds: float) -> None:
    scheduler = aiotimer.Scheduler()
    scheduler.add_process(cleaner)
    async with scheduler:
        await anyio.sleep(seconds)
        for worker in cleaner.stats():
            runs = {} if worker.stats is None else worker.stats.timers
            counts = {name: t.runs for name, t in runs.items()}
            print(f"worker {worker.index}: pid {worker.pid} {worker.state}, runs {counts}")


if __name__ == "__main__":  # required: workers re-import this file
    try:
        anyio.run(main, float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
    except KeyboardInterrupt:  # Ctrl-C: the workers were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
