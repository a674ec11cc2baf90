"""The claim stores (SQLite, PostgreSQL, Redis) keep one contract: exactly one winner per grid
point, a fence on the grid instant, visible unfinished runs, independent clusters, typed errors.

Every test runs against every store, on the real servers (see ``cluster_stores``).
"""

from __future__ import annotations

import math
import multiprocessing
import random
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from cluster_stores import KINDS, CuttableProxy, race_node, store_url, unique_cluster

from aiotimer.cluster import (
    ClaimStore,
    Outcome,
    RunOutcome,
    StoreError,
    StoreUnavailable,
    open_store,
)

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000_000  # a grid instant (ms since the epoch) in 2027

OpenStore = Callable[..., Awaitable[ClaimStore]]


@pytest.fixture
def anyio_backend() -> str:
    # asyncpg and redis-py run on asyncio only.
    return "asyncio"


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
async def stores(url: str) -> AsyncIterator[OpenStore]:
    """Opens stores on ``url`` (one per node, as separate processes would), all in one fresh
    cluster unless told otherwise; drops and closes them all at the end."""
    default_cluster = unique_cluster()
    opened: list[ClaimStore] = []

    async def open_one(cluster: str | None = None, **options: float) -> ClaimStore:
        store = open_store(url, cluster or default_cluster, **options)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.drop()
        await store.close()


@pytest.fixture
async def store(stores: OpenStore) -> ClaimStore:
    return await stores()


# -- exactly one winner -------------------------------------------------------------------------


async def test_each_grid_point_has_exactly_one_winner_among_racing_nodes(
    stores: OpenStore,
) -> None:
    nodes = [await stores() for _ in range(4)]
    timers = ["purge", "report", "sync"]
    instants = [T0 + k * 1000 for k in range(100)]  # 300 grid points
    won: dict[str, list[tuple[str, int]]] = {f"n{i}": [] for i in range(len(nodes))}

    async def node(name: str, store: ClaimStore) -> None:
        for instant in instants:
            batch = [(t, instant) for t in timers]
            for claim, flag in zip(batch, await store.claim(name, batch), strict=True):
                if flag:
                    won[name].append(claim)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i, store in enumerate(nodes):
            tg.start_soon(node, f"n{i}", store)

    winners = [claim for claims in won.values() for claim in claims]
    assert sorted(winners) == sorted((t, i) for t in timers for i in instants)
    history = await nodes[0].history(limit=1000)
    assert {(r.timer, r.instant_ms): r.node for r in history} == {
        claim: name for name, claims in won.items() for claim in claims
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_grid_point_has_exactly_one_winner_among_node_processes(
    kind: str, tmp_path: Path
) -> None:
    url = store_url(kind, tmp_path)
    cluster = unique_cluster("procs")
    timers = ["purge", "report"]
    instants = [T0 + k * 1000 for k in range(160)]  # 320 grid points
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(
            target=race_node, args=(url, cluster, f"n{i}", timers, instants, barrier, results)
        )
        for i in range(3)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=45) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for node, won in outcomes.items():
        assert isinstance(won, list), f"node {node} failed: {won}"
    winners = [tuple(c) for won in outcomes.values() for c in won]
    assert len(winners) == len(set(winners)), "a grid point was won twice"
    assert sorted(winners) == sorted((t, i) for t in timers for i in instants)

    async def check_history() -> None:
        store = open_store(url, cluster)
        await store.open()
        try:
            history = await store.history(limit=1000)
            assert len(history) == len(winners)
            by_point = {(r.timer, r.instant_ms): r.node for r in history}
            for node, won in outcomes.items():
                assert all(by_point[tuple(c)] == node for c in won)
        finally:
            await store.drop()
            await store.close()

    anyio.run(check_history)


async def test_a_batch_bigger_than_a_script_keeps_every_answer_in_order(
    store: ClaimStore,
) -> None:
    claims = [(f"t{i}", T0) for i in range(2500)]  # Redis splits it in 3 scripts
    first = await store.claim("a", claims[1::2])
    assert first == [True] * 1250
    assert await store.claim("b", claims) == [i % 2 == 0 for i in range(2500)]


