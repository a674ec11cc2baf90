"""The claim store: the one small interface every cluster backend implements.

A cluster timer's runs are claimed, not elected: at each grid point every node that holds the
timer asks the store for ``(cluster, timer, grid instant)`` and exactly one node wins. This
module holds the contract (:class:`ClaimStore`), the records that cross it, the errors, and the
checks shared by every backend (:mod:`._sqlite`, :mod:`._postgres`, :mod:`._redis`).

Ground rules, the same on every backend:

* **Exactly one winner** per ``(cluster, timer, instant_ms)``, whatever the number of nodes
  racing for it.
* **The fence is the grid instant.** Per timer the store keeps the newest instant ever claimed;
  a claim wins only for a *newer* instant. A node whose clock runs late can therefore never
  re-run an old grid point, whatever was pruned or expired since. The fence is never pruned
  (one small record per timer name and cluster).
* **One round trip per call**, whatever the size of the batch (a backend may split a huge batch
  into bounded pieces, but sends them together).
* **Leases are opt-in.** ``claim(..., lease_s=x)`` lets another node take over a run that was
  claimed with a lease and not finished within ``x`` seconds of the store's clock (at least once).
  Without a lease, a winner that dies leaves its run "claimed, not finished" (a
  :class:`RunRecord` with ``finished_ns is None``), visible in :meth:`ClaimStore.history`, and
  nobody re-runs it (at most once).
* **Cluster names are data**, never identifiers: two clusters on one store never interfere.
* **The store's clock is the reference** (:meth:`ClaimStore.clock_ns`); node liveness and
  leases are measured on it, never on a node's clock.
* **Errors are typed**: an unreachable or overloaded store raises :class:`StoreUnavailable`
  within the store's timeouts (never a hang); anything else raises :class:`StoreError`.
* Passwords in URLs never reach a ``repr``, a log line or stats (:func:`mask_url`).
"""

from __future__ import annotations

import enum
import math
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "MAX_INSTANT_MS",
    "ClaimStore",
    "NodeInfo",
    "Outcome",
    "RunOutcome",
    "RunRecord",
    "StoreError",
    "StoreUnavailable",
    "check_claims",
    "check_cluster_name",
    "check_node",
    "check_positive_s",
    "mask_url",
]

MAX_INSTANT_MS: Final = 2**63 - 1
"""Grid instants are signed 64-bit milliseconds since the epoch (a PostgreSQL ``bigint``)."""
PRUNE_CHUNK: Final = 10_000
"""Runs a store deletes per statement (or script) when pruning: each stays short, however
much a retention lets pile up; a prune makes as many round trips as it needs."""
MAX_NAME_LEN: Final = 200
"""Cluster, node and timer names are at most this many characters."""


class StoreError(Exception):
    """A claim store failed (a bug, a schema mismatch, a refused statement)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer within its timeout.

    The cluster's ``on_unreachable`` policy decides what a grid point does then.
    """


class Outcome(enum.Enum):
    """How a claimed run ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    """The scheduler stopped while it ran."""
    SKIPPED = "skipped"
    """Won, but not run here: the timer ended, or its overlap policy skipped the run."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A live node: its name and when its liveness expires (store clock, ns since the epoch)."""

    node: str
    expires_ns: int


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What :meth:`ClaimStore.finish` records for one claimed run."""

    timer: str
    instant_ms: int
    outcome: Outcome
    duration_ns: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One claimed run, as the store's history shows it.

    ``finished_ns``, ``outcome`` and ``duration_ns`` are ``None`` while the run is "claimed,
    not finished": running, or its winner died. Times are the store's clock, ns since the epoch.
    """

    timer: str
    instant_ms: int
    node: str
    claimed_ns: int
    finished_ns: int | None
    outcome: Outcome | None
    duration_ns: int | None

    @property
    def finished(self) -> bool:
        return self.finished_ns is not None


