"""The Cluster service decides, for each cluster run the scheduler's gate offers, whether it
runs here: the preferred node claims at once, the others after the backup delay, exactly one
node starts each grid point, store failures follow the policy, a skewed node refuses.

The runs here are stand-ins for the gate's runs (the service's only contact with the core is
``offer(runs)``); the stores and the heartbeats are real (SQLite, real time, short delays).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

import aiotimer
from aiotimer.cluster import ClaimStore, NodeInfo, Outcome, open_store, preferred_node
from aiotimer.cluster._cluster import Cluster
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000_000
FAST = {"heartbeat_s": 0.05, "node_ttl_s": 0.5, "backup_delay_s": 0.1}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Run:
    """A stand-in for the gate's run of one timer at one grid point."""

    timer_name: str
    instant_ms: int
    decisions: list[str] = field(default_factory=list)
    decided: anyio.Event = field(default_factory=anyio.Event)

    def start(self) -> None:
        self.decisions.append("start")
        self.decided.set()

    def skip(self) -> None:
        self.decisions.append("skip")
        self.decided.set()


def runs(timers: Sequence[str], instant_ms: int = T0) -> list[Run]:
    return [Run(t, instant_ms) for t in timers]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'claims.db'}"


@pytest.fixture
async def node_scheduler() -> AsyncIterator[aiotimer.Scheduler]:
    async with aiotimer.Scheduler(name="node") as scheduler:
        yield scheduler


async def serving(cluster: Cluster) -> aiotimer.Scheduler:
    scheduler = aiotimer.Scheduler(name=cluster.node)
    scheduler.add_service(cluster)
    await scheduler.start()
    return scheduler


async def settle(*groups: Sequence[Run], timeout_s: float = 5.0) -> None:
    """Wait until every run got its decision."""
    with anyio.fail_after(timeout_s):
        for group in groups:
            for run in group:
                await run.decided.wait()


async def test_each_grid_point_starts_on_exactly_one_node_its_preferred_one(url: str) -> None:
    a, b = Cluster(url, node="a", **FAST), Cluster(url, node="b", **FAST)
    sa, sb = await serving(a), await serving(b)
    try:
        await anyio.sleep(0.2)  # both heartbeated: each sees the other
        assert a.stats().live_nodes == b.stats().live_nodes == ("a", "b")
        timers = [f"t{i}" for i in range(40)]
        ra, rb = runs(timers), runs(timers)
        a.offer(ra)
        b.offer(rb)
        await settle(ra, rb)
        for x, y in zip(ra, rb, strict=True):
            assert sorted(x.decisions + y.decisions) == ["skip", "start"], x.timer_name
            starter = "a" if x.decisions == ["start"] else "b"
            assert starter == preferred_node(x.timer_name, ["a", "b"])
        sa_stats, sb_stats = a.stats(), b.stats()
        won = sum(t.won for t in sa_stats.timers.values()) + sum(
            t.won for t in sb_stats.timers.values()
        )
        elsewhere = sum(t.run_elsewhere for s in (sa_stats, sb_stats) for t in s.timers.values())
        assert (won, elsewhere) == (40, 40)
        json.dumps(sa_stats.as_dict())  # JSON-ready
    finally:
        await sa.stop()
        await sb.stop()


async def test_a_dead_preferred_node_is_replaced_after_the_backup_delay(url: str) -> None:
    # "a" heartbeated, then died without leaving: it stays live until its ttl, so "b" still
    # prefers it for some timers, and claims those after the backup delay.
    ghost = open_store(url, "default")
    await ghost.open()
    await ghost.heartbeat("a", 30)
    b = Cluster(url, node="b", **FAST)
    sb = await serving(b)
    try:
        assert b.stats().live_nodes == ("a", "b")
        timer = next(f"t{i}" for i in range(100) if preferred_node(f"t{i}", ["a", "b"]) == "a")
        mine = next(f"t{i}" for i in range(100) if preferred_node(f"t{i}", ["a", "b"]) == "b")
        [late], [prompt] = runs([timer]), runs([mine])
        started = anyio.current_time()
        b.offer([late, prompt])
        await settle([prompt])
        prompt_s = anyio.current_time() - started
        await settle([late])
        late_s = anyio.current_time() - started
        assert (late.decisions, prompt.decisions) == (["start"], ["start"])
        assert prompt_s < 0.1  # preferred: claimed at once
        assert 0.1 <= late_s < 0.1 + 0.5  # backup: claimed after the delay, and won
    finally:
        await sb.stop()
        await ghost.close()


async def test_a_store_failure_skips_the_runs_by_default(tmp_path: Path) -> None:
    cluster = Cluster(
        open_store("postgresql://postgres@127.0.0.1:1/test", "c", connect_timeout_s=0.2),
        node="a",
        **FAST,
    )
    scheduler = await serving(cluster)
    try:
        batch = runs(["t", "u"])
        cluster.offer(batch)
        await settle(batch)
        assert [r.decisions for r in batch] == [["skip"], ["skip"]]
        stats = cluster.stats()
        assert stats.store_errors == 1
        assert stats.timers["t"].store_errors == 1
    finally:
        await scheduler.stop()