async def test_a_finish_bigger_than_a_script_records_every_end(store: ClaimStore) -> None:
    claims = [(f"t{i}", T0) for i in range(2500)]  # Redis splits it in 3 scripts
    await store.claim("a", claims)
    await store.finish("a", [RunOutcome(t, i, Outcome.OK, 5) for t, i in claims])
    history = await store.history(limit=3000)
    assert len(history) == 2500
    assert all(r.finished and r.outcome is Outcome.OK for r in history)


async def test_ten_thousand_ends_are_recorded_well_within_a_cluster_timeout(
    store: ClaimStore,
) -> None:
    # A cluster reports the ends of a batch in one call bounded by store_timeout_s (2 s by
    # default); a plan scanning the batch once per stored run took 15 s here.
    claims = [(f"t{i}", T0) for i in range(10_000)]
    await store.claim("a", claims)
    await store.claim("a", [(f"t{i}", T0 + 1000) for i in range(10_000)])  # more stored runs
    started = time.monotonic()
    await store.finish("a", [RunOutcome(t, i, Outcome.OK, 5) for t, i in claims])
    assert time.monotonic() - started < 2.0
    finished = [r for r in await store.history(limit=20_000) if r.finished]
    assert len(finished) == 10_000


# -- the fence --------------------------------------------------------------------------------


async def test_an_instant_older_than_the_last_claimed_is_refused_even_after_pruning(
    store: ClaimStore,
) -> None:
    assert await store.claim("a", [("purge", T0 + 2000)]) == [True]
    # A node whose clock runs late asks for an older point that nobody claimed.
    assert await store.claim("late", [("purge", T0 + 1000)]) == [False]
    assert await store.prune(2**62) >= 1  # the runs are gone; the fence is not
    assert await store.history() == []
    assert await store.claim("late", [("purge", T0 + 1000), ("purge", T0 + 2000)]) == [
        False,
        False,
    ]
    assert await store.claim("late", [("purge", T0 + 3000)]) == [True]


async def test_a_batch_with_several_instants_of_one_timer_wins_each_newer_one(
    store: ClaimStore,
) -> None:
    assert await store.claim("a", [("t", T0 + 1000), ("t", T0 + 2000)]) == [True, True]
    assert await store.claim("b", [("t", T0 + 1500), ("t", T0 + 2500), ("u", T0)]) == [
        False,
        True,
        True,
    ]


async def test_instants_at_the_ends_of_the_64_bit_range_compare_exactly(
    store: ClaimStore,
) -> None:
    big = 2**63 - 2
    assert await store.claim("a", [("t", 0)]) == [True]
    assert await store.claim("a", [("t", big)]) == [True]
    assert await store.claim("b", [("t", big - 1)]) == [False]  # a double would round it up
    assert await store.claim("b", [("t", big + 1)]) == [True]


# -- clusters, history, finish, prune -----------------------------------------------------------


async def test_two_clusters_on_one_store_do_not_interfere(stores: OpenStore) -> None:
    blue, green = await stores(unique_cluster("blue")), await stores(unique_cluster("green"))
    assert await blue.claim("a", [("purge", T0)]) == [True]
    assert await green.claim("b", [("purge", T0)]) == [True]
    await blue.heartbeat("a", 30)
    assert [n.node for n in await green.nodes()] == []
    assert [(r.node, r.instant_ms) for r in await green.history()] == [("b", T0)]
    await green.drop()
    assert await blue.claim("c", [("purge", T0)]) == [False]


