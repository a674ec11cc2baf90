"""The PostgreSQL claim store: many hosts, durable run history (asyncpg, extra ``postgres``).

``postgresql://user@host:5432/db``; any asyncpg DSN parameter works (``?sslmode=require``).

Ground rules:

* **Schema.** Three tables with fixed names, created if missing in the connection's
  ``search_path`` (``?search_path=timers`` in the URL: a schema of their own), under an
  advisory lock, so nodes starting together do not race on ``CREATE TABLE``:
  ``aiotimer_fence`` (the newest claimed instant per timer), ``aiotimer_runs`` (one row per
  claimed run: the history) and ``aiotimer_nodes`` (liveness). The cluster name is a column,
  always a bound parameter.
* **One statement per claim batch.** ``unnest`` turns the batch into rows; the fence is an
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE last_ms < EXCLUDED.last_ms`` that locks each
  timer's fence row (in timer order, so two nodes never deadlock) and keeps the previous value
  in ``prev_ms``, so the same statement knows which instants are newer than the fence and
  inserts their runs. PostgreSQL re-checks the ``WHERE`` on the newest row version after a
  concurrent writer commits, which is what makes exactly one node win per instant.
* **The store's clock** is the server's (``now()``, the statement's start, for claims and
  leases; ``clock_timestamp()`` for :meth:`clock_ns`). Times are ``timestamptz`` (µs).
* A pool of a few connections, without asyncpg's per-release reset query (the store keeps no
  session state), so a call is one round trip once its statement is prepared (the first call
  of each statement on a connection adds a prepare round trip).
* Every call is bounded by ``timeout_s``; connecting by ``connect_timeout_s``. Connection
  failures and timeouts raise :class:`StoreUnavailable`; asyncpg cancels a timed-out
  statement on the server and the pool drops a connection it cannot reset.
* A cancelled caller returns at once, but its statement runs to its end in a task of its own
  (see ``_fetch``): cancelling asyncpg from anyio's level-triggered cancel scopes broke
  connections under a storm of cancelled claims. :meth:`close` waits for such statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from ._store import (
    PRUNE_CHUNK,
    NodeInfo,
    Outcome,
    RunOutcome,
    RunRecord,
    StoreBase,
    StoreError,
    StoreUnavailable,
    check_claims,
    check_cutoff_ns,
    check_lease,
    check_limit,
    check_node,
    check_positive_s,
    check_results,
    require_asyncio,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the PostgreSQL claim store needs asyncpg: pip install 'aiotimer[postgres]'"
    ) from exc

__all__ = ["PostgresStore"]

SCHEMA_LOCK: Final = 0x616974696D6572  # "aiotimer": the advisory lock held while creating tables
SCHEMA: Final = f"""
BEGIN;
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS aiotimer_fence (
    cluster text NOT NULL,
    timer text NOT NULL,
    last_ms bigint NOT NULL,
    prev_ms bigint,
    PRIMARY KEY (cluster, timer)
) WITH (fillfactor = 50);
CREATE TABLE IF NOT EXISTS aiotimer_runs (
    cluster text NOT NULL,
    timer text NOT NULL,
    instant_ms bigint NOT NULL,
    node text NOT NULL,
    claimed_at timestamptz NOT NULL,
    lease_until timestamptz,
    finished_at timestamptz,
    outcome text,
    duration_ns bigint,
    PRIMARY KEY (cluster, instant_ms, timer)
);
CREATE TABLE IF NOT EXISTS aiotimer_nodes (
    cluster text NOT NULL,
    node text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (cluster, node)
);
COMMIT;
"""


def _ns(column: str) -> str:
    """SQL for a ``timestamptz`` as integer ns since the epoch (exact: timestamps are µs)."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint * 1000"


