"""The SQLite claim store: many processes on one host, no server (stdlib ``sqlite3``).

``sqlite:///var/lib/svc/timers.db`` (an absolute path; SQLAlchemy's four-slash form
``sqlite:////var/...`` means the same). ``sqlite:///:memory:`` is a private in-memory store,
for tests of one node only: other stores, even in the same process, do not see it.

Ground rules:

* The database is in WAL mode, so readers (``history``, ``nodes``) never block the writer.
  Every write is one ``BEGIN IMMEDIATE`` transaction: SQLite serialises writers on the file,
  which is what makes a claim atomic across processes. A writer waits up to ``timeout_s`` (the
  busy timeout) for the file's write lock, then the call raises :class:`StoreUnavailable`.
* Calls run off the event loop, one at a time, in a worker thread (``anyio.to_thread`` with a
  limiter of 1: a ``sqlite3`` connection is not for concurrent use). A cancelled call waits for
  its transaction to commit or roll back, so cancelling never leaves the file locked; a claim
  cancelled after its commit was won by this node (a "claimed, not finished" record shows it).
* The store's clock is the host's wall clock (every process of the store shares it).
* One "round trip" is one transaction in the worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import anyio
import anyio.to_thread

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
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS aiotimer_fence (
    cluster TEXT NOT NULL,
    timer TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (cluster, timer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aiotimer_runs (
    cluster TEXT NOT NULL,
    timer TEXT NOT NULL,
    instant_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    claimed_ns INTEGER NOT NULL,
    lease_until_ns INTEGER,
    finished_ns INTEGER,
    outcome TEXT,
    duration_ns INTEGER,
    PRIMARY KEY (cluster, timer, instant_ms)
);
CREATE INDEX IF NOT EXISTS aiotimer_runs_by_instant ON aiotimer_runs (cluster, instant_ms);
CREATE TABLE IF NOT EXISTS aiotimer_nodes (
    cluster TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_ns INTEGER NOT NULL,
    PRIMARY KEY (cluster, node)
) WITHOUT ROWID;
"""
UNAVAILABLE_MARKERS: Final = ("locked", "busy", "unable to open", "disk i/o", "readonly")
"""``sqlite3.OperationalError`` messages that mean "the store is unusable now", not "a bug"."""


def _path_of(url: str) -> str:
    if not url.startswith("sqlite://"):
        raise ValueError(f"a SQLite store URL starts with sqlite://, got {url!r}")
    path = url.removeprefix("sqlite://")
    if path in ("/:memory:", ":memory:"):
        return ":memory:"
    if not path.startswith("/"):
        raise ValueError(
            f"a SQLite store URL names an absolute path (sqlite:///var/lib/app/timers.db), "
            f"got {url!r}"
        )
    return "/" + path.lstrip("/")