async def test_finish_records_outcomes_and_unfinished_runs_stay_visible(
    store: ClaimStore,
) -> None:
    before = await store.clock_ns()
    claims = [("t", T0), ("u", T0), ("v", T0)]
    assert await store.claim("a", claims) == [True, True, True]
    after = await store.clock_ns()
    await store.finish(
        "a",
        [RunOutcome("t", T0, Outcome.OK, 1_500_000), RunOutcome("u", T0, Outcome.ERROR, 7)],
    )
    finished_by = await store.clock_ns()
    records = {r.timer: r for r in await store.history()}
    assert set(records) == {"t", "u", "v"}
    t, u, v = records["t"], records["u"], records["v"]
    assert (t.outcome, t.duration_ns, u.outcome, u.duration_ns) == (
        Outcome.OK,
        1_500_000,
        Outcome.ERROR,
        7,
    )
    # "v" was claimed and never finished (its winner died): visible, with who holds it.
    assert (v.node, v.finished, v.outcome, v.duration_ns) == ("a", False, None, None)
    for r in (t, u, v):
        assert before - 1000 <= r.claimed_ns <= after + 1000  # µs-precision stores
    assert t.finished_ns is not None
    assert t.claimed_ns <= t.finished_ns <= finished_by + 1000
    assert [r.timer for r in await store.history("v")] == ["v"]


async def test_finish_from_a_node_that_does_not_hold_the_run_is_ignored(
    store: ClaimStore,
) -> None:
    assert await store.claim("a", [("t", T0)]) == [True]
    await store.finish("b", [RunOutcome("t", T0, Outcome.OK, 1)])
    await store.finish("b", [RunOutcome("never", T0, Outcome.OK, 1)])
    [record] = await store.history()
    assert (record.node, record.finished) == ("a", False)


async def test_history_is_newest_instant_first_and_limited(store: ClaimStore) -> None:
    for k in range(5):
        await store.claim("a", [("t", T0 + k * 1000)])
        await store.finish("a", [RunOutcome("t", T0 + k * 1000, Outcome.OK, k)])
    await store.claim("a", [("t", T0 + 5000)])  # unfinished, newest
    assert [r.instant_ms for r in await store.history("t", limit=3)] == [
        T0 + 5000,
        T0 + 4000,
        T0 + 3000,
    ]


async def test_prune_deletes_runs_older_than_the_cutoff_only(store: ClaimStore) -> None:
    claims = [("t", T0 + k * 1000) for k in range(4)]
    await store.claim("a", claims)
    await store.finish("a", [RunOutcome("t", T0, Outcome.OK, 1)])
    # The Redis history stream is trimmed by finish time; the cutoff in the past keeps it.
    deleted = await store.prune((T0 + 2000) * 1_000_000)
    remaining = [r.instant_ms for r in await store.history()]
    assert T0 + 2000 in remaining
    assert T0 + 3000 in remaining
    assert T0 + 1000 not in remaining
    assert deleted >= 1


async def test_prune_reaches_every_run_of_a_large_store_chunk_by_chunk(
    store: ClaimStore,
) -> None:
    claims = [(f"t{i}", T0 + k * 1000) for k in range(5) for i in range(5000)]
    for k in range(5):  # 25,000 runs: 3 chunks (Redis: 25 HSCAN pages)
        await store.claim("a", claims[k * 5000 : (k + 1) * 5000])
    await store.finish("a", [RunOutcome("t0", T0, Outcome.OK, 1)])
    round_trips = store.round_trips
    assert await store.prune((T0 + 5000) * 1_000_000) >= 24_999
    assert store.round_trips - round_trips >= 3
    assert await store.history(limit=30_000) == []


# -- liveness and leases (real time: the store's clock cannot be virtual) ------------------------


@pytest.mark.slow
async def test_heartbeat_lists_live_nodes_until_their_ttl_passes(stores: OpenStore) -> None:
    a, b = await stores(), await stores()
    assert [n.node for n in await a.heartbeat("a", 0.4)] == ["a"]
    live = await b.heartbeat("b", 30)
    assert [n.node for n in live] == ["a", "b"]
    now = await b.clock_ns()
    assert now < live[0].expires_ns <= now + 400_000_000
    await anyio.sleep(0.6)
    assert [n.node for n in await b.nodes()] == ["b"]
    await b.leave("b")
    assert await a.nodes() == []