async def test_a_store_failure_runs_locally_when_told_to(tmp_path: Path) -> None:
    cluster = Cluster(
        open_store("redis://127.0.0.1:1/0", "c", connect_timeout_s=0.2),
        node="a",
        on_unreachable="run",
        **FAST,
    )
    scheduler = await serving(cluster)
    try:
        batch = runs(["t"])
        cluster.offer(batch)
        await settle(batch)
        assert batch[0].decisions == ["start"]
    finally:
        await scheduler.stop()


class SkewedStore:
    """A real store whose clock reads ``skew_ns`` ahead of this host's (as a store on a host
    with a wrong clock, or this node's clock behind, would)."""

    def __init__(self, store: ClaimStore, skew_ns: int) -> None:
        self._store = store
        self.skew_ns = skew_ns

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        live = await self._store.heartbeat(node, ttl_s)
        return [NodeInfo(n.node, n.expires_ns + self.skew_ns) for n in live]


async def test_a_node_whose_clock_is_off_refuses_to_claim_and_says_so(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SkewedStore(open_store(url, "c"), skew_ns=5 * 10**9)
    cluster = Cluster(store, node="a", max_skew_s=1.0, **FAST)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="aiotimer.cluster"):
        scheduler = await serving(cluster)
    try:
        assert cluster.stats().refusing
        assert cluster.stats().skew_s == pytest.approx(5.0, abs=0.5)
        assert "wall clock is -5" in caplog.text
        assert "refuses to claim" in caplog.text
        batch = runs(["t"])
        cluster.offer(batch)
        await settle(batch)
        assert batch[0].decisions == ["skip"]
        assert cluster.stats().timers["t"].refused_skew == 1
        store.skew_ns = 0  # the clock is fixed: claims resume at the next heartbeat
        await anyio.sleep(0.2)
        assert not cluster.stats().refusing
        batch = runs(["t"], T0 + 1000)
        cluster.offer(batch)
        await settle(batch)
        assert batch[0].decisions == ["start"]
    finally:
        await scheduler.stop()


async def test_a_wall_clock_step_beyond_the_tolerance_stops_the_claims(url: str) -> None:
    clock = VirtualClock()
    clock.set_wall(time.time_ns())
    cluster = Cluster(url, node="a", max_skew_s=0.5, **FAST)
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    scheduler.add_service(cluster)
    await scheduler.start()
    try:
        assert not cluster.stats().refusing
        clock.step_wall(-2.0)  # an operator's `date -s`, or NTP stepping a bad clock
        await anyio.sleep(0.2)
        assert cluster.stats().refusing
        batch = runs(["t"])
        cluster.offer(batch)
        await settle(batch)
        assert batch[0].decisions == ["skip"]
    finally:
        await scheduler.stop()


async def test_finished_runs_reach_the_store_history(url: str) -> None:
    cluster = Cluster(url, node="a", **FAST)
    scheduler = await serving(cluster)
    try:
        batch = runs(["t", "u"])
        cluster.offer(batch)
        await settle(batch)
        cluster.finished("t", T0, Outcome.OK, 1_000_000)
        await anyio.sleep(0.2)  # the next heartbeat flushes
        records = {r.timer: r for r in await cluster.store.history()}
        assert (records["t"].outcome, records["t"].duration_ns) == (Outcome.OK, 1_000_000)
        assert not records["u"].finished  # claimed, not finished: visible
    finally:
        await scheduler.stop()


async def test_runs_offered_to_a_cluster_that_is_not_serving_are_skipped(url: str) -> None:
    batch = runs(["t"])
    Cluster(url, node="a").offer(batch)
    assert batch[0].decisions == ["skip"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backup_delay_s": 0}, "backup_delay_s must be a finite number of seconds > 0, got 0"),
        ({"max_skew_s": float("nan")}, "max_skew_s must be"),
        ({"retention_s": -1}, "retention_s must be"),
        ({"on_unreachable": "retry"}, "on_unreachable must be 'skip' or 'run', got 'retry'"),
        ({"heartbeat_s": 1, "node_ttl_s": 1}, "node_ttl_s .1. must be longer than heartbeat_s"),
        ({"node": ""}, "node name must be 1 to 200 characters"),
        ({"lease_s": float("inf")}, "lease_s must be"),
    ],
)
def test_bad_parameters_are_refused_naming_them(
    url: str, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Cluster(url, **kwargs)  # type: ignore[arg-type]


def test_passwords_stay_out_of_repr_and_stats() -> None:
    cluster = Cluster("postgresql://app:s3cr3t@db.example/svc", node="a")
    assert "s3cr3t" not in repr(cluster)
    assert "s3cr3t" not in json.dumps(cluster.stats().as_dict())
