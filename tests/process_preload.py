"""A parent process for ``test_process_start``, run by path (so that it is a ``__main__`` with a
file, as an application's script is): starts a worker with the default context whose timers live
in this script and in ``process_targets``, prints what the worker reports as one JSON line, and
stops."""

from __future__ import annotations

import json
import os

import anyio
import process_targets as pt

import aiotimer
from aiotimer.process import TimerProcess, attach, send_to_parent

IMPORTED_BY = os.getpid()
"""The process that ran this script: the parent, then a fork server that preloaded it."""


def report_main(tick: aiotimer.Tick) -> None:
    if tick.timer.runs == 1:
        send_to_parent(("main", IMPORTED_BY))


async def main() -> None:
    reports: dict[str, object] = {}
    both = anyio.Event()

    def collect(info: object, obj: tuple[object, ...]) -> None:
        reports[str(obj[0])] = obj[1:]
        if len(reports) == 2:
            both.set()

    proc = TimerProcess("preload-check")
    proc.add_every_ms(5, report_main)
    proc.add_every_ms(5, pt.report_parent)
    proc.on_message(collect)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    with anyio.fail_after(30):
        await scheduler.start()
        await both.wait()
    await scheduler.stop()
    print(json.dumps({"pid": os.getpid(), "context": proc.context, **reports}), flush=True)


if __name__ == "__main__":
    anyio.run(main)