@pytest.mark.slow
async def test_a_leased_run_left_unfinished_is_taken_over_after_the_lease(
    store: ClaimStore,
) -> None:
    assert await store.claim("a", [("t", T0), ("u", T0)], lease_s=0.3) == [True, True]
    await store.finish("a", [RunOutcome("u", T0, Outcome.OK, 1)])
    assert await store.claim("b", [("t", T0)], lease_s=0.3) == [False]  # lease still held
    await anyio.sleep(0.5)
    # "t" expired unfinished: b takes it over; "u" finished: nobody runs it again.
    assert await store.claim("b", [("t", T0), ("u", T0)], lease_s=0.3) == [True, False]
    assert await store.claim("c", [("t", T0)], lease_s=0.3) == [False]
    await store.finish("a", [RunOutcome("t", T0, Outcome.OK, 1)])  # a lost it: ignored
    await store.finish("b", [RunOutcome("t", T0, Outcome.TIMEOUT, 2)])
    records = {r.timer: r for r in await store.history()}
    assert (records["t"].node, records["t"].outcome) == ("b", Outcome.TIMEOUT)


async def test_racing_nodes_take_each_expired_run_over_exactly_once(stores: OpenStore) -> None:
    first = await stores()
    runs = [(f"t{i}", T0) for i in range(300)]
    assert await first.claim("a", runs, lease_s=0.2) == [True] * 300
    nodes = [await stores() for _ in range(4)]
    await anyio.sleep(0.4)
    won: dict[str, list[tuple[str, int]]] = {}

    async def retake(name: str, store: ClaimStore) -> None:
        batch = random.sample(runs, len(runs))  # each node in its own order
        flags = await store.claim(name, batch, lease_s=60)
        won[name] = [run for run, flag in zip(batch, flags, strict=True) if flag]

    async with anyio.create_task_group() as tg:
        for i, store in enumerate(nodes):
            tg.start_soon(retake, f"n{i}", store)
    winners = [run for taken in won.values() for run in taken]
    assert sorted(winners) == sorted(runs)  # each run once, none lost
    owner = {run: name for name, taken in won.items() for run in taken}
    assert {(r.timer, r.instant_ms): r.node for r in await first.history(limit=400)} == owner
    await first.finish("a", [RunOutcome(t, i, Outcome.OK, 1) for t, i in runs])  # a lost all
    assert not any(r.finished for r in await first.history(limit=400))


@pytest.mark.slow
async def test_without_a_lease_an_unfinished_run_is_never_claimed_again(
    store: ClaimStore,
) -> None:
    assert await store.claim("a", [("t", T0)]) == [True]
    await anyio.sleep(0.3)
    assert await store.claim("b", [("t", T0)], lease_s=0.1) == [False]


