"""Workload ``cluster`` (issues 13, 14): what claiming a batch of due cluster timers costs.

At a grid point every node that holds the cluster timers due together claims them in one call
(:meth:`aiotimer.cluster.ClaimStore.claim`); exactly one node wins each. For 1, 100 and 10,000
timers due together, on SQLite, PostgreSQL and Redis, with 1 node and with 3 node processes
racing for the same batch (released together by a barrier), this measures the wall time of a
claim call (ms per batch), the round trips it made (counted by the store), the CPU the node
spent in it, and checks that every grid point had exactly one winner (duplicates and gaps
both counted). A store whose server is unreachable is reported as skipped.

The ``timers:`` variants run the whole path instead: N cluster timers every second on one node
(a scheduler, its run gate and a ``Cluster`` service on each store), next to the same timers
local, and measure the node's CPU per second and per run, the claim latency and the store round
trips per second (claims, finishes and heartbeats).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import aiotimer
from aiotimer.cluster import ClaimStore, Cluster, open_store

from . import _harness as h

NAME = "cluster"
STORES = ("sqlite", "postgres", "redis")
NODE_COUNTS = (1, 3)
SIZES = (1, 100, 10_000)
ROUNDS = {1: 100, 100: 50, 10_000: 15}
QUICK_ROUNDS = {1: 5, 100: 5, 10_000: 2}
T0_MS = 1_800_000_000_000
POSTGRES_URL = os.environ.get("AIOTIMER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIOTIMER_REDIS_URL", "redis://127.0.0.1:6379/0")


E2E_TIMERS = 10_000
QUICK_E2E_TIMERS = 1_000
E2E_WINDOW_S = 5
QUICK_E2E_WINDOW_S = 1


def variants(quick: bool) -> list[str]:
    claims = [f"{store}, {n} node{'s' if n > 1 else ''}" for store in STORES for n in NODE_COUNTS]
    # The whole path on every store in the full mode; the quick one (CI) only checks it runs.
    e2e = ("local", "sqlite") if quick else ("local", *STORES)
    return [*claims, *(f"timers: {kind}" for kind in e2e)]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 180.0


def _url(store: str, scratch: Path) -> tuple[str | None, str | None]:
    """The store's URL, or why it cannot be used here."""
    if store == "sqlite":
        return f"sqlite://{scratch / 'claims.db'}", None
    url, port = (POSTGRES_URL, 5432) if store == "postgres" else (REDIS_URL, 6379)
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or port), timeout=1.0).close()
    except OSError as exc:
        return None, f"{parts.hostname}:{parts.port or port} unreachable ({exc})"
    return url, None


async def _claim_rounds(
    url: str, cluster: str, node: str, rounds: dict[int, int], barrier: Any
) -> dict[str, Any]:
    """Claim ``rounds[size]`` batches of ``size`` timers due together, for every size; each
    batch after every node reached ``barrier`` (``None``: a single node)."""
    store: ClaimStore = open_store(url, cluster, timeout_s=60.0)
    await store.open()
    out: dict[str, Any] = {}
    try:
        for size, count in rounds.items():
            timers = [f"s{size}-t{i}" for i in range(size)]
            await store.claim(node, [(timers[0], 0)])  # warm-up: prepared statements, scripts
            latencies_ns: list[int] = []
            wins: list[int] = []
            cpu = 0.0
            trips = 0
            for r in range(count):
                batch = [(t, T0_MS + r * 1000) for t in timers]
                if barrier is not None:
                    await asyncio.to_thread(barrier.wait)
                trips0, c0, w0 = store.round_trips, h.cpu_s(), time.perf_counter_ns()
                won = await store.claim(node, batch)
                w1, c1 = time.perf_counter_ns(), h.cpu_s()
                trips += store.round_trips - trips0
                cpu += c1 - c0
                latencies_ns.append(w1 - w0)
                wins.append(sum(won))
            out[str(size)] = {
                "latencies_ns": latencies_ns,
                "wins": wins,
                "cpu_s": cpu,
                "round_trips": trips,
            }
    finally:
        await store.close()
    return out


def _node_process(
    url: str, cluster: str, node: str, rounds: dict[int, int], barrier: Any, results: Any
) -> None:
    try:
        results.put((node, asyncio.run(_claim_rounds(url, cluster, node, rounds, barrier))))
    except BaseException as exc:
        results.put((node, f"{type(exc).__name__}: {exc}"))
        raise


