"""The multi-host drill: three "hosts" (network namespaces joined to the store by veth pairs),
one node process each; one host is cut off and healed, another is killed, the store goes away
and comes back. Every run is recorded (node, timer, grid instant) and checked: no grid point
twice, gaps only where the semantics allow them, failover time per event.

Needs root and iproute2 (network namespaces); skipped otherwise. SQLite is one host: its
drill runs the nodes as plain processes and has no partition. Run with ``-s`` to see the
table (the README's closing note quotes it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from cluster_nodes import grid_points, read_records, wait_up, write_stop
from cluster_stores import CuttableProxy, store_url, unique_cluster

from aiotimer.cluster import open_store, preferred_node

# The drills' hosts use fixed subnets (10.201.200-202.0/24): one drill at a time. The suite's
# workers (pytest-xdist, --dist loadfile) each take whole files, so this file's tests run on one,
# one after the other.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="the multi-host drill needs root and iproute2 (network namespaces)",
    ),
]

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
INTERVAL_MS = 100
POINTS = 72  # 7.2 s
SQLITE_POINTS = 25  # SQLite's drill has only the kill (at 1 s)
SETTLE_MS = 500  # from the last node up to the first grid point: each node sees the others
STOP_SLACK_MS = 300  # the nodes run on past the window: its last points are not cut by a stop
TIMERS = [f"job-{i}" for i in range(6)]
NODE_OPTIONS: dict[str, Any] = {
    "heartbeat_s": 0.2,
    "node_ttl_s": 0.8,
    "backup_delay_s": 0.05,
    "store_timeout_s": 0.4,
}
RESULTS: list[list[object]] = []


@dataclass
class Host:
    ns: str | None  # None: the root namespace (SQLite's "one host")
    veth: str | None
    address: str  # where this host reaches the store's proxy


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    tag = uuid.uuid4().hex[:6]
    made: list[Host] = []
    try:
        for i in range(3):
            ns, veth, peer = f"aiot-{tag}-{i}", f"aiot{tag}{i}", f"aiop{tag}{i}"
            subnet = f"10.201.{200 + i}"
            _ip("netns", "add", ns)
            made.append(Host(ns, veth, f"{subnet}.1"))
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"{subnet}.1/24", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{subnet}.2/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            if host.veth:
                subprocess.run(["ip", "link", "del", host.veth], capture_output=True, check=False)
            if host.ns:
                subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, check=False)


def _start_node(
    host: Host, url: str, cluster: str, node: str, stop: Path, out: Path
) -> subprocess.Popen[bytes]:
    args = [url, cluster, node, TIMERS, INTERVAL_MS, str(stop), str(out), NODE_OPTIONS]
    code = (
        "import json, sys\nfrom cluster_nodes import node_main\nnode_main(*json.loads(sys.argv[1]))"
    )
    prefix = ["ip", "netns", "exec", host.ns] if host.ns else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    # `ip netns exec` execs the interpreter: the pid is the node's, for SIGKILL.
    return subprocess.Popen([*prefix, sys.executable, "-c", code, json.dumps(args)], env=env)


async def _at(wall_ms: int) -> None:
    await anyio.sleep(max(0.0, (wall_ms - time.time_ns() // 1_000_000) / 1000))


def _lateness_after(
    runs: dict[tuple[str, int], list[tuple[str, int]]], timers: set[str], from_ms: int
) -> float | None:
    """Failover: how late (ms after its grid instant) the first run of each timer at or after
    ``from_ms`` started, the worst of them."""
    worst = None
    for timer in timers:
        firsts = sorted(i for (t, i) in runs if t == timer and i >= from_ms)
        if firsts:
            late = runs[timer, firsts[0]][0][1] / 1e6 - firsts[0]
            worst = late if worst is None else max(worst, late)
    return worst


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_multi_host_drill(kind: str, tmp_path: Path, hosts: list[Host]) -> None:
    real = store_url(kind, tmp_path)
    cluster = unique_cluster("netns")
    nodes = ["h0", "h1", "h2"]
    if kind == "sqlite":  # one host: no network between the nodes and their file
        hosts = [Host(None, None, "")] * 3
    parts = urllib.parse.urlsplit(real)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 0, local_host="0.0.0.0")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    outs = {n: tmp_path / f"{n}.jsonl" for n in nodes}
    stop = tmp_path / "stop"
    async with proxy:
        for host, node in zip(hosts, nodes, strict=True):
            url = real if kind == "sqlite" else proxy.url(real, host.address)
            procs[node] = _start_node(host, url, cluster, node, stop, outs[node])
        try:
            up_ms = await anyio.to_thread.run_sync(wait_up, list(outs.values()))
            start_ms = -(-(up_ms + SETTLE_MS) // INTERVAL_MS) * INTERVAL_MS
            points = SQLITE_POINTS if kind == "sqlite" else POINTS
            stop_ms = start_ms + points * INTERVAL_MS
            write_stop(stop, stop_ms + STOP_SLACK_MS)
            ev = {
                "cut h0": start_ms + 700,
                "heal h0": start_ms + 2000,  # cut off for 1.3 s: well over node_ttl_s
                "kill h1": start_ms + 3000,
                "store away": start_ms + 4000,
                "store back": start_ms + 5000,
                # Redis only: the store loses its data, as a restarted Redis that keeps nothing
                # on disk (or a failover to a replica that missed the last writes) does. 25 ms
                # into a point: after the preferred nodes' claims, before the backups' (backup
                # delay 50 ms).
                "data lost": start_ms + 6725,
            }
            if kind == "sqlite":  # no network: the kill alone, sooner
                ev["kill h1"] = start_ms + 1000
            if kind != "sqlite":
                await _at(ev["cut h0"])
                _ip("link", "set", str(hosts[0].veth), "down")
                await _at(ev["heal h0"])
                _ip("link", "set", str(hosts[0].veth), "up")
            await _at(ev["kill h1"])
            procs["h1"].send_signal(signal.SIGKILL)
            if kind != "sqlite":
                await _at(ev["store away"])
                await proxy.cut()
                await _at(ev["store back"])
                proxy.heal()
            if kind == "redis":
                forgetful = open_store(real, cluster)
                await forgetful.open()
                await _at(ev["data lost"])
                await forgetful.drop()
                await forgetful.close()
            for proc in procs.values():
                await anyio.to_thread.run_sync(proc.wait, 30)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
    records = read_records(list(outs.values()))
    runs: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for r in records:
        if r[0] == "run":
            runs[r[2], r[3]].append((r[1], r[4]))

    def prefers(node: str, live: list[str]) -> set[str]:
        return {t for t in TIMERS if preferred_node(t, live) == node}

    all_points = {(t, i) for i in grid_points(INTERVAL_MS, start_ms, stop_ms) for t in TIMERS}
    twice = {p: r for p, r in runs.items() if len(r) > 1}
    missing = sorted(p for p in all_points if p not in runs)

    def window(a: int, b: int) -> list[tuple[str, int]]:
        return [p for p in missing if a <= p[1] < b]

    def doubled(a: int, b: int) -> int:
        return sum(1 for p in twice if a <= p[1] < b)

    rows: list[list[object]] = []
    if kind != "sqlite":
        lost = window(ev["cut h0"], ev["heal h0"] + 1000)
        late = _lateness_after(runs, prefers("h0", nodes), ev["cut h0"] + INTERVAL_MS)
        rows.append(
            [kind, "h0 cut off 1.3 s", len(lost), late, doubled(ev["cut h0"], ev["heal h0"] + 1000)]
        )
    lost_kill = window(ev["kill h1"], ev["kill h1"] + 1000)
    late = _lateness_after(runs, prefers("h1", nodes), ev["kill h1"] + INTERVAL_MS)
    rows.append(
        [kind, "h1 SIGKILL", len(lost_kill), late, doubled(ev["kill h1"], ev["kill h1"] + 1000)]
    )
    if kind != "sqlite":
        lost_store = window(ev["store away"], ev["store back"] + 1500)
        firsts = [i for (_, i) in runs if i >= ev["store back"]]
        recovery = (min(firsts) - ev["store back"]) if firsts else None
        twice_store = doubled(ev["store away"], ev["store back"] + 1500)
        rows.append([kind, "store away 1 s", len(lost_store), recovery, twice_store])
    loss = (ev["data lost"] - INTERVAL_MS, ev["data lost"] + INTERVAL_MS)
    if kind == "redis":
        rows.append([kind, "data lost", len(window(*loss)), None, doubled(*loss)])
    RESULTS.extend(rows)
    print()
    print(f"{'store':9} {'event':16} {'not run':>8} {'failover ms':>12} {'run twice':>10}")
    for row in RESULTS:
        late = "-" if row[3] is None else f"{row[3]:.0f}"
        print(f"{row[0]:9} {row[1]:16} {row[2]:>8} {late:>12} {row[4]:>10}")

    # Exactly once, outside the windows the semantics allow to lose points; twice only where
    # Redis lost its data (the documented limit of the Redis store).
    unexplained = {
        p: r for p, r in twice.items() if not (kind == "redis" and loss[0] <= p[1] < loss[1])
    }
    assert not unexplained, f"grid points run twice: {sorted(unexplained.items())[:5]}"
    allowed = set(window(ev["kill h1"], ev["kill h1"] + 2 * INTERVAL_MS))
    # A claim in flight when h0 is cut may have been won with its answer lost.
    allowed |= set(window(ev["cut h0"], ev["cut h0"] + 2 * INTERVAL_MS))
    if kind != "sqlite":
        allowed |= set(window(ev["store away"], ev["store back"] + 1500))
    unexpected = [p for p in missing if p not in allowed]
    assert not unexpected, f"{len(unexpected)} points lost outside the events: {unexpected[:5]}"
    # Failover costs about the backup delay, never an election.
    for row in rows[:2] if kind != "sqlite" else rows[:1]:
        assert row[3] is not None
        assert row[3] <= NODE_OPTIONS["backup_delay_s"] * 1000 + 250, row

    async def drop() -> None:
        store = open_store(real, cluster)
        await store.open()
        await store.drop()
        await store.close()

    await drop()
