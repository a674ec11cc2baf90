"""The floors under a worker's start: ``python -m benchmarks.spawn_floor [RUNS [METHOD]]``.

A ``spawn`` child re-imports its parent's main module, so this runs as a program of its own
that imports only the standard library (``benchmarks.process`` runs it with ``-c``, so that no
main module is imported again): what it measures is the machine, not aiotimer nor the benchmark
that asks. Prints one JSON object of medians in milliseconds, from ``Process.start()`` to the
child's first message:

* ``bare``: a spawned child reports at once (an interpreter and multiprocessing's bootstrap);
* ``loop``: a spawned child first starts an asyncio event loop (uvloop where installed), the
  least a worker with its own loop can cost;
* with METHOD ``forkserver``, ``forkserver_bare`` / ``forkserver_loop``: the same, forked by a
  warm fork server that preloaded this module, asyncio and uvloop.

The first start of either method, which boots multiprocessing's resource tracker or the fork
server, is not counted.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

_MODULE = __spec__.name if __spec__ is not None else __name__
"""This module's importable name, also when run as ``__main__``: the fork server preloads it."""


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


def measure(target: Callable[[Any], None], runs: int, method: str = "spawn") -> float:
    """Median milliseconds from ``start()`` to ``target``'s first message."""
    ctx: Any = multiprocessing.get_context(method)
    samples: list[float] = []
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
    method = sys.argv[2] if len(sys.argv) > 2 else "spawn"
    floors = {}
    if method == "spawn":
        measure(bare, 1)  # boots the resource tracker
        floors = {"bare": measure(bare, runs), "loop": measure(loop, runs)}
    elif method in multiprocessing.get_all_start_methods():
        multiprocessing.set_forkserver_preload([_MODULE, "asyncio", "uvloop"])
        measure(bare, 1, method)  # boots the server
        floors["forkserver_bare"] = measure(bare, runs, method)
        floors["forkserver_loop"] = measure(loop, runs, method)
    print(json.dumps(floors))


if __name__ == "__main__":
    main()