async def _drop(url: str, cluster: str) -> None:
    store = open_store(url, cluster)
    await store.open()
    try:
        await store.drop()
    finally:
        await store.close()


def _noop() -> None:
    pass


async def _timers(kind: str, url: str | None, quick: bool) -> dict[str, Any]:
    """N cluster timers every second on one node (or the same timers local): CPU, claims."""
    n = QUICK_E2E_TIMERS if quick else E2E_TIMERS
    window_s = QUICK_E2E_WINDOW_S if quick else E2E_WINDOW_S
    scheduler = aiotimer.Scheduler(name="bench-cluster")
    for i in range(n):
        scheduler.add_every_s(1, _noop, name=f"t{i}", cluster=url is not None)
    cluster = None
    if url is not None:
        cluster = Cluster(url, name=f"bench-{uuid.uuid4().hex[:12]}", node="bench")
        scheduler.add_service(cluster)
    async with scheduler:
        # Whole seconds of warm-up (none in the quick mode: it only checks the path works),
        # then the window from the middle of a second (the timers run at the top of each
        # wall-clock second).
        now_s = time.time()
        await asyncio.sleep((0 if quick else 2) + (0.5 - now_s % 1) % 1)
        trips0 = cluster.store.round_trips if cluster else 0
        runs0 = sum(t.runs for t in scheduler.timers.values())
        c0, w0 = h.cpu_s(), time.perf_counter()
        for s in range(window_s):
            await asyncio.sleep(w0 + s + 1 - time.perf_counter())
        c1, w1 = h.cpu_s(), time.perf_counter()
        runs = sum(t.runs for t in scheduler.timers.values()) - runs0
        trips = cluster.store.round_trips - trips0 if cluster else 0
        stats = cluster.stats() if cluster else None
    if cluster is not None:
        await _drop(url or "", cluster.store.cluster)
    wall = w1 - w0
    return {
        "store": kind,
        "timers": n,
        "runs_per_s": runs / wall,
        "cpu_ms_per_s": (c1 - c0) / wall * 1e3,
        "cpu_us_per_run": (c1 - c0) / runs * 1e6 if runs else None,
        "claim_p50_ms": stats.claim_latency_p50_s * 1e3
        if stats and stats.claim_latency_p50_s is not None
        else None,
        "claim_max_ms": stats.claim_latency_max_s * 1e3
        if stats and stats.claim_latency_max_s is not None
        else None,
        "round_trips_per_s": trips / wall if cluster else None,
        "store_errors": stats.store_errors if stats else None,
    }


