"""Node processes for the cluster drills: each runs a :class:`Cluster` service on its own
scheduler, offers it the cluster runs due at every point of an epoch-anchored wall-clock grid
(what the scheduler's run gate does), and appends what it ran to a file of its own.

Everything here is module-level: nodes are spawned. Each line of a node's file is JSON:
``["up", node, wall_ns]``, ``["run", node, timer, instant_ms, wall_ns]`` (written and flushed
*before* the run's work, so a node killed mid-run still shows it),
``["done", node, timer, instant_ms, wall_ns]`` and at a clean exit ``["stats", node, {...}]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiotimer
from aiotimer.cluster import Outcome
from aiotimer.cluster._cluster import Cluster


class OffsetClock:
    """The real monotonic clock with a wall clock ``offset_ns`` off the host's (a node whose
    clock is wrong)."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    async def sleep_until(self, deadline_ns: int) -> None:
        await asyncio.sleep(max(0, deadline_ns - time.monotonic_ns()) / 1e9)

    def hold(self) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass
class DrillRun:
    """One cluster run offered to the service (the gate's run, as the drill drives it)."""

    timer_name: str
    instant_ms: int
    node: str
    out: IO[str]
    cluster: Cluster
    work_s: float

    def start(self) -> None:
        _write(self.out, ["run", self.node, self.timer_name, self.instant_ms, time.time_ns()])
        asyncio.get_running_loop().create_task(self._work())

    def skip(self) -> None:
        pass

    async def _work(self) -> None:
        started = time.perf_counter_ns()
        await asyncio.sleep(self.work_s)
        _write(self.out, ["done", self.node, self.timer_name, self.instant_ms, time.time_ns()])
        self.cluster.finished(
            self.timer_name, self.instant_ms, Outcome.OK, time.perf_counter_ns() - started
        )


def _write(out: IO[str], record: list[Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def grid_points(interval_ms: int, start_ms: int, stop_ms: int) -> Iterator[int]:
    first = -(-start_ms // interval_ms) * interval_ms
    yield from range(first, stop_ms, interval_ms)


def node_main(
    url: str,
    cluster_name: str,
    node: str,
    timers: list[str],
    interval_ms: int,
    start_ms: int,
    stop_ms: int,
    out_path: str,
    options: dict[str, Any],
) -> None:
    """Run one node until its wall clock reaches ``stop_ms``; grid points from ``start_ms``."""
    with Path(out_path).open("a", encoding="utf-8") as out:
        asyncio.run(
            _node(url, cluster_name, node, timers, interval_ms, start_ms, stop_ms, out, options)
        )


async def _node(
    url: str,
    cluster_name: str,
    node: str,
    timers: list[str],
    interval_ms: int,
    start_ms: int,
    stop_ms: int,
    out: IO[str],
    options: dict[str, Any],
) -> None:
    options = dict(options)
    clock = OffsetClock(int(options.pop("wall_offset_s", 0) * 1e9))
    work_s = options.pop("work_s", 0.0)
    cluster = Cluster(url, name=cluster_name, node=node, **options)
    scheduler = aiotimer.Scheduler(clock=clock, name=node)
    scheduler.add_service(cluster)
    async with scheduler:
        _write(out, ["up", node, time.time_ns()])
        while True:
            # The next grid point of this node's wall clock (never an old one: a node that
            # was stopped resumes at the current point, as the scheduler's SKIP does).
            now_ms = clock.wall_ns() // 1_000_000
            instant = -(-max(now_ms + 1, start_ms) // interval_ms) * interval_ms
            if instant >= stop_ms:
                break
            await asyncio.sleep((instant * 1_000_000 - clock.wall_ns()) / 1e9)
            cluster.offer([DrillRun(t, instant, node, out, cluster, work_s) for t in timers])
        await asyncio.sleep(max(work_s, 0.05) + 0.1)  # let the last claims and runs end
        _write(out, ["stats", node, cluster.stats().as_dict()])


def read_records(paths: list[Path]) -> list[list[Any]]:
    records: list[list[Any]] = []
    for path in paths:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return records