async def test_on_new_postgres_tables_big_batches_of_retakes_and_ends_stay_lookups(
    tmp_path: Path,
) -> None:
    # On tables never analysed (a new deployment; autovacuum off or not yet run), the planner
    # guessed one unfinished run and looked every run of the batch up once per stored run:
    # 2,500 ends took 41 s and taking over 5,000 expired leases 3.5 s: past the 2 s store
    # timeout a cluster has by default, within which every call here must finish (each takes
    # 0.1-0.2 s here).
    asyncpg = pytest.importorskip("asyncpg")
    base = store_url("postgres", tmp_path)
    schema = unique_cluster("fresh").replace("-", "_")  # new tables in a schema of their own
    admin = await asyncpg.connect(base)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = base + ("&" if "?" in base else "?") + f"search_path={schema}"
        store = open_store(url, unique_cluster("fresh"), timeout_s=2.0)
        await store.open()
        try:
            runs = [(f"t{i}", T0) for i in range(5000)]
            assert await store.claim("a", runs, lease_s=0.2) == [True] * 5000
            await anyio.sleep(0.4)
            assert await store.claim("b", runs, lease_s=60) == [True] * 5000  # all retaken
            await store.finish("a", [RunOutcome(t, i, Outcome.OK, 5) for t, i in runs])
            await store.finish("b", [RunOutcome(t, i, Outcome.ERROR, 7) for t, i in runs])
            history = await store.history(limit=6000)
            assert len(history) == 5000
            assert {(r.node, r.outcome, r.duration_ns) for r in history} == {
                ("b", Outcome.ERROR, 7)
            }
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "error", "match"),
    [
        ([("t", -1)], ValueError, r"timer 't': instant_ms must be in 0\.\.2\*\*63-1, got -1"),
        ([("t", 2**63)], ValueError, "got 9223372036854775808"),
        ([("t", 10**30)], ValueError, "got 10000000000000000000000000000"),
        ([("t", 1.5)], TypeError, "timer 't': instant_ms must be an int"),
        ([("t", math.nan)], TypeError, "got nan"),
        ([("t", True)], TypeError, "got True"),
        ([("", 1)], ValueError, "timer name must be 1 to 200 characters"),
        ([("a\0b", 1)], ValueError, "without NUL"),
        ([(None, 1)], TypeError, "timer name must be a str"),
        ([("t", 1), ("t", 1)], ValueError, "timer 't': the instants of a timer must increase"),
        ([("t", 2), ("u", 1), ("t", 1)], ValueError, "must increase within a batch, got 1 after 2"),
        (["t"], TypeError, "a claim must be a"),
    ],
)
async def test_a_malformed_claim_is_refused_naming_the_timer_and_value(
    store: ClaimStore, claims: list[tuple[str, int]], error: type[Exception], match: str
) -> None:
    round_trips = store.round_trips
    with pytest.raises(error, match=match):
        await store.claim("a", claims)
    assert store.round_trips == round_trips  # refused before reaching the store


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "1"])
async def test_durations_must_be_finite_and_positive(store: ClaimStore, bad: object) -> None:
    message = f"ttl_s must be a finite number of seconds > 0, got {re.escape(repr(bad))}"
    with pytest.raises(ValueError, match=message):
        await store.heartbeat("a", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_s must be"):
        await store.claim("a", [("t", 1)], lease_s=bad)  # type: ignore[arg-type]


async def test_a_node_name_is_checked(store: ClaimStore) -> None:
    with pytest.raises(ValueError, match="node name must be 1 to 200 characters"):
        await store.claim("", [("t", 1)])
    with pytest.raises(ValueError, match="node name must be 1 to 200 characters"):
        await store.heartbeat("x" * 201, 1)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/test",
        "redis://127.0.0.1:1/0",
        "sqlite:///nonexistent-dir-for-aiotimer/claims.db",
    ],
)
async def test_an_unreachable_store_raises_store_unavailable_quickly(url: str) -> None:
    store = open_store(url, unique_cluster(), connect_timeout_s=0.5, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1|nonexistent-dir|unable to open"):
        await store.open()
    assert time.monotonic() - started < 3.0
    await store.close()


async def test_a_store_that_never_answers_times_out_with_store_unavailable() -> None:
    # A listening socket that accepts and never answers: the driver must give up by itself.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted = []

    async def hold(conn: anyio.abc.SocketStream) -> None:
        accepted.append(conn)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        for url in (f"postgresql://postgres@127.0.0.1:{port}/test", f"redis://127.0.0.1:{port}/0"):
            store = open_store(url, unique_cluster(), connect_timeout_s=0.5, timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.open()
            assert time.monotonic() - started < 3.0, url
            await store.close()
        tg.cancel_scope.cancel()
    assert accepted


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_claims_cancelled_mid_flight_do_not_poison_the_connection(
    kind: str, tmp_path: Path
) -> None:
    # CVE-2023-28858/28859: a reply left on a pooled connection by a cancelled command was read
    # by the next one. Cancel many claims at random points of their flight (anyio's cancel
    # scopes, as a scheduler's stop does), then check that every later answer is the answer to
    # its own question.
    store = open_store(store_url(kind, tmp_path), unique_cluster("cancel"))
    await store.open()
    try:
        rng = random.Random(1)
        cancelled = 0
        for k in range(40):
            batch = [(f"storm-{j}", T0 + k) for j in range(200)]
            with anyio.move_on_after(rng.uniform(0, 0.004)) as scope:
                await store.claim("a", batch)
            cancelled += scope.cancelled_caught
        assert cancelled > 0
        for size in (1, 7, 300):
            fresh = [(f"after-{size}-{j}", T0) for j in range(size)]
            assert await store.claim("a", fresh) == [True] * size
            assert await store.claim("b", fresh) == [False] * size
        assert abs(await store.clock_ns() - time.time_ns()) < 60 * 10**9
        assert [n.node for n in await store.heartbeat("a", 30)] == ["a"]
    finally:
        await store.drop()
        await store.close()


async def test_a_cancelled_sqlite_claim_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    url = store_url("sqlite", tmp_path)
    a, b = open_store(url, "c"), open_store(url, "c", timeout_s=2.0)
    await a.open()
    await b.open()
    claims = [(f"t{i}", T0) for i in range(5000)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.claim, "a", claims)
        await anyio.sleep(0.002)  # the claim's transaction is running in its thread
        tg.cancel_scope.cancel()
    held = len(await a.history(limit=10_000))
    assert held in (0, 5000)
    # The file is not left locked: another node claims at once, and sees the same answer.
    assert await b.claim("b", claims) == [held == 0] * 5000
    await a.close()
    await b.close()


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr3t@db.example:5432/svc",
        "postgresql://app@db.example/svc?password=s3cr3t&sslmode=require",
        "redis://:s3cr3t@cache.example:6379/0",
    ],
)
def test_passwords_never_show_in_a_store_repr_or_url(url: str) -> None:
    store = open_store(url, "c")
    assert "s3cr3t" not in repr(store)
    assert "s3cr3t" not in store.url
    assert "***" in store.url


