"""The floor under a spawned worker's start: ``python -m benchmarks.spawn_floor [RUNS]``.

A ``spawn`` child re-imports its parent's main module, so this runs as a main module of its own
that imports only the standard library: what it measures is the machine, not aiotimer nor the
benchmark that asks. Prints one JSON object of medians in milliseconds, from
``Process.start()`` to the child's first message:

* ``bare``: the child reports at once (an interpreter and multiprocessing's bootstrap);
* ``loop``: the child first starts an asyncio event loop (uvloop where installed), the least a
  worker with its own loop can cost.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def bare(conn: Any) -> None:
    conn.send(time.monotonic_ns())


def loop(conn: Any) -> None:
    import asyncio

    async def report() -> None:
        conn.send(time.monotonic_ns())

    try:
        import uvloop
    except ImportError:
        asyncio.run(report())
    else:
        uvloop.run(report())


def measure(target: Callable[[Any], None], runs: int) -> float:
    """Median milliseconds from ``start()`` to ``target``'s first message."""
    ctx = multiprocessing.get_context("spawn")
    samples = []
    for _ in range(runs):
        ours, theirs = ctx.Pipe()
        t0 = time.monotonic_ns()
        child = ctx.Process(target=target, args=(theirs,))
        child.start()
        samples.append((ours.recv() - t0) / 1e6)
        child.join(10)
        ours.close()
    return statistics.median(samples)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(json.dumps({"bare": measure(bare, runs), "loop": measure(loop, runs)}))


if __name__ == "__main__":
    main()
