"""A parent process for ``test_process_real``: starts two workers, prints their pids as a JSON
line, then waits to be killed (the test SIGKILLs it and checks that the workers follow)."""

from __future__ import annotations

import json
import sys

import anyio
import process_targets as pt

import aiotimer
from aiotimer.process import TimerProcess, attach


async def main(context: str) -> None:
    proc = TimerProcess("orphan-check", workers=2, context=context)  # type: ignore[arg-type]
    proc.add_every_ms(50, pt.noop, name="n")
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    await scheduler.start()
    print(json.dumps([w.pid for w in proc.workers]), flush=True)
    await anyio.sleep(30)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "spawn")
