"""The Cluster service is the scheduler's run gate: each grid point of a cluster timer starts on
exactly one node (its preferred one, or a backup after the delay), store failures follow the
policy, a skewed node refuses, and every won run's end reaches the store's history.

Real schedulers with real cluster timers (the gate's real runs), real SQLite stores, the real
clock with short intervals: marked slow where they wait for grid points.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import pytest

import aiotimer
from aiotimer.cluster import (
    ClaimStore,
    Cluster,
    ClusterStats,
    NodeInfo,
    Outcome,
    RunOutcome,
    open_store,
    preferred_node,
)
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

FAST = {"heartbeat_s": 0.05, "node_ttl_s": 0.5, "backup_delay_s": 0.03}
INTERVAL_MS = 50


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'claims.db'}"


Runs = dict[str, list[tuple[str, int, int]]]  # node -> (timer, instant_ms, lateness_ns)


def node(
    cluster: Cluster, timers: list[str], runs: Runs, callback: Callable[..., object] | None = None
) -> aiotimer.Scheduler:
    """A scheduler holding ``timers`` as cluster timers, gated by ``cluster``; each run is
    recorded in ``runs[cluster.node]``."""
    scheduler = aiotimer.Scheduler(name=cluster.node)

    def record(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        late = scheduler.clock.now_ns() - tick.scheduled_ns
        runs[cluster.node].append((tick.timer.name, round(tick.wall.timestamp() * 1000), late))

    for t in timers:
        scheduler.add_every_ms(INTERVAL_MS, callback or record, name=t, cluster=True)
    scheduler.add_service(cluster)
    return scheduler


def cluster_stats(scheduler: aiotimer.Scheduler, cluster: Cluster) -> ClusterStats:
    stats = scheduler.stats().services[cluster.name]
    assert isinstance(stats, ClusterStats)
    return stats


@pytest.fixture
async def ghost(url: str) -> AsyncIterator[ClaimStore]:
    """The store, to play a node that heartbeats and never claims (a hung or dying node)."""
    store = open_store(url, "default")
    await store.open()
    yield store
    await store.close()


@pytest.mark.slow
async def test_each_grid_point_runs_on_exactly_one_node_mostly_its_preferred_one(
    url: str,
) -> None:
    timers = [f"job-{i}" for i in range(6)]
    runs: Runs = defaultdict(list)
    a, b = Cluster(url, node="a", **FAST), Cluster(url, node="b", **FAST)
    sa, sb = node(a, timers, runs), node(b, timers, runs)
    await sa.start()
    await sb.start()
    await anyio.sleep(0.3)  # both heartbeated: each sees the other
    t0 = time.time_ns() // 1_000_000
    await anyio.sleep(0.6)
    t1 = time.time_ns() // 1_000_000
    await sa.stop()
    await sb.stop()
    points = defaultdict(list)
    for n, recorded in runs.items():
        for timer, instant, _ in recorded:
            points[timer, instant].append(n)
    window = [
        (t, i)
        for i in range(-(-t0 // INTERVAL_MS) * INTERVAL_MS, t1 - INTERVAL_MS, INTERVAL_MS)
        for t in timers
    ]
    assert window
    assert all(len(points[p]) == 1 for p in window), [p for p in window if len(points[p]) != 1]
    assert all(len(n) == 1 for n in points.values()), "a grid point ran twice"
    on_preferred = sum(points[p][0] == preferred_node(p[0], ["a", "b"]) for p in window)
    assert on_preferred >= len(window) * 0.8, (on_preferred, len(window))
    stats = cluster_stats(sa, a)
    assert stats.live_nodes == ("a", "b")
    # every run here was won; a batch of claims in flight at the stop is won and not run (the
    # documented stop: answered first, recorded as skipped), at most one point per timer
    won = sum(t.won for t in stats.timers.values())
    assert len(runs["a"]) <= won <= len(runs["a"]) + len(timers), (won, len(runs["a"]))
    assert sum(t.run_elsewhere for t in stats.timers.values()) > 0
    assert stats.claim_latency_p50_s is not None
    json.dumps(stats.as_dict())


@pytest.mark.slow
async def test_a_preferred_node_that_does_not_claim_is_backed_up_after_the_delay(
    url: str, ghost: ClaimStore
) -> None:
    # "a" heartbeats but never claims (hung, or dying before its ttl ran out): "b" prefers it
    # for some timers and runs them after the backup delay; its own at once.
    await ghost.heartbeat("a", 30)
    late_timer = next(f"job-{i}" for i in range(99) if preferred_node(f"job-{i}", "ab") == "a")
    own_timer = next(f"job-{i}" for i in range(99) if preferred_node(f"job-{i}", "ab") == "b")
    runs: Runs = defaultdict(list)
    b = Cluster(url, node="b", **FAST)
    sb = node(b, [late_timer, own_timer], runs)
    await sb.start()
    await anyio.sleep(0.6)
    await sb.stop()
    lateness = defaultdict(list)
    for timer, _, late in runs["b"]:
        lateness[timer].append(late / 1e9)
    assert min(lateness[late_timer]) >= FAST["backup_delay_s"]
    assert sorted(lateness[late_timer])[len(lateness[late_timer]) // 2] < 0.03 + 0.05
    assert sorted(lateness[own_timer])[len(lateness[own_timer]) // 2] < 0.02


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "ran"), [("skip", False), ("run", True)], ids=["skip", "run-locally"]
)
async def test_an_unreachable_store_follows_the_policy(policy: str, ran: bool) -> None:
    cluster = Cluster(
        "postgresql://postgres@127.0.0.1:1/test",
        node="a",
        on_unreachable=policy,  # type: ignore[arg-type]
        store_timeout_s=0.2,
        **FAST,
    )
    runs: Runs = defaultdict(list)
    scheduler = node(cluster, ["job"], runs)
    await scheduler.start()  # the store is down: the node starts all the same
    await anyio.sleep(0.4)
    stats = cluster_stats(scheduler, cluster)
    await scheduler.stop()
    assert bool(runs["a"]) is ran
    assert stats.store_errors > 0
    assert stats.timers["job"].store_errors > 0


class SkewedStore:
    """A real store whose clock reads ``skew_ns`` ahead of this host's."""

    def __init__(self, store: ClaimStore, skew_ns: int) -> None:
        self._store = store
        self.skew_ns = skew_ns

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        live = await self._store.heartbeat(node, ttl_s)
        return [NodeInfo(n.node, n.expires_ns + self.skew_ns) for n in live]