@runtime_checkable
class ClaimStore(Protocol):
    """What a cluster needs from a store; one instance per (store, cluster name).

    A store is opened once (:meth:`open`) and closed once (:meth:`close`); every other call
    needs it open. Every call may raise :class:`StoreUnavailable` (unreachable, timed out) or
    :class:`StoreError`. Calls are safe to cancel: a cancelled call leaves the store usable.
    """

    @property
    def cluster(self) -> str:
        """The cluster name this store is scoped to."""
        ...

    @property
    def url(self) -> str:
        """The store's URL with any password masked."""
        ...

    @property
    def round_trips(self) -> int:
        """Round trips to the store so far (one per call; what the benchmarks count)."""
        ...

    async def open(self) -> None:
        """Connect, and create the schema if missing.

        :raises StoreUnavailable: if the store cannot be reached within the connect timeout
        """
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...

    async def clock_ns(self) -> int:
        """The store's wall clock, ns since the epoch (UTC)."""
        ...

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        """Mark ``node`` alive for ``ttl_s`` seconds of the store's clock and return the live
        nodes (``node`` included), sorted by name, in one round trip."""
        ...

    async def leave(self, node: str) -> None:
        """Remove ``node`` from the live nodes at once (graceful stop)."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, sorted by name."""
        ...

    async def claim(
        self, node: str, claims: Sequence[tuple[str, int]], *, lease_s: float | None = None
    ) -> list[bool]:
        """Claim grid points for ``node``; one ``bool`` per claim, in order: ``True`` if this
        node won it and must run it.

        :param claims: ``(timer name, grid instant in ms since the epoch)`` pairs; a batch may
            hold several instants of one timer, in increasing order
        :param lease_s: ``None`` (at most once) or a lease: a run claimed with a lease and not
            finished within ``lease_s`` seconds may be claimed again (at least once)
        :raises ValueError: for a malformed claim (naming it)
        """
        ...

    async def finish(self, node: str, results: Sequence[RunOutcome]) -> None:
        """Record how ``node``'s claimed runs ended; a result for a run that ``node`` does not
        hold (never claimed, or taken over after its lease) is ignored."""
        ...

    async def history(self, timer: str | None = None, limit: int = 100) -> list[RunRecord]:
        """The last ``limit`` claimed runs (of ``timer``, or of every timer), newest claim
        first, finished or not."""
        ...

    async def prune(self, older_than_ns: int) -> int:
        """Delete runs whose grid instant is before ``older_than_ns``; how many were deleted.
        Pruning deletes in chunks of :data:`PRUNE_CHUNK`, one round trip each.

        The fence (the newest instant per timer) is kept, so pruning never lets an old grid
        point be claimed again.
        """
        ...

    async def drop(self) -> None:
        """Delete everything of this cluster, fence included: for tests and tear-down only,
        since a dropped fence lets old grid points be claimed again."""
        ...


class StoreBase:
    """What every backend shares: the cluster name, the masked URL, timeouts, the round-trip
    counter and the ``repr``."""

    def __init__(
        self, url: str, cluster: str, *, connect_timeout_s: float, timeout_s: float
    ) -> None:
        self._cluster = check_cluster_name(cluster)
        self._url = mask_url(url)
        self._connect_timeout_s = check_positive_s("connect_timeout_s", connect_timeout_s)
        self._timeout_s = check_positive_s("timeout_s", timeout_s)
        self._round_trips = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._url!r} cluster={self._cluster!r}>"

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def url(self) -> str:
        return self._url

    @property
    def round_trips(self) -> int:
        return self._round_trips


# -- shared checks ---------------------------------------------------------------------------


def check_name(kind: str, value: object) -> str:
    """A cluster, node or timer name: a non-empty ``str`` of at most 200 characters without
    NUL (which some stores use as a separator and C strings end on)."""
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, got {value!r}")
    if not value or len(value) > MAX_NAME_LEN or "\0" in value:
        raise ValueError(
            f"{kind} must be 1 to {MAX_NAME_LEN} characters without NUL, got {value!r}"
        )
    return value