def test_an_unknown_scheme_is_refused_with_the_url_masked() -> None:
    with pytest.raises(ValueError, match=r"'mysql://u:\*\*\*@h/db': unknown scheme 'mysql'"):
        open_store("mysql://u:s3cr3t@h/db")


def test_a_relative_sqlite_path_is_refused() -> None:
    with pytest.raises(ValueError, match="names an absolute path"):
        open_store("sqlite://claims.db")


@pytest.mark.parametrize("name", ["", "x" * 201, "a\0b", 3])
def test_a_cluster_name_is_checked(name: object) -> None:
    with pytest.raises((ValueError, TypeError), match="cluster name must be"):
        open_store("sqlite:///tmp/x.db", name)  # type: ignore[arg-type]


# -- outages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_a_store_cut_off_raises_store_unavailable_then_recovers_when_healed(
    kind: str, tmp_path: Path
) -> None:
    url = store_url(kind, tmp_path)
    parts = urllib.parse.urlsplit(url)
    async with CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 0) as proxy:
        store = open_store(proxy.url(url), unique_cluster("cut"), connect_timeout_s=1, timeout_s=1)
        await store.open()
        try:
            assert await store.claim("a", [("t", T0)]) == [True]
            await proxy.cut()
            for k in range(1, 4):  # every call fails fast and typed while cut off
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.claim("a", [("t", T0 + k * 1000)])
                assert time.monotonic() - started < 3.0
            proxy.heal()
            with anyio.fail_after(10):
                while True:  # the first call after healing may still meet a dead connection
                    try:
                        won = await store.claim("a", [("t", T0 + 5000)])
                        break
                    except StoreUnavailable:
                        await anyio.sleep(0.05)
            assert won == [True]
            assert await store.claim("b", [("t", T0 + 5000)]) == [False]
        finally:
            await store.drop()
            await store.close()


async def test_an_in_memory_sqlite_store_serves_one_store_object() -> None:
    store = open_store("sqlite:///:memory:", "c")
    await store.open()
    assert await store.claim("a", [("t", T0)]) == [True]
    assert await store.claim("b", [("t", T0)]) == [False]
    assert [r.node for r in await store.history()] == ["a"]
    await store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_sqlite_store_runs_on_trio(anyio_backend: str, tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'claims.db'}", "c")
    await store.open()
    assert await store.claim("a", [("t", T0), ("u", T0)]) == [True, True]
    assert [n.node for n in await store.heartbeat("a", 30)] == ["a"]
    await store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/test", "redis://127.0.0.1:1/0"])
async def test_the_server_stores_say_they_need_asyncio(anyio_backend: str, url: str) -> None:
    store = open_store(url, "c")
    with pytest.raises(StoreError, match="runs on asyncio only"):
        await store.open()