CLAIM: Final = """
WITH req AS (
    SELECT r.timer, r.instant_ms, r.ord
    FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS r(timer, instant_ms, ord)
),
fence AS (
    INSERT INTO aiotimer_fence AS f (cluster, timer, last_ms, prev_ms)
    SELECT $1, timer, max(instant_ms), NULL FROM req GROUP BY timer ORDER BY timer COLLATE "C"
    ON CONFLICT (cluster, timer) DO UPDATE
        SET last_ms = EXCLUDED.last_ms, prev_ms = f.last_ms
        WHERE f.last_ms < EXCLUDED.last_ms
    RETURNING f.timer, f.prev_ms
),
fresh AS (
    INSERT INTO aiotimer_runs (cluster, timer, instant_ms, node, claimed_at, lease_until)
    SELECT $1, req.timer, req.instant_ms, $4, now(), now() + $5::float8 * interval '1 second'
    FROM req JOIN fence USING (timer)
    WHERE fence.prev_ms IS NULL OR req.instant_ms > fence.prev_ms
    RETURNING timer, instant_ms
),
retaken AS (
    -- at least once: leased runs left unfinished past their lease (index lookups, as FINISH)
    UPDATE aiotimer_runs AS r
    SET node = $4, claimed_at = now(), lease_until = now() + $5::float8 * interval '1 second'
    FROM (
        SELECT held.*
        FROM req CROSS JOIN LATERAL (
            SELECT x.ctid AS id, x.node, x.lease_until, x.finished_at FROM aiotimer_runs AS x
            WHERE x.cluster = $1 AND x.instant_ms = req.instant_ms AND x.timer = req.timer
                AND x.finished_at IS NULL AND x.lease_until < now()
            LIMIT 1
        ) AS held
        WHERE $5::float8 IS NOT NULL
    ) AS expired
    WHERE r.ctid = expired.id AND r.node = expired.node AND r.lease_until = expired.lease_until
        AND r.finished_at IS NOT DISTINCT FROM expired.finished_at
    RETURNING r.timer, r.instant_ms
)
SELECT coalesce(array_agg(req.ord), '{}')
FROM req JOIN (SELECT * FROM fresh UNION ALL SELECT * FROM retaken) AS won
    USING (timer, instant_ms)
"""
HEARTBEAT: Final = f"""
WITH beat AS (
    INSERT INTO aiotimer_nodes AS n (cluster, node, expires_at)
    VALUES ($1, $2, now() + $3::float8 * interval '1 second')
    ON CONFLICT (cluster, node) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING node, expires_at
)
SELECT node, {_ns("expires_at")} FROM (
    SELECT node, expires_at FROM beat
    UNION ALL
    SELECT node, expires_at FROM aiotimer_nodes
    WHERE cluster = $1 AND node <> $2 AND expires_at > now()
) AS live ORDER BY node
"""
NODES: Final = f"""
SELECT node, {_ns("expires_at")} FROM aiotimer_nodes
WHERE cluster = $1 AND expires_at > now() ORDER BY node
"""
# LATERAL makes each given run an index lookup (the batch drives the join): with a plain
# join the planner, misled by a fresh table's statistics, scanned the batch once per stored
# run (10,000 ends: 15 s instead of ~30 ms). The UPDATE then takes each run by its ctid and
# re-checks it against the row the lookup found (node, unfinished) as *join* conditions:
# written as filters on the table (``r.node = $2 AND r.finished_at IS NULL``) they were
# estimated at one row on a table never analysed (and would be on one whose runs are mostly
# finished), so the planner scanned the table first and ran every lookup once per unfinished
# run (2,500 ends on new tables: 41 s). On a row updated concurrently (a retake: another
# node, a new lease), PostgreSQL re-checks the join conditions on its newest version, which
# no longer matches: the end is not recorded, as before. CLAIM's ``retaken`` does the same
# (5,000 expired leases taken over on new tables: 3.5 s before, 0.16 s).
FINISH: Final = """
WITH ended AS (
    SELECT held.*, u.outcome, u.duration_ns
    FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bigint[])
        AS u(timer, instant_ms, outcome, duration_ns)
    CROSS JOIN LATERAL (
        SELECT r.ctid AS id, r.node, r.finished_at FROM aiotimer_runs AS r
        WHERE r.cluster = $1 AND r.instant_ms = u.instant_ms AND r.timer = u.timer
            AND r.node = $2 AND r.finished_at IS NULL
        LIMIT 1  -- the primary key gives one row; LIMIT also keeps the lookup un-flattened
    ) AS held
)
UPDATE aiotimer_runs AS r
SET finished_at = now(), outcome = ended.outcome, duration_ns = ended.duration_ns
FROM ended
WHERE r.ctid = ended.id AND r.node = ended.node
    AND r.finished_at IS NOT DISTINCT FROM ended.finished_at
"""
HISTORY_COLUMNS: Final = (
    f"timer, instant_ms, node, {_ns('claimed_at')}, {_ns('finished_at')}, outcome, duration_ns"
)
HISTORY: Final = f"""
SELECT {HISTORY_COLUMNS} FROM aiotimer_runs
WHERE cluster = $1 ORDER BY instant_ms DESC, timer LIMIT $2
"""
TIMER_HISTORY: Final = f"""
SELECT {HISTORY_COLUMNS} FROM aiotimer_runs
WHERE cluster = $1 AND timer = $2 ORDER BY instant_ms DESC LIMIT $3
"""
PRUNE: Final = """
WITH runs AS (
    DELETE FROM aiotimer_runs WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM aiotimer_runs WHERE cluster = $1 AND instant_ms < $2 LIMIT $4
    ))
    RETURNING 1
), nodes AS (
    DELETE FROM aiotimer_nodes WHERE cluster = $1 AND expires_at < to_timestamp($3::float8)
)
SELECT count(*) FROM runs
"""

