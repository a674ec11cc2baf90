"""Node processes for the cluster drills: each runs a scheduler with cluster timers (the
epoch-anchored wall-clock grid, gated by a :class:`Cluster` service) and appends what it ran
to a file of its own.

Everything here is module-level: nodes are spawned. A node runs until the drill's stop file
(written once every node is up, see :func:`wait_up`) names a wall time (``stop_ms``, on the
host's clock) and that time has come. Each line of a node's file is JSON:
``["up", node, wall_ns]`` (the scheduler and its Cluster started),
``["run", node, timer, instant_ms, wall_ns]`` (written and flushed *before* the run's work, so
a node killed mid-run still shows it),
``["done", node, timer, instant_ms, wall_ns]`` and at a clean exit ``["stats", node, {...}]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any

import aiotimer
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


def _write(out: IO[str], record: list[Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def grid_points(interval_ms: int, start_ms: int, stop_ms: int) -> Iterator[int]:
    first = -(-start_ms // interval_ms) * interval_ms
    yield from range(first, stop_ms, interval_ms)


STOP_POLL_S = 0.02
"""How often a node looks at the stop file."""


def node_main(
    url: str,
    cluster_name: str,
    node: str,
    timers: list[str],
    interval_ms: int,
    stop_path: str,
    out_path: str,
    options: dict[str, Any],
) -> None:
    """Run one node until the host's wall clock reaches the ``stop_ms`` in ``stop_path``."""
    with Path(out_path).open("a", encoding="utf-8") as out:
        asyncio.run(
            _node(url, cluster_name, node, timers, interval_ms, Path(stop_path), out, options)
        )


def write_stop(stop_path: Path, stop_ms: int) -> None:
    """Tell the nodes to stop at ``stop_ms`` (written whole, then renamed: never half read)."""
    tmp = stop_path.with_suffix(".tmp")
    tmp.write_text(str(stop_ms), encoding="utf-8")
    tmp.replace(stop_path)


def _read_stop(stop_path: Path) -> int | None:
    """The stop time in the stop file, ``None`` before the drill wrote it (a tiny local file:
    read on the loop)."""
    try:
        return int(stop_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def wait_up(paths: list[Path], timeout_s: float = 30.0) -> int:
    """Wait until every node file shows its node up; the wall time (ms) the last came up."""
    deadline = time.monotonic() + timeout_s
    while True:
        ups = [r[2] for r in read_records(paths) if r[0] == "up"]
        if len(ups) >= len(paths):
            return max(ups) // 1_000_000
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not up after {timeout_s} s: {len(ups)} of {len(paths)}")
        time.sleep(0.01)


async def _node(
    url: str,
    cluster_name: str,
    node: str,
    timers: list[str],
    interval_ms: int,
    stop_path: Path,
    out: IO[str],
    options: dict[str, Any],
) -> None:
    options = dict(options)
    clock = OffsetClock(int(options.pop("wall_offset_s", 0) * 1e9))
    work_s = options.pop("work_s", 0.0)
    cluster = Cluster(url, name=cluster_name, node=node, **options)
    scheduler = aiotimer.Scheduler(clock=clock, name=node)

    async def job(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        instant = round(tick.wall.timestamp() * 1000)
        # Written before the work: a node killed mid-run still shows the run.
        _write(out, ["run", node, tick.timer.name, instant, time.time_ns()])
        if work_s:
            await asyncio.sleep(work_s)
        _write(out, ["done", node, tick.timer.name, instant, time.time_ns()])

    for timer in timers:
        scheduler.add_every_ms(interval_ms, job, name=timer, cluster=True)
    scheduler.add_service(cluster)
    async with scheduler:
        _write(out, ["up", node, time.time_ns()])
        while True:  # (another process writes the stop file: polled)
            stop_ms = _read_stop(stop_path)
            if stop_ms is not None:
                break
            await asyncio.sleep(STOP_POLL_S)
        await asyncio.sleep(max(0.0, (stop_ms - time.time_ns() // 1_000_000) / 1000))
    stats = cluster.stats().as_dict()
    # How many grid points each timer missed here (a stall of an interval or more: Missed.SKIP).
    stats["missed"] = {name: t.missed for name, t in scheduler.stats().timers.items()}
    _write(out, ["stats", node, stats])


def read_records(paths: list[Path]) -> list[list[Any]]:
    records: list[list[Any]] = []
    for path in paths:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return records
