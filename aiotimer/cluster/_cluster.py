"""The :class:`Cluster` service: each grid point of a cluster timer runs once across nodes.

Timeline of one grid point of a timer whose preferred node is ``A``, with nodes ``A, B, C``
(``d`` = ``backup_delay_s``)::

    grid instant T            T + claim RTT          T + d          T + d + claim RTT
    A: claim (T) ------------> won: run starts
    B:              (waits d) ---------------------> claim (T) ---> lost: "run elsewhere"
    C:              (waits d) ---------------------> claim (T) ---> lost: "run elsewhere"

    A dead (its heartbeat expired, so B and C no longer prefer it... or not yet):
    B:              (waits d) ---------------------> claim (T) ---> won: run starts (late by d)

Ground rules:

* **At most once per grid point.** A node runs a point only after winning its claim in the
  store (see :mod:`aiotimer.cluster._store`: one winner, fenced by the grid instant). A winner
  that dies mid-run leaves a "claimed, not finished" record; nobody re-runs it, unless the
  cluster was given a lease (``lease_s``: at least once; the nodes that lost a run claim it
  again when the lease has run out, and one of them runs it if it is still unfinished).
* **No leader.** Every node holding a cluster timer takes part. Each timer's preferred node
  (rendezvous hashing over the live nodes, which heartbeat in the store) claims at the grid
  point; the others claim ``backup_delay_s`` later, so the common case has no contention and
  losing a node costs that delay. One claim round trip per node per group (preferred now,
  backups later) per batch of timers due together, never one per timer.
* **A backup's window is the interval.** The fence lets a claim win only for an instant newer
  than every instant claimed before for its timer: a backup's claim of ``T`` that lands after
  another node claimed ``T + interval`` loses, and ``T`` does not run. A node never claims a
  newer instant of a timer while it waits to back up an older one (that one goes first, in
  the same round trip), so a handover loses nothing: the preferred node died, a backup of
  ``T`` is the new preferred node of ``T + interval``, its backup claim of ``T`` not sent yet.
  What remains: the node claiming ``T + interval`` did not hold ``T`` (stalled for an
  interval or more, it merged ``T`` into an earlier run, see ``Missed.SKIP``; or it was not
  running) and the others' backup claims of ``T`` land later, their delay plus round trip
  past the interval. Keep ``backup_delay_s`` well under the interval (a timer whose interval
  is under twice the delay is warned about at bind). The backup delay counts from the grid
  point on this node's clock, not from when its claim task ran.
* **Store errors** follow ``on_unreachable``: ``"skip"`` (default: the point does not run
  here; never a duplicate) or ``"run"`` (run locally: never a gap, duplicates possible).
* **Clock skew.** Grid instants come from this node's wall clock. Every heartbeat compares it
  with the store's clock; a node off by more than ``max_skew_s`` refuses to claim (its runs
  are skipped and counted) and logs an error until it is back within the tolerance.
* **The end of each won run** (ok, error, timeout, cancelled by a stop, or skipped here: the
  timer ended, or its earlier run still goes on this node) goes to the store's history about
  10 ms after it, the ends of a batch in one round trip. The scheduler tells each started run's
  outcome and duration (``GatedRun.start(on_done)``): exact, also when runs of a timer overlap.
* **Named timers.** ``timers=[...]`` guards timers registered without ``cluster=True``: the
  scheduler binds its gate at ``start()``, before any timer is armed, and the cluster guards
  them then (``scheduler.guard``); a name that is not registered fails the start, naming it.
* Runs older than ``retention_s`` are pruned by every node, about every ``prune_every_s``.
* The service starts after the scheduler's tick source: runs due before it serves wait for
  it; runs due while it stops are skipped (nothing runs unclaimed). Claims in flight when it
  stops are answered first (within the grace); a point won then is not run: recorded as
  skipped (with a lease: left unfinished, for another node to take when the lease runs out).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._gate import GatedRun
from .._spec import Kind
from .._timer import TimerState
from ._open import open_store
from ._rendezvous import preferred_node
from ._store import (
    ClaimStore,
    NodeInfo,
    Outcome,
    RunOutcome,
    StoreError,
    check_node,
    check_positive_s,
)

if TYPE_CHECKING:
    from .._scheduler import Scheduler

__all__ = ["Cluster", "ClusterStats", "ClusterTimerStats"]

logger = logging.getLogger("aiotimer.cluster")

NS_PER_S: Final = 1_000_000_000
LATENCY_SAMPLES: Final = 1024
"""Claim latencies kept for the stats' percentiles (the newest ones)."""
FINISH_BATCH: Final = 10_000
"""Finished runs sent to the store at once (more wait for the next flush)."""
FLUSH_DELAY_S: Final = 0.01
"""Ends of runs gathered this long before they are sent (one round trip for many)."""
OUTCOMES: Final = {o.value: o for o in Outcome}
"""The scheduler's outcome names (``on_done``) as the store's outcomes."""