UNAVAILABLE: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
)
"""asyncpg's "cannot reach or use the server now" errors (the rest are bugs or refusals)."""


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing (the store keeps no session state), so a release costs no
    round trip. asyncpg still rolls back a transaction left open."""


class PostgresStore(StoreBase):
    """A :class:`~aiotimer.cluster.ClaimStore` in PostgreSQL (see the module's rules).

    :param url: an asyncpg DSN, ``postgresql://user@host:5432/db``
    :param cluster: the cluster name (data: many clusters share the tables)
    :param connect_timeout_s: how long connecting may take
    :param timeout_s: how long one statement may take
    :param pool_size: connections at most (claims, finishes and heartbeats may overlap)
    """

    def __init__(
        self,
        url: str,
        cluster: str = "default",
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 5.0,
        pool_size: int = 4,
    ) -> None:
        super().__init__(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"{self!r}: pool_size must be an int >= 1, got {pool_size!r}")
        self._dsn = url  # unmasked: only ever handed to asyncpg
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._inflight: set[asyncio.Future[Any]] = set()

    async def open(self) -> None:
        if self._pool is not None:
            return
        require_asyncio(self, "asyncpg")
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    self._dsn,
                    min_size=0,  # no background reconnects (they log tracebacks)
                    max_size=self._pool_size,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._timeout_s,
                    reset=_no_reset,
                ),
                self._connect_timeout_s,
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self._url}: cannot connect: {_describe(exc)}") from None
        except asyncpg.PostgresError as exc:  # e.g. a database that does not exist
            raise StoreError(f"{self._url}: cannot connect: {_describe(exc)}") from None
        # The pool keeps no connection floor: this first statement is the one that connects.
        self._round_trips += 1
        try:
            async with asyncio.timeout(self._connect_timeout_s + self._timeout_s):
                await pool.execute(SCHEMA)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, UNAVAILABLE):
                raise StoreUnavailable(f"{self._url}: cannot connect: {_describe(exc)}") from None
            if isinstance(exc, asyncpg.PostgresError):
                raise StoreError(
                    f"{self._url}: cannot create the schema: {_describe(exc)}"
                ) from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._inflight:  # cancelled statements finishing their clean-up
                await asyncio.wait(set(self._inflight), timeout=self._timeout_s)
            try:
                await asyncio.wait_for(pool.close(), self._timeout_s)
            except (TimeoutError, *UNAVAILABLE):
                pool.terminate()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """One statement, one round trip, in a task of its own."""
        if self._pool is None:
            raise StoreError(f"{self!r} is not open")
        self._round_trips += 1
        task = asyncio.ensure_future(self._run(self._pool, sql, args))
        self._inflight.add(task)
        task.add_done_callback(_settled(self._inflight))
        # The caller may be cancelled (a stop, a cancel scope); the statement is not: it runs
        # to its end (bounded by the timeouts) in its own task, which close() awaits. Cancelling
        # asyncpg mid-statement costs a cancel request and often the connection, and anyio's
        # level-triggered cancellation interrupts asyncpg's clean-up (and its connection setup,
        # whose TLS probe then leaks an exception): measured as broken connections under a
        # storm of cancelled claims. A claim whose caller went away may still commit: its run
        # shows as "claimed, not finished", as for a node that died after claiming.
        return await asyncio.shield(task)

    async def _run(self, pool: asyncpg.Pool, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            # The acquire is bounded too: a pool whose server went away must not hang.
            async with asyncio.timeout(self._connect_timeout_s + self._timeout_s):
                return list(await pool.fetch(sql, *args))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self._url}: {_describe(exc)}") from None
        except asyncpg.PostgresError as exc:
            raise StoreError(f"{self._url}: {_describe(exc)}") from exc

    async def clock_ns(self) -> int:
        rows = await self._fetch(f"SELECT {_ns('clock_timestamp()')}")
        return int(rows[0][0])

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        check_node(node)
        ttl = check_positive_s("ttl_s", ttl_s)
        rows = await self._fetch(HEARTBEAT, self._cluster, node, ttl)
        return [NodeInfo(n, e) for n, e in rows]

    async def leave(self, node: str) -> None:
        check_node(node)
        await self._fetch(
            "DELETE FROM aiotimer_nodes WHERE cluster = $1 AND node = $2", self._cluster, node
        )

    async def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(n, e) for n, e in await self._fetch(NODES, self._cluster)]

    async def claim(
        self, node: str, claims: Sequence[tuple[str, int]], *, lease_s: float | None = None
    ) -> list[bool]:
        check_node(node)
        check_claims(claims)
        lease = check_lease(lease_s)
        if not claims:
            return []
        timers = [t for t, _ in claims]
        instants = [i for _, i in claims]
        rows = await self._fetch(CLAIM, self._cluster, timers, instants, node, lease)
        won = [False] * len(claims)
        for ordinal in rows[0][0]:
            won[ordinal - 1] = True
        return won

    async def finish(self, node: str, results: Sequence[RunOutcome]) -> None:
        check_node(node)
        check_results(results)
        if not results:
            return
        await self._fetch(
            FINISH,
            self._cluster,
            node,
            [r.timer for r in results],
            [r.instant_ms for r in results],
            [r.outcome.value for r in results],
            [r.duration_ns for r in results],
        )

    async def history(self, timer: str | None = None, limit: int = 100) -> list[RunRecord]:
        check_limit(limit)
        if timer is None:
            rows = await self._fetch(HISTORY, self._cluster, limit)
        else:
            rows = await self._fetch(TIMER_HISTORY, self._cluster, timer, limit)
        return [
            RunRecord(t, i, n, c, f, None if o is None else Outcome(o), d)
            for t, i, n, c, f, o, d in rows
        ]

    async def prune(self, older_than_ns: int) -> int:
        older_than_ns = check_cutoff_ns(older_than_ns)
        total = 0
        while True:  # chunk by chunk: one DELETE of millions of rows would time out
            rows = await self._fetch(
                PRUNE, self._cluster, older_than_ns // 1_000_000, older_than_ns / 1e9, PRUNE_CHUNK
            )
            deleted = int(rows[0][0])
            total += deleted
            if deleted < PRUNE_CHUNK:
                return total

    async def drop(self) -> None:
        """Delete every row of this cluster, fence included (tests and tear-down only: a
        dropped fence lets old grid points be claimed again)."""
        await self._fetch(
            "WITH a AS (DELETE FROM aiotimer_fence WHERE cluster = $1), "
            "b AS (DELETE FROM aiotimer_runs WHERE cluster = $1) "
            "DELETE FROM aiotimer_nodes WHERE cluster = $1",
            self._cluster,
        )


def _settled(inflight: set[asyncio.Future[Any]]) -> Any:
    def settled(task: asyncio.Future[Any]) -> None:
        inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away does not want it logged

    return settled


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