class SlowFirstFinishStore:
    """A real store whose first ``finish`` takes ``delay_s`` (a slow round trip)."""

    def __init__(self, store: ClaimStore, delay_s: float) -> None:
        self._store = store
        self.delay_s = delay_s
        self.finishing = anyio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def finish(self, node: str, results: list[RunOutcome]) -> None:
        if not self.finishing.is_set():
            self.finishing.set()
            await anyio.sleep(self.delay_s)
        await self._store.finish(node, results)


class ClaimsSeenStore:
    """A real store that keeps the batches it was asked to claim."""

    def __init__(self, store: ClaimStore) -> None:
        self._store = store
        self.batches: list[list[tuple[str, int]]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def claim(
        self, node: str, claims: Sequence[tuple[str, int]], *, lease_s: float | None = None
    ) -> list[bool]:
        self.batches.append(list(claims))
        await self.before_store()
        return await self._store.claim(node, claims, lease_s=lease_s)

    async def before_store(self) -> None:
        """Between keeping a batch and sending it to the store: a subclass may wait here."""


async def test_ends_being_recorded_when_the_node_stops_are_recorded_all_the_same(
    url: str,
) -> None:
    store = SlowFirstFinishStore(open_store(url, "default"), delay_s=5)
    cluster = Cluster(store, node="a", **FAST)  # type: ignore[arg-type]
    scheduler = aiotimer.Scheduler(name="a")
    job = scheduler.add_every_ms(INTERVAL_MS, lambda: None, name="job", cluster=True)
    scheduler.add_service(cluster)
    await scheduler.start()
    with anyio.fail_after(5):
        await store.finishing.wait()  # the first ends are on their way to the store...
    await scheduler.stop()  # ...when the node stops
    history = await history_of(url)
    assert len(history["job"]) == job.runs >= 1
    assert all(outcome is Outcome.OK for _, outcome, _ in history["job"]), history


@pytest.mark.slow
async def test_a_node_whose_clock_is_off_refuses_to_claim_and_says_so(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SkewedStore(open_store(url, "c"), skew_ns=5 * 10**9)
    cluster = Cluster(store, node="a", max_skew_s=1.0, **FAST)  # type: ignore[arg-type]
    runs: Runs = defaultdict(list)
    scheduler = node(cluster, ["job"], runs)
    with caplog.at_level(logging.ERROR, logger="aiotimer.cluster"):
        await scheduler.start()
        await anyio.sleep(0.3)
    stats = cluster_stats(scheduler, cluster)
    assert stats.refusing
    assert stats.skew_s == pytest.approx(5.0, abs=0.5)
    assert "wall clock is -5" in caplog.text
    assert "refuses to claim" in caplog.text
    assert runs["a"] == []
    assert stats.timers["job"].refused_skew > 0
    store.skew_ns = 0  # the clock is fixed: claims resume at the next heartbeat
    await anyio.sleep(0.3)
    assert not cluster_stats(scheduler, cluster).refusing
    assert runs["a"]
    await scheduler.stop()


async def test_a_wall_clock_step_beyond_the_tolerance_stops_the_claims(url: str) -> None:
    clock = VirtualClock()
    clock.set_wall(time.time_ns())
    cluster = Cluster(url, node="a", max_skew_s=0.5, **FAST)
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    scheduler.add_every_s(60, lambda: None, name="job", cluster=True)
    scheduler.add_service(cluster)
    await scheduler.start()
    try:
        assert not cluster.stats().refusing
        clock.step_wall(-2.0)  # an operator's `date -s`, or NTP stepping a bad clock
        await anyio.sleep(0.2)
        assert cluster.stats().refusing
    finally:
        await scheduler.stop()


@pytest.mark.slow
async def test_each_won_run_ends_in_the_store_history_with_its_outcome(url: str) -> None:
    cluster = Cluster(url, node="a", **FAST)
    scheduler = aiotimer.Scheduler(name="a")

    def ok() -> None:
        pass

    def fails() -> None:
        raise RuntimeError("boom")

    async def works() -> None:
        await anyio.sleep(0.03)

    async def hangs() -> None:
        await anyio.sleep(10)

    async def overlaps() -> None:
        await anyio.sleep(0.15)  # longer than its interval: the next run is skipped here

    scheduler.add_every_ms(100, ok, name="ok", cluster=True)
    scheduler.add_every_ms(100, fails, name="fails", cluster=True)
    scheduler.add_every_ms(100, works, name="works", cluster=True)
    scheduler.add_every_ms(100, hangs, name="hangs", cluster=True, timeout_s=0.02)
    scheduler.add_every_ms(100, overlaps, name="overlaps", cluster=True)
    scheduler.add_service(cluster)
    await scheduler.start()
    await anyio.sleep(0.55)
    # A run of "hangs" going on at the stop is cancelled after the grace (its timeout does
    # not fire while the scheduler stops).
    await scheduler.stop(grace_s=0.3)
    store = open_store(url, "default")
    await store.open()
    history = await store.history(limit=1000)
    await store.close()
    runs = defaultdict(list)
    for r in sorted(history, key=lambda r: r.instant_ms):
        assert r.node == "a"
        assert r.finished
        assert r.duration_ns is not None
        runs[r.timer].append((r.outcome, r.duration_ns / 1e9))
    # Each timer's last point may have been won during the stop: then it was not run (skipped).
    last = {timer: outcomes.pop()[0] for timer, outcomes in runs.items()}
    assert all(len(outcomes) >= 3 for outcomes in runs.values()), runs
    assert {o for o, _ in runs["ok"]} == {Outcome.OK}
    assert {o for o, _ in runs["fails"]} == {Outcome.ERROR}
    assert {o for o, _ in runs["works"]} == {Outcome.OK}
    assert min(d for _, d in runs["works"]) >= 0.03
    assert {o for o, _ in runs["hangs"]} == {Outcome.TIMEOUT}
    assert all(0.02 <= d < 0.1 for _, d in runs["hangs"]), runs["hangs"]
    overlaps = [o for o, _ in runs["overlaps"]]
    assert overlaps == [Outcome.OK, Outcome.SKIPPED] * (len(overlaps) // 2) + [Outcome.OK] * (
        len(overlaps) % 2
    )
    assert min(d for o, d in runs["overlaps"] if o is Outcome.OK) >= 0.15
    assert last["ok"] in {Outcome.OK, Outcome.SKIPPED}
    assert last["works"] in {Outcome.OK, Outcome.SKIPPED}
    assert last["hangs"] in {Outcome.TIMEOUT, Outcome.CANCELLED, Outcome.SKIPPED}


async def test_named_timers_must_exist_and_be_periodic(url: str) -> None:
    scheduler = aiotimer.Scheduler()
    scheduler.add_every_s(60, lambda: None, name="purge")
    scheduler.add_service(Cluster(url, node="a", timers=["purge", "nope"]))
    with pytest.raises(
        ValueError, match=r"timers \['nope'\] \(given as timers=\) are not registered"
    ):
        await scheduler.start()
    assert not scheduler.get_timer("purge").spec.cluster  # nothing guarded by a failed start

    scheduler = aiotimer.Scheduler()
    scheduler.add_once_s(60, lambda: None, name="once")
    scheduler.add_service(Cluster(url, node="a", timers=["once"]))
    with pytest.raises(ValueError, match=r"timers \['once'\] .* cannot be cluster timers"):
        await scheduler.start()


S = 1_000_000_000
POINT_S = 10


def aligned_clock() -> VirtualClock:
    """A virtual clock whose wall time is near the real one (the store's clock), with the first
    10-s grid point 5 s after the start: runs start at known instants, end at known times."""
    first_point_ns = (time.time_ns() // (POINT_S * S) + 1) * POINT_S * S
    return VirtualClock(wall_start_ns=first_point_ns - 5 * S)


async def claim_points(clock: VirtualClock, cluster: Cluster, points: int, per_point: int) -> None:
    """Move the virtual clock to each of the next ``points`` grid points in turn (virtual 5 s,
    15 s...), and wait (real time) for each point's claims, so its runs start at the point."""
    for k in range(points):
        claims = cluster.stats().claims + per_point
        await clock.advance_to((5 + POINT_S * k) * S)
        with anyio.fail_after(5):
            while True:  # (the claim's answer comes from a store: real time)
                if cluster.stats().claims >= claims:
                    break
                await anyio.sleep(0.002)
        await clock.run_until_idle()


async def real_time_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (real time: a store's answer, a heartbeat) until ``condition()`` holds."""
    with anyio.move_on_after(5):
        while True:
            if condition():
                return
            await anyio.sleep(0.002)
    raise AssertionError(f"not within 5 s: {what}")


async def history_of(url: str) -> dict[str, list[tuple[int, Outcome | None, float | None]]]:
    """Each timer's runs in the store: (seconds after the first point, outcome, duration s)."""
    store = open_store(url, "default")
    await store.open()
    records = await store.history(limit=1000)
    await store.close()
    first_ms = min(r.instant_ms for r in records)
    runs = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.timer, r.instant_ms)):
        assert r.node == "a"
        duration_s = None if r.duration_ns is None else r.duration_ns / S
        runs[r.timer].append(((r.instant_ms - first_ms) // 1000, r.outcome, duration_s))
    return runs


async def test_named_timers_are_guarded_at_start_without_cluster_true(url: str) -> None:
    # issue 13: timers=[...] guards named timers, like LeaderLock(timers=...)
    clock = aligned_clock()
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    walls: list[int] = []
    purge = scheduler.add_every_s(
        POINT_S, lambda tick: walls.append(round(tick.wall.timestamp())), name="purge"
    )
    local = scheduler.add_every_s(POINT_S, lambda: None, name="local")
    cluster = Cluster(url, node="a", timers=["purge"], max_skew_s=3600, **FAST)
    scheduler.add_service(cluster)
    assert not purge.spec.cluster
    async with scheduler:
        assert purge.spec.cluster  # guarded by the cluster when the scheduler started
        assert not local.spec.cluster
        await claim_points(clock, cluster, 2, per_point=1)
        assert cluster.stats().timers["purge"].won == 2
    assert [w % POINT_S for w in walls] == [0, 0]  # on the epoch-anchored grid
    assert walls[1] - walls[0] == POINT_S
    assert await history_of(url) == {"purge": [(0, Outcome.OK, 0.0), (10, Outcome.OK, 0.0)]}
    assert local.runs == 1  # not gated: on its own grid, from the start (10 s, at 15 s)
    await scheduler.start()  # a second start guards nothing new and claims again
    await scheduler.stop()


async def test_a_handover_loses_no_point_when_the_backup_claim_is_later_than_the_next_point(
    url: str, ghost: ClaimStore
) -> None:
    # "g" is the timer's preferred node and dies (its heartbeat runs out) just after grid point
    # T. "a" backs T up: its claim is due backup_delay_s after T, here later than T + interval
    # (a loaded host's stall does the same to a short delay). By T + interval "a" no longer
    # sees "g" and, now preferred, claims T + interval at once: T goes with that claim, first
    # (the fence would refuse T after it, and T would run nowhere).
    clock = aligned_clock()
    timer = next(f"job-{i}" for i in range(99) if preferred_node(f"job-{i}", "ag") == "g")
    await ghost.heartbeat("g", 0.5)
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    walls: list[int] = []
    scheduler.add_every_s(
        POINT_S, lambda tick: walls.append(round(tick.wall.timestamp())), name=timer, cluster=True
    )
    options = {**FAST, "backup_delay_s": 1.5 * POINT_S}
    store = ClaimsSeenStore(open_store(url, "default"))
    cluster = Cluster(store, node="a", max_skew_s=3600, **options)  # type: ignore[arg-type]
    scheduler.add_service(cluster)
    async with scheduler:
        assert cluster.stats().live_nodes == ("a", "g")
        await clock.advance_to(5 * S)  # T: "g" is preferred, "a" waits 15 s to back it up
        await clock.run_until_idle()
        assert walls == []
        # (real time: the store's clock expires "g")
        await real_time_until(lambda: cluster.stats().live_nodes == ("a",), "g expired")
        await clock.advance_to(15 * S)  # T + interval: "a" is preferred, claims at once
        await real_time_until(lambda: cluster.stats().claims > 0, "a claim answered")
        await clock.run_until_idle()
        assert len(walls) == 2, walls  # T and T + interval, both run at T + interval
        await clock.advance_to(21 * S)  # T's own backup deadline: nothing left to claim
        await clock.run_until_idle()
        stats = cluster.stats().timers[timer]
    assert [w - walls[0] for w in walls] == [0, POINT_S]
    assert (stats.won, stats.run_elsewhere) == (2, 0)
    # One round trip, T first (the fence's order); none left for T's backup deadline.
    t_ms = walls[0] * 1000
    assert store.batches == [[(timer, t_ms), (timer, t_ms + POINT_S * 1000)]]
    assert await history_of(url) == {timer: [(0, Outcome.OK, 0.0), (10, Outcome.OK, 0.0)]}


class FirstClaimHeldStore(ClaimsSeenStore):
    """A real store whose first claim waits for ``release`` before it goes on to the store:
    a slow round trip (a loaded host, a pool connection that stalls) that a later claim of
    the same node could overtake."""

    def __init__(self, store: ClaimStore) -> None:
        super().__init__(store)
        self.release = anyio.Event()

    async def before_store(self) -> None:
        if len(self.batches) == 1:
            await self.release.wait()


def held_first_claim_node(
    url: str, **options: float
) -> tuple[VirtualClock, aiotimer.Scheduler, FirstClaimHeldStore, Cluster, list[int]]:
    """Node "a" with one cluster timer "job" of ``POINT_S`` on an aligned clock, its store's
    first claim held (:class:`FirstClaimHeldStore`); the list gets each run's wall second."""
    clock = aligned_clock()
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    walls: list[int] = []
    scheduler.add_every_s(
        POINT_S, lambda tick: walls.append(round(tick.wall.timestamp())), name="job", cluster=True
    )
    store = FirstClaimHeldStore(open_store(url, "default"))
    settings = {**FAST, **options}
    cluster = Cluster(store, node="a", max_skew_s=3600, **settings)  # type: ignore[arg-type]
    scheduler.add_service(cluster)
    return clock, scheduler, store, cluster, walls


async def test_a_nodes_claims_reach_the_store_in_the_order_it_made_them(url: str) -> None:
    # The claim of point T is slow; T + interval comes due meanwhile. Had that claim gone out
    # beside the first (the stores' pools have several connections) and won first, the fence
    # would refuse T when its answer came: T would run nowhere (a drill lost points so on a
    # loaded host). One claim of a node is in flight at a time: T + interval waits for T.
    clock, scheduler, store, cluster, walls = held_first_claim_node(url)
    async with scheduler:
        await clock.advance_to(5 * S)  # T: its claim is held
        await real_time_until(lambda: len(store.batches) == 1, "T's claim sent")
        await clock.advance_to(15 * S)  # T + interval: its claim waits for T's answer
        await clock.run_until_idle()
        await anyio.sleep(0.05)  # (real time: a claim sent beside T's would be answered)
        assert len(store.batches) == 1, store.batches
        store.release.set()
        await real_time_until(lambda: cluster.stats().claims == 2, "both claims answered")
        await clock.run_until_idle()
        stats = cluster.stats().timers["job"]
    assert [w - walls[0] for w in walls] == [0, POINT_S]
    assert (stats.won, stats.run_elsewhere) == (2, 0)
    t_ms = walls[0] * 1000
    assert store.batches == [[("job", t_ms)], [("job", t_ms + POINT_S * 1000)]]


async def test_a_claim_behind_an_unanswered_one_fails_after_the_store_timeout(url: str) -> None:
    # The store does not answer the claim of T. The claim of T + interval waits for it, but no
    # longer than a store call may take: it fails (a store error, its point skipped) instead
    # of queueing points to run late once the store answers again.
    clock, scheduler, store, cluster, walls = held_first_claim_node(url, store_timeout_s=0.2)
    async with scheduler:
        await clock.advance_to(5 * S)  # T: its claim is held
        await real_time_until(lambda: len(store.batches) == 1, "T's claim sent")
        await clock.advance_to(15 * S)  # T + interval: waits behind it, then fails
        await real_time_until(lambda: cluster.stats().store_errors == 1, "the wait timed out")
        store.release.set()
        await real_time_until(lambda: cluster.stats().claims == 1, "T's claim answered")
        await clock.run_until_idle()
        stats = cluster.stats().timers["job"]
    assert len(walls) == 1  # T, late: the store answered its claim
    assert (stats.won, stats.run_elsewhere, stats.store_errors) == (1, 0, 1)
    assert len(store.batches) == 1  # T + interval never reached the store


async def test_the_history_has_each_runs_exact_outcome_and_duration(url: str) -> None:
    clock = aligned_clock()
    scheduler = aiotimer.Scheduler(clock=clock, name="a")

    def fails() -> None:
        raise RuntimeError("boom")

    async def hangs() -> None:
        await clock.sleep(100)

    async def works() -> None:
        await clock.sleep(4)

    async def slow() -> None:  # 15 s: every other point is due while it still runs here
        await clock.sleep(15)

    scheduler.add_every_s(POINT_S, fails, name="fails", cluster=True)
    scheduler.add_every_s(POINT_S, hangs, name="hangs", cluster=True, timeout_s=3)
    scheduler.add_every_s(POINT_S, works, name="works", cluster=True)
    scheduler.add_every_s(POINT_S, slow, name="slow", cluster=True)
    cluster = Cluster(url, node="a", max_skew_s=3600, **FAST)
    scheduler.add_service(cluster)
    await scheduler.start()
    await claim_points(clock, cluster, 6, per_point=4)  # points at 5, 15... 55 s
    await clock.advance(2)
    await scheduler.stop(grace_s=0)  # at 57 s: the runs still going are cancelled
    ok, error, timeout = Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT
    cancelled, skipped = Outcome.CANCELLED, Outcome.SKIPPED
    assert await history_of(url) == {
        "fails": [(10 * k, error, 0.0) for k in range(6)],
        "hangs": [(10 * k, timeout, 3.0) for k in range(5)] + [(50, cancelled, 2.0)],
        "works": [(10 * k, ok, 4.0) for k in range(5)] + [(50, cancelled, 2.0)],
        "slow": [
            (0, ok, 15.0),
            (10, skipped, 0.0),  # won, but the run of 0 s still went on here: an overlap
            (20, ok, 15.0),
            (30, skipped, 0.0),
            (40, cancelled, 12.0),
            (50, skipped, 0.0),
        ],
    }
    assert {name: t.won for name, t in cluster.stats().timers.items()} == {
        "fails": 6,
        "hangs": 6,
        "works": 6,
        "slow": 6,
    }


async def test_overlapping_runs_of_one_timer_each_get_their_own_outcome(url: str) -> None:
    clock = aligned_clock()
    scheduler = aiotimer.Scheduler(clock=clock, name="a")
    durations = iter([14, 2])

    async def flaky() -> None:
        duration = next(durations)
        await clock.sleep(duration)
        if duration == 2:
            raise RuntimeError("flaky")

    overlap = aiotimer.Overlap.CONCURRENT(2)
    scheduler.add_every_s(POINT_S, flaky, name="flaky", cluster=True, overlap=overlap)
    cluster = Cluster(url, node="a", max_skew_s=3600, **FAST)
    scheduler.add_service(cluster)
    await scheduler.start()
    await claim_points(clock, cluster, 2, per_point=1)  # points at 5 and 15 s
    await clock.advance_to(20 * S)
    await scheduler.stop()
    # The run of 0 s goes on until 14 s; the one of 10 s fails at 12 s, meanwhile.
    assert await history_of(url) == {
        "flaky": [(0, Outcome.OK, 14.0), (10, Outcome.ERROR, 2.0)],
    }


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
        ({"store_timeout_s": 0}, "store_timeout_s must be"),
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


@pytest.mark.slow
async def test_cluster_numbers_reach_prometheus(url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    import aiotimer.prometheus

    cluster = Cluster(url, node="a", name="svc", **FAST)
    runs: Runs = defaultdict(list)
    scheduler = node(cluster, ["job"], runs)
    registry = CollectorRegistry()
    aiotimer.prometheus.register(scheduler, registry=registry)
    await scheduler.start()
    await anyio.sleep(0.3)
    labels = {"scheduler": "a", "cluster": "svc"}
    won = registry.get_sample_value(
        "aiotimer_cluster_points_total", {**labels, "timer": "job", "result": "won"}
    )
    assert won is not None
    assert won >= 1
    assert registry.get_sample_value("aiotimer_cluster_live_nodes", labels) == 1.0
    assert registry.get_sample_value("aiotimer_cluster_refusing", labels) == 0.0
    assert registry.get_sample_value("aiotimer_cluster_store_errors_total", labels) == 0.0
    p50 = registry.get_sample_value("aiotimer_cluster_claim_seconds", {**labels, "quantile": "0.5"})
    assert p50 is not None
    assert 0 < p50 < 1
    text = generate_latest(registry).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["aiotimer_cluster_points"] == "counter"
    assert types["aiotimer_cluster_live_nodes"] == "gauge"
    await scheduler.stop()


@pytest.mark.slow
async def test_with_a_lease_a_run_left_unfinished_is_run_again_by_another_node(url: str) -> None:
    # "a" is preferred for the timer and wins its points, but its callback hangs: with a
    # lease, "b" claims each lost point again once the lease ran out, wins it, and runs it.
    timer = next(f"job-{i}" for i in range(99) if preferred_node(f"job-{i}", "ab") == "a")
    options = {**FAST, "lease_s": 0.2}
    a, b = Cluster(url, node="a", **options), Cluster(url, node="b", **options)
    runs: Runs = defaultdict(list)
    started_on_a: list[int] = []

    async def hang(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        started_on_a.append(round(tick.wall.timestamp() * 1000))
        await anyio.sleep(30)

    sa = aiotimer.Scheduler(name="a")
    sa.add_every_ms(300, hang, name=timer, cluster=True)
    sa.add_service(a)
    # The point a started and left hanging is run again by b; so are the later points a won
    # but could not run (its run still going: overlap), left unfinished for the lease. (Waited
    # for, not slept for: on a loaded host a lease and a backup delay take longer.)
    retaken_both = anyio.Event()

    def retaken() -> set[int]:
        return {i for _, i, _ in runs["b"]}

    def run_on_b(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        runs["b"].append((timer, round(tick.wall.timestamp() * 1000), 0))
        if started_on_a and started_on_a[0] in retaken() and len(retaken()) >= 2:
            retaken_both.set()

    sb = node(b, [], runs)
    sb.add_every_ms(300, run_on_b, name=timer, cluster=True)
    await sb.start()  # first: b tries every point a wins (a node retakes only points it lost)
    await sa.start()
    with anyio.move_on_after(10):
        await retaken_both.wait()
    await sb.stop()
    await sa.stop(grace_s=0)
    assert started_on_a, "a never won a point"
    assert started_on_a[0] in retaken(), (started_on_a, sorted(retaken()))
    assert len(retaken()) >= 2, sorted(retaken())


async def test_a_backup_delay_near_an_interval_is_warned_about(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = aiotimer.Scheduler()
    scheduler.add_every_ms(300, lambda: None, name="fast", cluster=True)
    scheduler.add_every_s(60, lambda: None, name="slow", cluster=True)
    scheduler.add_service(Cluster(url, node="a", backup_delay_s=0.25))
    with caplog.at_level(logging.WARNING, logger="aiotimer.cluster"):
        await scheduler.start()
        await scheduler.stop()
    assert "backup_delay_s=0.25 is not well under the 0.3 s interval of timer 'fast'" in caplog.text
    assert "'slow'" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_sqlite_cluster_runs_on_trio(anyio_backend: str, url: str) -> None:
    runs: Runs = defaultdict(list)
    cluster = Cluster(url, node="a", **FAST)
    scheduler = node(cluster, ["job"], runs)
    async with scheduler:
        await anyio.sleep(0.4)
    assert runs["a"]
    store = open_store(url, "default")
    await store.open()
    history = await store.history("job")
    await store.close()
    assert {r.instant_ms for r in history} >= {i for _, i, _ in runs["a"]}
    assert all(r.finished for r in history)
