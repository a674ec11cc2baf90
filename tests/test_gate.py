"""The run gate, the core's extension point for cluster timers: epoch-anchored grid instants,
one offer per dispatch batch, and the gate's verdicts (start or skip) honoured with every policy.

The gate here is a minimal one over an in-memory claim set (what ``aiotimer.cluster`` does over
a store); ``tests/test_cluster*.py`` run the real one against real stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import pytest
from anyio.abc import TaskStatus

import aiotimer
from aiotimer import TimerState
from aiotimer._gate import GatedRun
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

S = 1_000_000_000
START_WALL_NS = int(datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC).timestamp()) * S


class ClaimGate:
    """A service and run gate: claims each (timer, instant) in a shared set; first one wins."""

    def __init__(
        self, claims: set[tuple[str, int]], name: str = "gate", guard: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.guard = guard
        self.done: list[tuple[str, str]] = []
        self.claims = claims
        self.offers: list[list[GatedRun]] = []
        self.won = self.lost = 0
        self.decide_later = False
        self.pending: list[GatedRun] = []

    def bind(self, scheduler: aiotimer.Scheduler) -> None:
        for name in self.guard:
            scheduler.guard(scheduler.get_timer(name))

    def offer(self, runs: Sequence[GatedRun]) -> None:
        self.offers.append(list(runs))
        if self.decide_later:
            self.pending.extend(runs)
            return
        self.decide(runs)

    def decide(self, runs: Sequence[GatedRun]) -> None:
        for run in runs:
            key = (run.timer.name, run.instant_ms)
            if key in self.claims:
                self.lost += 1
                run.skip()
            else:
                self.claims.add(key)
                self.won += 1
                name = run.timer.name
                run.start(lambda outcome, _ns, name=name: self.done.append((name, outcome)))

    async def serve(self, scheduler: aiotimer.Scheduler, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def stop(self, grace_s: float) -> None:
        pass

    def stats(self) -> aiotimer.JsonStats:
        won, lost = self.won, self.lost

        class Stats:
            def as_dict(self) -> dict[str, int]:
                return {"won": won, "lost": lost}

        return Stats()


async def test_a_cluster_timer_without_a_gate_refuses_to_start(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    s.add_every_s(60, lambda: None, name="purge", cluster=True)
    with pytest.raises(RuntimeError, match=r"\['purge'\] have cluster=True but no Cluster"):
        await s.start()


async def test_cluster_instants_are_counted_from_the_epoch_and_offered_per_batch() -> None:
    clock = VirtualClock(wall_start_ns=START_WALL_NS)  # 12:00:20 UTC
    s = aiotimer.Scheduler(clock=clock)
    gate = ClaimGate(set())
    s.add_service(gate)
    walls: list[datetime] = []
    for i in range(10):
        s.add_every_s(60, lambda t: walls.append(t.wall), name=f"job{i}", cluster=True)
    s.add_every_ms(500, lambda: None, name="local")  # not gated
    async with s:
        await clock.advance(130)
    assert len(gate.offers) == 2  # 12:01:00 and 12:02:00: one offer each, all ten in it
    assert [len(o) for o in gate.offers] == [10, 10]
    assert sorted({w.isoformat() for w in walls}) == [
        "2026-06-01T12:01:00+00:00",
        "2026-06-01T12:02:00+00:00",
    ]
    assert gate.offers[0][0].instant_ms == (START_WALL_NS // S + 40) * 1000


async def test_two_nodes_sharing_claims_run_each_instant_once() -> None:
    clock = VirtualClock(wall_start_ns=START_WALL_NS)
    claims: set[tuple[str, int]] = set()
    runs: list[tuple[str, int]] = []
    nodes = []
    for node in ("a", "b"):
        s = aiotimer.Scheduler(clock=clock, name=node)
        s.add_service(ClaimGate(claims))
        s.add_every_s(
            10, lambda t, n=node: runs.append((n, t.scheduled_ns)), name="tick", cluster=True
        )
        nodes.append(s)
    async with nodes[0], nodes[1]:
        await clock.advance(100)
    assert len(runs) == 10
    assert len({when for _, when in runs}) == 10  # each instant once across both nodes


async def test_a_late_verdict_runs_with_the_timers_policies_and_a_skip_runs_nothing() -> None:
    clock = VirtualClock(wall_start_ns=START_WALL_NS)
    s = aiotimer.Scheduler(clock=clock)
    gate = ClaimGate({("once", (START_WALL_NS // S + 40) * 1000)})  # someone won 12:01:00
    gate.decide_later = True
    s.add_service(gate)
    ran: list[int] = []

    async def job(tick: aiotimer.Tick) -> None:
        ran.append(tick.missed)

    t = s.add_every_s(60, job, name="once", cluster=True, timeout_s=5)
    async with s:
        await clock.advance(41)
        gate.decide(gate.pending)  # 12:01:00 was claimed elsewhere: skipped
        gate.pending.clear()
        await clock.advance(60)
        gate.decide(gate.pending)  # 12:02:00: ours, decided 1 s late
        await clock.advance(1)
        with pytest.raises(RuntimeError, match="already started or skipped"):
            gate.pending[0].skip()
        assert t.state is TimerState.ACTIVE
    assert ran == [0]
    assert t.runs == 1
    assert t.stats.lateness.max_s == pytest.approx(1.0, abs=0.01)


async def test_guard_makes_a_timer_a_cluster_timer_before_start() -> None:
    clock = VirtualClock(wall_start_ns=START_WALL_NS)
    s = aiotimer.Scheduler(clock=clock)
    gate = ClaimGate(set())
    s.add_service(gate)
    walls: list[datetime] = []
    t = s.add_every_s(30, lambda tick: walls.append(tick.wall), name="guarded")
    s.guard(t)
    assert t.spec.cluster
    assert t.spec.describe() == "every 30 s (cluster)"
    async with s:
        with pytest.raises(RuntimeError, match="before start"):
            s.guard(t)
        await clock.advance(45)
    assert [w.isoformat() for w in walls] == [
        "2026-06-01T12:00:30+00:00",
        "2026-06-01T12:01:00+00:00",
    ]


async def test_one_gate_per_scheduler_and_no_cluster_one_shots(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    s.add_service(ClaimGate(set()))
    with pytest.raises(ValueError, match="a run gate is attached already"):
        s.add_service(ClaimGate(set(), name="other"))
    with pytest.raises(ValueError, match="cluster=True is for periodic and calendar"):
        s.add_every_ms(10, lambda: None, returns_interval=True, cluster=True)


async def test_the_gate_guards_named_timers_at_start_and_hears_how_runs_end() -> None:
    clock = VirtualClock(wall_start_ns=START_WALL_NS)
    s = aiotimer.Scheduler(clock=clock)
    gate = ClaimGate(set(), guard=("plain", "slow"))
    s.add_service(gate)

    def plain() -> None:
        raise ValueError("boom")

    async def slow() -> None:
        await clock.sleep(3600)

    s.add_every_s(60, plain, name="plain")
    s.add_every_s(60, slow, name="slow", timeout_s=2)
    async with s:
        assert s.get_timer("plain").spec.cluster  # guarded by the gate's bind() at start
        await clock.advance(45)
    assert sorted(gate.done) == [("plain", "error"), ("slow", "timeout")]
