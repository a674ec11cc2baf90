"""The run gate: the core's one extension point for cluster timers.

A timer registered with ``cluster=True`` runs on the wall-clock grid (epoch-anchored, so every
node of a cluster computes the same grid instants) and is *gated*: when one of its grid points
comes due, the dispatcher does not run it. It re-queues the timer for its next point as usual
and hands a :class:`GatedRun` to the scheduler's gate, once per dispatch batch with every gated
run due in it (so a gate can claim a whole batch in one round trip). The gate decides, later
and asynchronously, whether this node runs it (:meth:`GatedRun.start`: the run goes through the
dispatcher with every policy: overlap, timeout, thread, errors, stats) or not
(:meth:`GatedRun.skip`).

The core knows nothing of stores, networks or claims: a :class:`~aiotimer.Service` that also
implements :class:`RunGate` (``aiotimer.cluster.Cluster``) becomes the gate when it is added
with ``scheduler.add_service``. A scheduler with gated timers and no gate refuses to start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    from ._scheduler import Scheduler
    from ._timer import Timer

__all__ = ["GatedRun", "RunDone", "RunGate"]

RunDone = Callable[[str, int], object]
"""``on_done(outcome, duration_ns)``: how a started run ended (``"ok"``, ``"error"``,
``"timeout"`` or ``"cancelled"``: a stop cut it), on the scheduler's loop."""


@final
class GatedRun:
    """One due grid point of a cluster timer, waiting for the gate's verdict.

    :ivar timer: the timer
    :ivar instant_ms: the grid instant, in milliseconds since the Unix epoch (UTC): the same on
        every node, the idempotency key of the run
    :ivar scheduled_ns: the same instant on this scheduler's (monotonic) clock
    :ivar missed: grid points merged into this run (see ``Missed``)
    """

    __slots__ = ("_decided", "_settle", "_start", "instant_ms", "missed", "scheduled_ns", "timer")

    def __init__(
        self,
        timer: Timer,
        instant_ms: int,
        scheduled_ns: int,
        missed: int,
        start: Callable[[GatedRun, RunDone | None], bool],
        settle: Callable[[GatedRun], None],
    ) -> None:
        self.timer = timer
        self.instant_ms = instant_ms
        self.scheduled_ns = scheduled_ns
        self.missed = missed
        self._start = start
        self._settle = settle
        self._decided = False

    def start(self, on_done: RunDone | None = None) -> bool:
        """Run it here, now (on the scheduler's loop), with the timer's policies.

        :param on_done: called once the run ends, with its outcome and duration (a run history
            records it); not called when ``False`` is returned
        :returns: ``False`` if the timer ended meanwhile, or the run was skipped as an overlap
            (the timer's previous run still goes on this node)
        :raises RuntimeError: the run was already started or skipped
        """
        self._decide()
        return self._start(self, on_done)

    def skip(self) -> None:
        """Do not run it here (another node won it, or the gate's policy says so)."""
        self._decide()
        self._settle(self)

    def _decide(self) -> None:
        if self._decided:
            raise RuntimeError(
                f"timer {self.timer.name!r}: the run for instant {self.instant_ms} was "
                "already started or skipped"
            )
        self._decided = True

    def __repr__(self) -> str:
        return f"<GatedRun {self.timer.name!r} at {self.instant_ms} ms missed={self.missed}>"


@runtime_checkable
class RunGate(Protocol):
    """What decides whether a cluster timer's due run happens on this node."""

    def bind(self, scheduler: Scheduler) -> None:
        """Called by ``scheduler.start()`` before any timer is armed: the gate may guard the
        timers it was told of (``scheduler.guard(timer)``)."""
        ...

    def offer(self, runs: Sequence[GatedRun]) -> None:
        """Called on the scheduler's loop, synchronously, once per dispatch batch with every
        gated run due in it (never empty). It must not block: claim asynchronously, then call
        each run's ``start()`` or ``skip()``. An exception is logged and the batch skipped."""
        ...