def check_cluster_name(value: object) -> str:
    return check_name("cluster name", value)


def check_node(value: object) -> str:
    return check_name("node name", value)


def check_positive_s(kind: str, value: object) -> float:
    """A duration in seconds: a finite number > 0 (``bool`` refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{kind} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_claims(claims: Sequence[tuple[str, int]]) -> None:
    """Every claim is ``(timer name, instant_ms)`` with ``0 <= instant_ms < 2**63``, and the
    instants of one timer increase within a batch (so a store may compare them with the fence
    one by one or all at once: the answers are the same; a timer's points are due in order).

    :raises TypeError: or
    :raises ValueError: naming the first bad claim and its value
    """
    last: dict[str, int] = {}
    for claim in claims:
        if not isinstance(claim, tuple) or len(claim) != 2:
            raise TypeError(f"a claim must be a (timer name, instant_ms) tuple, got {claim!r}")
        timer, instant_ms = claim
        check_name("timer name", timer)
        if isinstance(instant_ms, bool) or not isinstance(instant_ms, int):
            raise TypeError(
                f"timer {timer!r}: instant_ms must be an int (ms since the epoch), "
                f"got {instant_ms!r}"
            )
        if not 0 <= instant_ms <= MAX_INSTANT_MS:
            raise ValueError(
                f"timer {timer!r}: instant_ms must be in 0..2**63-1, got {instant_ms!r}"
            )
        previous = last.get(timer)
        if previous is not None and instant_ms <= previous:
            raise ValueError(
                f"timer {timer!r}: the instants of a timer must increase within a batch, "
                f"got {instant_ms} after {previous}"
            )
        last[timer] = instant_ms


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"history limit must be an int >= 1, got {limit!r}")
    return limit


SECRET_QUERY_KEYS: Final = frozenset({"password", "passwd", "pass", "sslpassword"})


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` query parameter)
    replaced by ``***``, for repr, logs and stats."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
        port = parts.port
    except ValueError:  # unparsable: show only the scheme, the rest may hold anything
        return url.split(":", 1)[0] + "://***"
    changed = False
    if password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{user}:***@{host}{f':{port}' if port is not None else ''}"
        parts, changed = parts._replace(netloc=netloc), True
    if parts.query:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in query):
            masked = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in query]
            parts, changed = parts._replace(query=urllib.parse.urlencode(masked, safe="*")), True
    if not changed:  # urlunsplit would drop the empty authority of sqlite:///path
        return url
    return urllib.parse.urlunsplit(parts)


def check_results(results: Sequence[RunOutcome]) -> None:
    for result in results:
        if not isinstance(result, RunOutcome):
            raise TypeError(f"finish() takes RunOutcome records, got {result!r}")
        if not isinstance(result.outcome, Outcome):
            raise TypeError(
                f"timer {result.timer!r}: outcome must be an Outcome, got {result.outcome!r}"
            )


def check_lease(lease_s: float | None) -> float | None:
    return None if lease_s is None else check_positive_s("lease_s", lease_s)


def check_cutoff_ns(older_than_ns: object) -> int:
    """A prune cutoff: an int of ns since the epoch, clamped to the stores' 64-bit range."""
    if isinstance(older_than_ns, bool) or not isinstance(older_than_ns, int):
        raise TypeError(f"older_than_ns must be an int (ns since the epoch), got {older_than_ns!r}")
    return max(0, min(older_than_ns, MAX_INSTANT_MS))


def require_asyncio(store: object, driver: str) -> None:
    """PostgreSQL's and Redis' drivers run on asyncio only: say so, instead of failing deep in
    the driver on trio."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StoreError(f"{store!r}: {driver} runs on asyncio only (use SQLite on trio)") from None
