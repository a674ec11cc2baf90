"""Three node processes share two cluster timers through a SQLite file: each grid point runs
on exactly one node, and when a node dies its timers move to the others.

    python examples/cluster_nodes.py [--seconds 4] [--kill-after 2]

Every node registers the same timers with ``cluster=True`` and attaches a ``Cluster`` on the
same database. Each grid point (every 200 ms, anchored on the Unix epoch) is claimed in the
store: the timer's preferred node (rendezvous hashing over the live nodes) claims at once, the
others 50 ms later, and exactly one wins. ``--kill-after`` SIGKILLs one node mid-way: its
timers carry on elsewhere, late by the backup delay. At the end the parent counts, from what
the nodes reported, how many points ran and how many ran twice (none), and prints the store's
view (``aiotimer cluster sqlite:///...``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiotimer
from aiotimer.cluster import Cluster, open_store
from aiotimer.cluster._report import store_report

INTERVAL_MS = 200
TIMERS = ("purge-sessions", "send-report")


def node_main(url: str, node: str, seconds: float, ran: Any) -> None:
    """One node: a scheduler with the cluster timers and a Cluster service on the store."""

    async def main() -> None:
        scheduler = aiotimer.Scheduler(name=node)

        def job(tick: aiotimer.Tick) -> None:
            assert tick.wall is not None
            print(f"  {node} runs {tick.timer.name:<14} {tick.wall:%H:%M:%S.%f}"[:-3], flush=True)
            ran.put((node, tick.timer.name, round(tick.wall.timestamp() * 1000)))

        for name in TIMERS:
            scheduler.add_every_ms(INTERVAL_MS, job, name=name, cluster=True)
        scheduler.add_service(Cluster(url, node=node, backup_delay_s=0.05, heartbeat_s=0.2))
        async with scheduler:
            await asyncio.sleep(seconds)

    asyncio.run(main())


async def show_store(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        print(await store_report(store, runs_per_timer=2), end="")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--kill-after", type=float, default=2.0, help="0: kill nobody")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite://{Path(tmp) / 'timers.db'}"
        ctx = multiprocessing.get_context("spawn")
        ran = ctx.Queue()
        nodes = {
            name: ctx.Process(target=node_main, args=(url, name, args.seconds, ran))
            for name in ("node-a", "node-b", "node-c")
        }
        print(f"3 nodes, timers {', '.join(TIMERS)} every {INTERVAL_MS} ms, store {url}")
        for proc in nodes.values():
            proc.start()
        if args.kill_after:
            time.sleep(args.kill_after + 1.0)  # the nodes take about a second to start
            victim = nodes["node-a"]
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            print("  -- node-a killed (SIGKILL) --", flush=True)
        for proc in nodes.values():
            proc.join()
        runs: list[tuple[str, str, int]] = []
        while not ran.empty():
            runs.append(ran.get())
        per_point = Counter((timer, instant) for _, timer, instant in runs)
        twice = sum(1 for n in per_point.values() if n > 1)
        by_node = Counter(node for node, _, _ in runs)
        print(f"{len(per_point)} grid points ran, {twice} twice; runs per node: {dict(by_node)}")
        asyncio.run(show_store(url))


if __name__ == "__main__":
    main()