def _run_timers(kind: str, quick: bool) -> dict[str, Any]:
    if kind == "local":
        return asyncio.run(_timers(kind, None, quick))
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"aiotimer-bench-cluster-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        url, why_not = _url(kind, scratch)
        if url is None:
            return {"store": kind, "skipped": why_not}
        h.progress(NAME, f"timers: {kind}: cluster timers every second on one node")
        return asyncio.run(_timers(kind, url, quick))
    finally:
        for f in scratch.glob("claims.db*"):
            f.unlink()
        scratch.rmdir()


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    if variant.startswith("timers: "):
        return _run_timers(variant.removeprefix("timers: "), quick)
    store_kind, nodes_part = variant.split(", ")
    nodes = int(nodes_part.split()[0])
    rounds = QUICK_ROUNDS if quick else ROUNDS
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"aiotimer-bench-cluster-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    url, why_not = _url(store_kind, scratch)
    if url is None:
        return {"store": store_kind, "nodes": nodes, "skipped": why_not}
    cluster = f"bench-{uuid.uuid4().hex[:12]}"
    h.progress(NAME, f"{variant}: {', '.join(map(str, SIZES))} timers due together")
    per_node: dict[str, Any]
    try:
        if nodes == 1:
            per_node = {"n0": asyncio.run(_claim_rounds(url, cluster, "n0", rounds, None))}
        else:
            ctx = multiprocessing.get_context("spawn")
            barrier, queue = ctx.Barrier(nodes), ctx.Queue()
            procs = [
                ctx.Process(
                    target=_node_process, args=(url, cluster, f"n{i}", rounds, barrier, queue)
                )
                for i in range(nodes)
            ]
            for p in procs:
                p.start()
            per_node = dict(queue.get(timeout=150) for _ in procs)
            for p in procs:
                p.join(timeout=10)
            failed = {n: r for n, r in per_node.items() if isinstance(r, str)}
            if failed:
                raise RuntimeError(f"node processes failed: {failed}")
        asyncio.run(_drop(url, cluster))
    finally:
        for f in scratch.glob("claims.db*"):
            f.unlink()
        scratch.rmdir()
    sizes: dict[str, Any] = {}
    for size in map(str, SIZES):
        runs = [per_node[n][size] for n in per_node]
        latencies = sorted(ns for r in runs for ns in r["latencies_ns"])
        batches = len(runs[0]["wins"])
        won_per_batch = [sum(r["wins"][b] for r in runs) for b in range(batches)]
        calls = sum(len(r["latencies_ns"]) for r in runs)
        sizes[size] = {
            "batches": batches,
            "ms_p50": h.percentile(latencies, 0.5) / 1e6,
            "ms_max": latencies[-1] / 1e6,
            "round_trips_per_node_batch": sum(r["round_trips"] for r in runs) / calls,
            "cpu_ms_per_node_batch": sum(r["cpu_s"] for r in runs) / calls * 1e3,
            "duplicates": sum(max(0, w - int(size)) for w in won_per_batch),
            "gaps": sum(max(0, int(size) - w) for w in won_per_batch),
        }
    return {"store": store_kind, "nodes": nodes, "sizes": sizes}


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    rows: list[list[object]] = []
    notes: list[str] = []
    targets: list[dict[str, Any]] = []
    worst_trips = 0.0
    e2e_rows: list[list[object]] = []
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        if "skipped" in r:
            notes.append(f"{variant}: skipped, {r['skipped']}")
            continue
        if variant.startswith("timers: "):
            e2e_rows.append(
                [
                    r["store"],
                    r["timers"],
                    r["runs_per_s"],
                    r["cpu_ms_per_s"],
                    r["cpu_us_per_run"],
                    r["claim_p50_ms"],
                    r["claim_max_ms"],
                    r["round_trips_per_s"],
                    r["store_errors"],
                ]
            )
            continue
        for size, s in r["sizes"].items():
            rows.append(
                [
                    r["store"],
                    r["nodes"],
                    int(size),
                    s["batches"],
                    s["ms_p50"],
                    s["ms_max"],
                    s["round_trips_per_node_batch"],
                    s["cpu_ms_per_node_batch"],
                    s["duplicates"],
                    s["gaps"],
                ]
            )
            worst_trips = max(worst_trips, s["round_trips_per_node_batch"])
    for store, limit in (("postgres", 100.0), ("redis", 50.0)):
        for nodes in NODE_COUNTS:
            variant = f"{store}, {nodes} node{'s' if nodes > 1 else ''}"
            sizes = results.get(variant, {}).get("sizes")
            measured = sizes["10000"]["ms_p50"] if sizes else None
            targets.append(
                h.target(f"10k timers claimed, {variant} (p50)", measured, "<=", limit, "ms")
            )
    targets.append(h.target("round trips per node per batch", worst_trips, "<=", 1.0, ""))
    dup = sum(row[8] for row in rows if isinstance(row[8], int))
    targets.append(h.target("duplicate runs, every variant", float(dup), "<=", 0.0, ""))
    notes.append(
        "round trips are the store's calls; each also prepares its statement (PostgreSQL) or "
        "loads its scripts (Redis) once per connection, in the untimed warm-up"
    )
    notes.append(
        "APScheduler 4 is not measured next to it: the bench extra pins APScheduler 3 for the "
        "apscheduler workload, and 4.0 (still alpha) ships under the same distribution name, "
        "so it needs a virtualenv of its own"
    )
    tables = [
        h.format_table(
            "cluster: claim cost per batch of cluster timers due together "
            "(N nodes race for every batch)",
            [
                "store",
                "nodes",
                "timers",
                "batches",
                "ms p50",
                "ms max",
                "trips/batch",
                "CPU ms/batch",
                "dup",
                "gaps",
            ],
            rows,
        ),
        h.format_table(
            "cluster: N cluster timers every second on one node (claim, run, report the end), "
            "next to the same timers local",
            [
                "store",
                "timers",
                "runs/s",
                "CPU ms/s",
                "CPU us/run",
                "claim p50 ms",
                "claim max ms",
                "trips/s",
                "store errors",
            ],
            e2e_rows,
        ),
    ]
    notes.append(
        "trips/s of the timers: variants: one claim and one report of the ends per batch, "
        "plus the heartbeat (1/s)"
    )
    return h.Report(tables, {"sizes": list(SIZES)}, targets, notes)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