@dataclass(frozen=True, slots=True)
class ClusterTimerStats:
    """One cluster timer's numbers on this node.

    :ivar won: points whose claim this node won: run here, or not (an overlap, the timer
        ended, the scheduler stopping: recorded as skipped in the store's history)
    :ivar run_elsewhere: points another node won
    :ivar store_errors: points whose claim failed (``on_unreachable`` decided)
    :ivar refused_skew: points not claimed: this node's clock was off the store's
    """

    won: int
    run_elsewhere: int
    store_errors: int
    refused_skew: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "won": self.won,
            "run_elsewhere": self.run_elsewhere,
            "store_errors": self.store_errors,
            "refused_skew": self.refused_skew,
        }


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """A :class:`Cluster`'s numbers (``scheduler.stats().services[cluster.name]``).

    :ivar skew_s: the store's clock minus this node's wall clock at the last heartbeat
        (``None`` before the first), within half a heartbeat's round trip
    :ivar claim_latency_p50_s: over the newest claims, from the claim's making to its answer
        (a node's claims go one at a time: the wait behind an earlier one counts too;
        ``None`` before the first)
    :ivar store_errors: failed store calls of every kind (claims, reports of ends, heartbeats,
        prunes); a timer's ``store_errors`` counts its points whose claim failed
    """

    url: str
    cluster: str
    node: str
    live_nodes: tuple[str, ...]
    refusing: bool
    skew_s: float | None
    claims: int
    round_trips: int
    claim_latency_p50_s: float | None
    claim_latency_p99_s: float | None
    claim_latency_max_s: float | None
    store_errors: int
    timers: dict[str, ClusterTimerStats]

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "cluster": self.cluster,
            "node": self.node,
            "live_nodes": list(self.live_nodes),
            "refusing": self.refusing,
            "skew_s": self.skew_s,
            "claims": self.claims,
            "round_trips": self.round_trips,
            "claim_latency": {
                "p50_s": self.claim_latency_p50_s,
                "p99_s": self.claim_latency_p99_s,
                "max_s": self.claim_latency_max_s,
            },
            "store_errors": self.store_errors,
            "timers": {name: t.as_dict() for name, t in self.timers.items()},
        }