class SqliteStore(StoreBase):
    """A :class:`~aiotimer.cluster.ClaimStore` in a SQLite file (see the module's rules).

    :param url: ``sqlite:///absolute/path.db`` (created if missing; its directory must exist)
    :param cluster: the cluster name (data: many clusters share one file)
    :param connect_timeout_s: how long :meth:`open` may take
    :param timeout_s: the busy timeout: how long a call waits for the file's write lock
    """

    def __init__(
        self,
        url: str,
        cluster: str = "default",
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        self._path = _path_of(url)
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    # -- plumbing ------------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the worker thread; one round trip."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self!r} is not open")
        self._round_trips += 1
        return await anyio.to_thread.run_sync(self._guarded, fn, conn, limiter=self._limiter)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if any(m in str(exc).lower() for m in UNAVAILABLE_MARKERS):
                raise StoreUnavailable(f"{self._url}: {exc}") from exc
            raise StoreError(f"{self._url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self._url}: {exc}") from exc

    def _write(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one ``BEGIN IMMEDIATE`` transaction (the file's write lock first, so two
        writers never deadlock upgrading a read lock)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        with anyio.fail_after(self._connect_timeout_s):
            try:
                self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self._url}: cannot open: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the limiter, not the thread, keeps the connection private.
        conn = sqlite3.connect(
            self._path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (not a power cut), which is
            # what a claim needs; FULL would fsync every claim.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._write(conn, _create_schema)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # -- the store -----------------------------------------------------------------------

    async def clock_ns(self) -> int:
        # The host's clock is the store's: every process of a SQLite store shares it.
        return time.time_ns()

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        check_node(node)
        ttl_ns = int(check_positive_s("ttl_s", ttl_s) * 1e9)
        cluster = self._cluster

        def beat(conn: sqlite3.Connection) -> list[NodeInfo]:
            now = time.time_ns()
            conn.execute(
                "INSERT INTO aiotimer_nodes (cluster, node, expires_ns) VALUES (?, ?, ?) "
                "ON CONFLICT (cluster, node) DO UPDATE SET expires_ns = excluded.expires_ns",
                (cluster, node, now + ttl_ns),
            )
            return _live(conn, cluster, now)

        return await self._call(lambda conn: self._write(conn, beat))

    async def leave(self, node: str) -> None:
        check_node(node)
        cluster = self._cluster

        def leave(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM aiotimer_nodes WHERE cluster = ? AND node = ?", (cluster, node)
            )

        await self._call(lambda conn: self._write(conn, leave))

    async def nodes(self) -> list[NodeInfo]:
        cluster = self._cluster
        return await self._call(lambda conn: _live(conn, cluster, time.time_ns()))

    async def claim(
        self, node: str, claims: Sequence[tuple[str, int]], *, lease_s: float | None = None
    ) -> list[bool]:
        check_node(node)
        check_claims(claims)
        lease = check_lease(lease_s)
        if not claims:
            return []
        lease_ns = None if lease is None else int(lease * 1e9)
        cluster = self._cluster

        def claim(conn: sqlite3.Connection) -> list[bool]:
            now = time.time_ns()
            lease_until = None if lease_ns is None else now + lease_ns
            fence: dict[str, int | None] = {}
            fresh: list[tuple[str, str, int, str, int, int | None]] = []
            won: list[bool] = []
            for timer, instant_ms in claims:
                if timer not in fence:
                    row = conn.execute(
                        "SELECT last_ms FROM aiotimer_fence WHERE cluster = ? AND timer = ?",
                        (cluster, timer),
                    ).fetchone()
                    fence[timer] = None if row is None else row[0]
                last = fence[timer]
                if last is None or instant_ms > last:
                    fence[timer] = instant_ms
                    fresh.append((cluster, timer, instant_ms, node, now, lease_until))
                    won.append(True)
                elif lease_until is not None:
                    # At least once: take over a leased run whose lease expired unfinished.
                    cur = conn.execute(
                        "UPDATE aiotimer_runs SET node = ?, claimed_ns = ?, lease_until_ns = ? "
                        "WHERE cluster = ? AND timer = ? AND instant_ms = ? "
                        "AND finished_ns IS NULL AND lease_until_ns < ?",
                        (node, now, lease_until, cluster, timer, instant_ms, now),
                    )
                    won.append(cur.rowcount == 1)
                else:
                    won.append(False)
            conn.executemany(
                "INSERT INTO aiotimer_runs "
                "(cluster, timer, instant_ms, node, claimed_ns, lease_until_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                fresh,
            )
            conn.executemany(
                "INSERT INTO aiotimer_fence (cluster, timer, last_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (cluster, timer) DO UPDATE SET last_ms = excluded.last_ms",
                [(cluster, t, ms) for t, ms in fence.items() if ms is not None],
            )
            return won

        return await self._call(lambda conn: self._write(conn, claim))

    async def finish(self, node: str, results: Sequence[RunOutcome]) -> None:
        check_node(node)
        check_results(results)
        if not results:
            return
        cluster = self._cluster

        def finish(conn: sqlite3.Connection) -> None:
            now = time.time_ns()
            conn.executemany(
                "UPDATE aiotimer_runs SET finished_ns = ?, outcome = ?, duration_ns = ? "
                "WHERE cluster = ? AND timer = ? AND instant_ms = ? AND node = ? "
                "AND finished_ns IS NULL",
                [
                    (now, r.outcome.value, r.duration_ns, cluster, r.timer, r.instant_ms, node)
                    for r in results
                ],
            )

        await self._call(lambda conn: self._write(conn, finish))

    async def history(self, timer: str | None = None, limit: int = 100) -> list[RunRecord]:
        check_limit(limit)
        cluster = self._cluster
        if timer is None:
            sql = (
                "SELECT * FROM aiotimer_runs WHERE cluster = ? "
                "ORDER BY instant_ms DESC, timer LIMIT ?"
            )
            args: tuple[object, ...] = (cluster, limit)
        else:
            sql = (
                "SELECT * FROM aiotimer_runs WHERE cluster = ? AND timer = ? "
                "ORDER BY instant_ms DESC, timer LIMIT ?"
            )
            args = (cluster, timer, limit)

        def history(conn: sqlite3.Connection) -> list[RunRecord]:
            cur = conn.execute(
                sql.replace(
                    "*", "timer, instant_ms, node, claimed_ns, finished_ns, outcome, duration_ns"
                ),
                args,
            )
            return [
                RunRecord(t, i, n, c, f, None if o is None else Outcome(o), d)
                for t, i, n, c, f, o, d in cur.fetchall()
            ]

        return await self._call(history)

    async def prune(self, older_than_ns: int) -> int:
        older_than_ns = check_cutoff_ns(older_than_ns)
        cutoff_ms = older_than_ns // 1_000_000
        cluster = self._cluster

        def prune(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM aiotimer_runs WHERE rowid IN (SELECT rowid FROM aiotimer_runs "
                "WHERE cluster = ? AND instant_ms < ? LIMIT ?)",
                (cluster, cutoff_ms, PRUNE_CHUNK),
            )
            conn.execute(
                "DELETE FROM aiotimer_nodes WHERE cluster = ? AND expires_ns < ?",
                (cluster, older_than_ns),
            )
            return cur.rowcount

        total = 0
        while True:  # chunk by chunk: the file's write lock is held for one chunk at a time
            deleted = await self._call(lambda conn: self._write(conn, prune))
            total += deleted
            if deleted < PRUNE_CHUNK:
                return total

    async def drop(self) -> None:
        """Delete every row of this cluster, fence included (tests and tear-down only: a
        dropped fence lets old grid points be claimed again)."""
        cluster = self._cluster

        def drop(conn: sqlite3.Connection) -> None:
            for table in ("aiotimer_fence", "aiotimer_runs", "aiotimer_nodes"):
                conn.execute(f"DELETE FROM {table} WHERE cluster = ?", (cluster,))

        await self._call(lambda conn: self._write(conn, drop))


def _live(conn: sqlite3.Connection, cluster: str, now_ns: int) -> list[NodeInfo]:
    rows = conn.execute(
        "SELECT node, expires_ns FROM aiotimer_nodes WHERE cluster = ? AND expires_ns > ? "
        "ORDER BY node",
        (cluster, now_ns),
    ).fetchall()
    return [NodeInfo(n, e) for n, e in rows]


def _create_schema(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the enclosing transaction.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