def default_node_name() -> str:
    """``host-pid-random``: unique per process, also across restarts that reuse a pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@final
class Cluster:
    """A service that runs each grid point of the cluster timers once across all nodes.

    :param url: the store (``sqlite:///path``, ``postgresql://...``, ``redis://...``), or a
        :class:`~aiotimer.cluster.ClaimStore` not yet opened
    :param name: the cluster's name in the store (clusters sharing a store never interfere);
        also the service's name
    :param node: this node's name (unique in the cluster); default ``host-pid-random``
    :param timers: names of timers to guard besides those registered with ``cluster=True``
        (guarded when the scheduler starts; they must be registered by then)
    :param backup_delay_s: how long non-preferred nodes wait before claiming
    :param on_unreachable: ``"skip"`` (never a duplicate) or ``"run"`` (never a gap) when the
        store fails a claim
    :param max_skew_s: the largest difference between this node's wall clock and the store's
        under which this node claims
    :param retention_s: runs older than this are pruned from the store
    :param heartbeat_s: how often this node refreshes its liveness; it counts as dead
        ``node_ttl_s`` (default 3 heartbeats) after its last one
    :param lease_s: ``None`` (at most once) or a lease, for at least once: a node that lost
        a run claims it again ``lease_s`` (plus the backup delay) later, and wins it if the
        winner has not finished it by then (it died, or it overran its lease: then the point
        runs twice). A lost run's verdict waits for that second claim.
    :param prune_every_s: how often this node prunes old runs
    :param store_timeout_s: how long connecting or one store call may take before the call
        counts as failed (``on_unreachable`` decides); keep it under the shortest interval
    :raises ValueError: naming the parameter and the value
    """

    def __init__(
        self,
        url: str | ClaimStore,
        *,
        name: str = "default",
        node: str | None = None,
        timers: Iterable[str] | None = None,
        backup_delay_s: float = 0.25,
        on_unreachable: Literal["skip", "run"] = "skip",
        max_skew_s: float = 1.0,
        retention_s: float = 86400.0,
        heartbeat_s: float = 1.0,
        node_ttl_s: float | None = None,
        lease_s: float | None = None,
        prune_every_s: float = 600.0,
        store_timeout_s: float = 2.0,
    ) -> None:
        timeout_s = check_positive_s("store_timeout_s", store_timeout_s)
        self._store_timeout_s = timeout_s
        self._store: ClaimStore = (
            open_store(url, name, connect_timeout_s=timeout_s, timeout_s=timeout_s)
            if isinstance(url, str)
            else url
        )
        self._name = f"cluster:{self._store.cluster}"
        self._node = check_node(default_node_name() if node is None else node)
        if isinstance(timers, str):
            raise TypeError(
                f"cluster {name!r}: timers must be a collection of names, got {timers!r}"
            )
        self._guarded = frozenset(timers or ())
        self._backup_delay_s = check_positive_s("backup_delay_s", backup_delay_s)
        if on_unreachable not in ("skip", "run"):
            raise ValueError(
                f"cluster {name!r}: on_unreachable must be 'skip' or 'run', got {on_unreachable!r}"
            )
        self._run_when_unreachable = on_unreachable == "run"
        self._max_skew_ns = int(check_positive_s("max_skew_s", max_skew_s) * NS_PER_S)
        self._retention_ns = int(check_positive_s("retention_s", retention_s) * NS_PER_S)
        self._heartbeat_s = check_positive_s("heartbeat_s", heartbeat_s)
        self._node_ttl_s = (
            3 * self._heartbeat_s
            if node_ttl_s is None
            else check_positive_s("node_ttl_s", node_ttl_s)
        )
        if self._node_ttl_s <= self._heartbeat_s:
            raise ValueError(
                f"cluster {name!r}: node_ttl_s ({self._node_ttl_s:g}) must be longer than "
                f"heartbeat_s ({self._heartbeat_s:g}), or live nodes flicker"
            )
        self._lease_s = None if lease_s is None else check_positive_s("lease_s", lease_s)
        self._prune_every_s = check_positive_s("prune_every_s", prune_every_s)

        self._scheduler: Scheduler | None = None
        self._tg: TaskGroup | None = None
        self._open = False
        self._live: tuple[str, ...] = (self._node,)
        self._mine: dict[str, bool] = {}  # timer -> preferred here, for the current live nodes
        self._skew_ns: int | None = None
        self._refusing = False
        self._claims = 0
        self._store_errors = 0
        self._latencies_ns: collections.deque[int] = collections.deque(maxlen=LATENCY_SAMPLES)
        self._per_timer: dict[str, list[int]] = {}  # won, elsewhere, store errors, refused
        self._finished: list[RunOutcome] = []
        self._early: list[GatedRun] = []  # offered before serve() ran
        # Backup runs waiting for their delay, per timer, oldest first: a claim of a newer
        # instant of the timer takes them along (see _with_waiting).
        self._waiting: dict[str, list[GatedRun]] = {}
        self._ended: anyio.Event | None = None  # runs ended since the last report (serving)
        self._stopping = False
        self._claiming = 0  # claim calls awaiting the store's answer
        # One claim of this node in flight at a time, in the order they were made (FIFO): the
        # store sees a timer's instants from this node in order, as the fence requires (see
        # _claim_turn). Uncontended, it costs no pass of the loop.
        self._claim_order = anyio.Lock(fast_acquire=True)
        self._claims_idle: anyio.Event | None = None  # set once they are all answered (stop)
        # Runs started here and not ended yet: token -> (timer, instant_ms, perf_counter start)
        self._running: dict[int, tuple[str, int, int]] = {}
        self._next_token = 0

    def __repr__(self) -> str:
        return f"<Cluster {self._store.cluster!r} node={self._node!r} store={self._store.url!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def node(self) -> str:
        return self._node

    @property
    def store(self) -> ClaimStore:
        return self._store

    @property
    def guarded(self) -> frozenset[str]:
        """Names of the timers guarded by ``timers=`` (besides ``cluster=True`` ones)."""
        return self._guarded

    # -- Service -------------------------------------------------------------------------

    async def serve(
        self, scheduler: Scheduler, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Join the cluster: open the store, heartbeat, prune, and take the scheduler's cluster
        runs through :meth:`offer`. A store unreachable at start is not fatal: the node keeps
        trying, and its runs follow ``on_unreachable`` meanwhile."""
        if self._scheduler is not None:
            raise RuntimeError(f"{self!r} already serves a scheduler")
        self._scheduler = scheduler
        self._stopping = False
        self._claims_idle = None
        try:
            async with anyio.create_task_group() as tg:
                await self._beat()
                self._tg = tg
                tg.start_soon(self._heartbeats)
                tg.start_soon(self._prunes)
                tg.start_soon(self._report_ends)
                early, self._early = self._early, []
                if early:
                    tg.start_soon(self._handle, early)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            self._ended = None
            self._stopping = True
            self._scheduler = None
            # The scheduler drained its runs, then cancelled those left (each told its end),
            # then its services. Runs still going here were cut from outside (the scheduler's
            # own task cancelled, no grace): their cleanup comes later, recorded as cancelled
            # now (their late on_done is ignored).
            now_ns = time.perf_counter_ns()
            for timer, instant_ms, started_ns in self._running.values():
                self._finished.append(
                    RunOutcome(timer, instant_ms, Outcome.CANCELLED, now_ns - started_ns)
                )
            self._running.clear()
            with anyio.CancelScope(shield=True):
                await self._close()

    def bind(self, scheduler: Scheduler) -> None:
        """The scheduler's call at ``start()``, before any timer is armed (see
        ``aiotimer._gate.RunGate``): guard the timers named by ``timers=`` (a timer already
        registered with ``cluster=True`` stays as it is), and warn of a backup delay not well
        under a cluster timer's interval.

        :raises RuntimeError: this cluster serves another scheduler
        :raises ValueError: a named timer is not registered, or cannot be a cluster timer (a
            one-shot); no timer is guarded then
        """
        if self._scheduler is not None and self._scheduler is not scheduler:
            raise RuntimeError(f"{self!r} already serves {self._scheduler!r}")
        timers = scheduler.timers
        missing = sorted(self._guarded - set(timers))
        if missing:
            raise ValueError(
                f"{self!r}: timers {missing} (given as timers=) are not registered on "
                f"{scheduler!r}: register them before start()"
            )
        guarded = [scheduler.get_timer(name) for name in sorted(self._guarded)]
        one_shots = [t.name for t in guarded if t.spec.kind not in (Kind.PERIODIC, Kind.CALENDAR)]
        if one_shots:
            raise ValueError(
                f"{self!r}: timers {one_shots} (given as timers=) cannot be cluster timers: "
                "only periodic and calendar timers can"
            )
        for timer in guarded:
            scheduler.guard(timer)
        for timer in timers.values():
            if timer.spec.cluster and timer.spec.kind is Kind.PERIODIC:
                interval_s = timer.interval * timer.spec.unit.tick_ns / NS_PER_S
                if self._backup_delay_s * 2 > interval_s:
                    logger.warning(
                        "%r: backup_delay_s=%g is not well under the %g s interval of timer "
                        "%r: when its preferred node is down, its runs start that late",
                        self,
                        self._backup_delay_s,
                        interval_s,
                        timer.name,
                    )

    async def stop(self, grace_s: float) -> None:
        """Leave the cluster: report finished runs and drop this node from the live nodes, so
        the others prefer another node at once (the runs still draining finish here and are
        reported when the service closes)."""
        self._stopping = True
        with anyio.move_on_after(max(grace_s, 0.1)):
            if self._claiming:  # their answers are awaited: a point won is then recorded
                self._claims_idle = idle = anyio.Event()
                await idle.wait()
            await self._flush()
            if self._open:
                try:
                    await self._store.leave(self._node)
                except StoreError as exc:
                    logger.warning("%r: could not leave the cluster: %s", self, exc)

    def stats(self) -> ClusterStats:
        lat = sorted(self._latencies_ns)

        def q(p: float) -> float | None:
            if not lat:
                return None
            return lat[min(len(lat) - 1, max(0, math.ceil(p * len(lat)) - 1))] / NS_PER_S

        return ClusterStats(
            url=self._store.url,
            cluster=self._store.cluster,
            node=self._node,
            live_nodes=self._live,
            refusing=self._refusing,
            skew_s=None if self._skew_ns is None else self._skew_ns / NS_PER_S,
            claims=self._claims,
            round_trips=self._store.round_trips,
            claim_latency_p50_s=q(0.5),
            claim_latency_p99_s=q(0.99),
            claim_latency_max_s=lat[-1] / NS_PER_S if lat else None,
            store_errors=self._store_errors,
            timers={name: ClusterTimerStats(*c) for name, c in self._per_timer.items()},
        )

    # -- the gate ------------------------------------------------------------------------

    def offer(self, runs: Sequence[GatedRun]) -> None:
        """The scheduler's run gate (see ``aiotimer._gate.RunGate``): the cluster runs due in
        one dispatch batch. Returns at once; each run is started or skipped once its claim is
        answered. Runs offered before the service serves (the scheduler starts its tick source
        first) wait for it; runs offered while it stops are skipped: nothing runs unclaimed."""
        if self._tg is not None:
            self._tg.start_soon(self._handle, list(runs))
        elif self._scheduler is None and not self._stopping:
            self._early.extend(runs)
        else:
            self._skip_all(list(runs), None)

    async def _handle(self, runs: list[GatedRun]) -> None:
        live, cache, me = self._live, self._mine, self._node
        mine: list[GatedRun] = []
        backups: list[GatedRun] = []
        for run in runs:
            name = run.timer.name
            preferred = cache.get(name)
            if preferred is None:  # a hash per live node: worth remembering per timer
                preferred = cache[name] = preferred_node(name, live) == me
            (mine if preferred else backups).append(run)
        for run in backups:
            self._waiting.setdefault(run.timer.name, []).append(run)
        if mine:
            await self._claim(mine)
        if backups and self._scheduler is not None:
            # The delay counts from the grid point, not from when this task ran or the
            # preferred runs' claim was answered: on a late loop the backups claim sooner.
            due_ns = min(r.scheduled_ns for r in backups) + int(self._backup_delay_s * NS_PER_S)
            try:
                await self._scheduler.clock.sleep_until(due_ns)
            except BaseException:  # the service stops: nothing runs unclaimed
                self._skip_all(self._unwait(backups), None)
                raise
            due = self._unwait(backups)
            if due:  # (else they all went with a claim of a newer point)
                await self._claim(due)
        elif backups:
            self._skip_all(self._unwait(backups), None)

    def _unwait(self, runs: list[GatedRun]) -> list[GatedRun]:
        """Those of ``runs`` still waiting for their backup delay, no longer waiting (the others
        went with an earlier claim, see :meth:`_with_waiting`)."""
        out = []
        for run in runs:
            waiting = self._waiting.get(run.timer.name)
            if waiting is None:
                continue
            for i, other in enumerate(waiting):
                if other is run:
                    del waiting[i]
                    out.append(run)
                    break
            if not waiting:
                del self._waiting[run.timer.name]
        return out

    def _with_waiting(self, runs: list[GatedRun]) -> list[GatedRun]:
        """``runs`` with, before them, this node's backup runs of the same timers that are
        older and still wait for their delay: a node never claims a timer's newer instant
        while it holds an older one unclaimed, which the fence would then refuse. The case is
        a handover: the preferred node died, a backup of ``T`` becomes the preferred node of
        ``T + interval`` and claims it at once, and its claim of ``T`` (due ``backup_delay_s``
        after ``T``) is late on a loaded host; without this ``T`` would run nowhere."""
        if not self._waiting:
            return runs
        first: dict[str, int] = {}
        for run in runs:
            name = run.timer.name
            if name in self._waiting and run.instant_ms < first.get(name, run.instant_ms + 1):
                first[name] = run.instant_ms
        older = [
            run
            for name, instant_ms in first.items()
            for run in self._waiting[name]
            if run.instant_ms < instant_ms
        ]
        if not older:
            return runs
        self._unwait(older)
        # Each timer's instants increase within a claim (the stores' rule): oldest first.
        return sorted(older + runs, key=lambda r: r.instant_ms)

    def _skip_all(self, runs: list[GatedRun], column: int | None) -> None:
        """Skip ``runs``, counted in ``column`` (``None``: not counted, the service stops)."""
        for run in runs:
            if column is not None:
                self._count(run.timer.name, column)
            run.skip()

    async def _claim(self, runs: list[GatedRun], *, retake: bool = False) -> None:
        """Claim ``runs`` in one round trip, then start the won ones and skip the others. With
        a lease, the lost ones are claimed once more when the winner's lease has run out (the
        store gives them to this node only if the winner left them unfinished)."""
        if self._stopping:  # (a backup's or a retake's claim, due after the stop began)
            self._skip_all(runs, None)
            return
        if self._refusing:
            self._skip_all(runs, 3)
            return
        if not retake:  # (a retake's runs were claimed once already: they are older)
            runs = self._with_waiting(runs)
        claims = [(r.timer.name, r.instant_ms) for r in runs]
        started = time.perf_counter_ns()
        self._claiming += 1
        try:
            await self._claim_turn()
            try:
                if not self._open:
                    raise StoreError(f"{self._store.url}: not connected")
                won = await self._store.claim(self._node, claims, lease_s=self._lease_s)
            finally:
                self._claim_order.release()
        except BaseException as exc:
            if not isinstance(exc, StoreError):  # cancelled (the service stops): not run here
                self._skip_all(runs, None)
                raise
            self._store_errors += 1
            logger.error(
                "%r: claiming %d run(s) failed (%s); %s",
                self,
                len(runs),
                exc,
                "running them here" if self._run_when_unreachable else "skipping them",
            )
            for run in runs:
                self._count(run.timer.name, 2)
                if self._run_when_unreachable and not self._stopping:
                    run.start()  # unclaimed: nothing to report to the store
                else:
                    run.skip()
            return
        finally:
            self._claiming -= 1
            if not self._claiming and self._claims_idle is not None:
                self._claims_idle.set()
        self._latencies_ns.append(time.perf_counter_ns() - started)
        self._claims += len(claims)
        lost = []
        for run, flag in zip(runs, won, strict=True):
            if flag:
                self._count(run.timer.name, 0)
                self._start(run)
            elif self._lease_s is not None and not retake and self._tg is not None:
                lost.append(run)  # undecided until the winner's lease is over
            else:
                self._count(run.timer.name, 1)
                run.skip()
        if lost and self._tg is not None:
            self._tg.start_soon(self._retake, lost)

    async def _claim_turn(self) -> None:
        """Wait until this node's earlier claims are answered (then hold ``_claim_order``). A
        store's pool has several connections: a claim of T + interval sent beside a slow claim
        of T could win first, and the fence would then refuse T, which would run nowhere (a
        drill on a loaded host lost points so). The runs a claim took along from ``_waiting``
        keep their order too (the lock is FIFO). The wait counts against the store timeout: a
        claim behind one the store does not answer fails after ``store_timeout_s``, as the
        claim itself would, rather than queueing points to run late once the store is back.

        :raises StoreError: still waiting after ``store_timeout_s``
        """
        try:
            with anyio.fail_after(self._store_timeout_s):
                await self._claim_order.acquire()
        except TimeoutError:
            raise StoreError(
                f"{self._store.url}: an earlier claim of this node is still unanswered"
            ) from None

    async def _retake(self, runs: list[GatedRun]) -> None:
        """At least once: claim again runs lost to a winner, once its lease has run out (a
        little after, measured here: the store decides on its own clock)."""
        assert self._lease_s is not None
        try:
            await anyio.sleep(self._lease_s + self._backup_delay_s)
        except BaseException:  # stopping: nothing runs unclaimed
            self._skip_all(runs, None)
            raise
        await self._claim(runs, retake=True)

    def _start(self, run: GatedRun) -> None:
        """Start a run this node won; the scheduler tells its end (``on_done``), which goes to
        the store's history."""
        timer, instant_ms = run.timer.name, run.instant_ms
        if self._stopping:
            # The scheduler stops (its claim was answered during the stop): no new run, whose
            # timeout could not even fire (the scheduler's tick source is stopped).
            run.skip()
            self._not_run(timer, instant_ms, "the scheduler stops")
            return
        token = self._next_token
        self._next_token += 1
        self._running[token] = (timer, instant_ms, time.perf_counter_ns())

        def on_done(outcome: str, duration_ns: int) -> None:
            if self._running.pop(token, None) is not None:  # (else recorded at close)
                self._record(RunOutcome(timer, instant_ms, OUTCOMES[outcome], duration_ns))

        if not run.start(on_done):
            del self._running[token]
            active = run.timer.state is TimerState.ACTIVE
            self._not_run(timer, instant_ms, "an overlap" if active else "the timer is not active")

    def _not_run(self, timer: str, instant_ms: int, why: str) -> None:
        """Won, but not run here: the timer ended, its earlier run still goes on here (an
        overlap), or the scheduler stops. With a lease it stays unfinished, so that another
        node takes it when the lease runs out; without, it is recorded as skipped."""
        logger.debug("%r: won %r at %d but did not run it (%s)", self, timer, instant_ms, why)
        if self._lease_s is None:
            self._record(RunOutcome(timer, instant_ms, Outcome.SKIPPED, 0))

    def _record(self, outcome: RunOutcome) -> None:
        self._finished.append(outcome)
        if self._ended is not None:
            self._ended.set()

    async def _report_ends(self) -> None:
        """Send the ends of runs to the store soon after they happen (gathered for
        ``FLUSH_DELAY_S``: one round trip for the runs of a batch), so that "claimed, not
        finished" means what it says."""
        while True:
            self._ended = ended = anyio.Event()
            if not self._finished:
                await ended.wait()
            await anyio.sleep(FLUSH_DELAY_S)
            await self._flush()

    def _count(self, timer: str, column: int) -> None:
        counts = self._per_timer.get(timer)
        if counts is None:
            counts = self._per_timer[timer] = [0, 0, 0, 0]
        counts[column] += 1

    # -- background ----------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat_s)
            await self._beat()
            await self._flush()

    async def _beat(self) -> None:
        """Open the store if needed, heartbeat, refresh the live nodes and the skew."""
        try:
            if not self._open:
                await self._store.open()
                self._open = True
            # The grid instants come from the scheduler's wall clock: that is the one to check.
            wall_ns = self._scheduler.clock.wall_ns if self._scheduler else time.time_ns
            before = wall_ns()
            live = await self._store.heartbeat(self._node, self._node_ttl_s)
            after = wall_ns()
        except StoreError as exc:
            self._store_errors += 1
            logger.warning("%r: heartbeat failed: %s", self, exc)
            return
        names = tuple(n.node for n in live) or (self._node,)
        if names != self._live:
            self._live = names
            self._mine = {}  # rendezvous answers change with the live nodes
        self._check_skew(live, (before + after) // 2)

    def _check_skew(self, live: list[NodeInfo], local_ns: int) -> None:
        # The store sets this node's expiry to its own clock + ttl: that gives its clock
        # without another round trip, within half the heartbeat's round trip.
        me = next((n for n in live if n.node == self._node), None)
        if me is None:
            return
        self._skew_ns = skew = me.expires_ns - int(self._node_ttl_s * NS_PER_S) - local_ns
        refusing = abs(skew) > self._max_skew_ns
        if refusing and not self._refusing:
            logger.error(
                "%r: this node's wall clock is %+.3f s off the store's (tolerance %.3f s): "
                "it refuses to claim cluster runs until its clock is fixed (NTP?)",
                self,
                -skew / NS_PER_S,
                self._max_skew_ns / NS_PER_S,
            )
        elif self._refusing and not refusing:
            logger.warning(
                "%r: wall clock back within %+.3f s of the store's: claiming again",
                self,
                -skew / NS_PER_S,
            )
        self._refusing = refusing

    async def _flush(self) -> None:
        while self._finished and self._open:
            batch, self._finished = self._finished[:FINISH_BATCH], self._finished[FINISH_BATCH:]
            try:
                await self._store.finish(self._node, batch)
            except StoreError as exc:
                self._store_errors += 1
                logger.warning("%r: recording %d finished run(s) failed: %s", self, len(batch), exc)
                self._finished[:0] = batch  # kept for the next flush
                if len(self._finished) > 100 * FINISH_BATCH:  # bounded: the oldest go
                    del self._finished[: len(self._finished) - 100 * FINISH_BATCH]
                return
            except BaseException:
                # Cancelled (the service stops, or stop()'s time ran out): kept for the flush
                # at close. Recording an end twice is harmless, should this one have landed.
                self._finished[:0] = batch
                raise

    async def _prunes(self) -> None:
        # Every node prunes, at a random phase, so a cluster prunes about n times per period.
        await anyio.sleep(self._prune_every_s * secrets.randbelow(1000) / 1000)
        while True:
            if self._open:
                try:
                    cutoff = await self._store.clock_ns() - self._retention_ns
                    deleted = await self._store.prune(cutoff)
                    logger.debug("%r: pruned %d run(s)", self, deleted)
                except StoreError as exc:
                    self._store_errors += 1
                    logger.warning("%r: pruning failed: %s", self, exc)
            await anyio.sleep(self._prune_every_s)

    async def _close(self) -> None:
        # The scheduler cancels its services after draining its callbacks: the runs that
        # finished during the drain are reported here, then the store closes.
        with anyio.move_on_after(2 * self._store_timeout_s):
            await self._flush()
        if self._open:
            self._open = False
            with anyio.move_on_after(2 * self._store_timeout_s):
                await self._store.close()
