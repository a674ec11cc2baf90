"""Per-timer policies: what a timer does after a stall, on overlap, on timeout and on failure.

Timing policies are named enums with a drawn timeline. A :class:`Policy` bundles them in one
small frozen value object validated when built; timers with default policies all share
:data:`DEFAULT_POLICY`, so a policy costs no memory per timer unless it is used.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from ._timer import Timer

__all__ = ["DEFAULT_POLICY", "ErrorHook", "Missed", "Overlap", "Policy"]

MAX_DELAY_S: Final = 100 * 365 * 86_400
"""The longest interval, delay or timeout aiotimer accepts: 100 years (3.15e18 ns, so every
deadline fits a signed 64-bit count of nanoseconds with room to spare)."""

ErrorHook = Callable[["Timer", BaseException], Any]
"""``on_error(timer, exc)``: called after a run failed (or timed out), on the event loop."""


class Missed(enum.Enum):
    """What a periodic timer does after a stall made it miss grid points.

    period 100 ms, loop blocked from 120 to 390 ms (grid points 200 and 300 pass)::

        grid:   |100  |200  |300  |400  |500  |600
        SKIP:   |100        390   |400  |500  |600    390 is 200's run; 300 merged: missed == 1
        BURST:  |100        390,390     |400  |500    200's and 300's runs back to back
        DELAY:  |100        390      |490  |590       the grid restarts from the late run

    A grid point *missed* is one that passed without a run of its own: for ``SKIP`` and
    ``DELAY``, ``runs + missed`` is the number of grid points due so far. ``BURST`` replays at
    most ``max_catchup`` missed points after a stall; older ones are missed.

    ``SKIP`` is the default: the work of a periodic timer is usually "bring things up to date",
    which one run does; replaying missed runs back to back (``BURST``) only suits timers that
    count something per period; ``DELAY`` is Kamailio's basic-timer behaviour.

    **When a policy applies.** Only to a run late by one interval or more: a run late by less
    (a busy loop, a slow batch) keeps the grid and misses nothing, so lateness never makes a
    timer drift. (Tokio applies its behaviour to any lateness over 5 ms; a grid-anchored timer
    would then drift with load.) period 300 ms, the loop busy until 351 ms::

        grid:   |0    |300  |600  |900
        aiotimer|0    351   |600  |900     351 is 300's run, late by 51 ms: no policy
        Tokio   |0    351      651   951   (Delay: every later tick shifted by 51 ms)

    **An inline callback that overruns its interval** is followed at once by the grid point that
    came due meanwhile (late by less than an interval: no policy), then the grid goes on: every
    grid point gets its run while the callback fits on average. (Twisted's ``LoopingCall``
    instead skips to the next future point; that is ``SKIP`` here once a whole interval passed.)

    **BURST and overlap.** A catch-up run of a coroutine or thread timer waits for the run
    before it (catch-up runs are never counted as overlaps, whatever ``Overlap``): the missed
    points are replayed one after the other, at most ``max_catchup``.

    **DELAY never shortens a period**: the next run is at the first grid tick at least one
    interval after the late run (on the second grid, up to a second more).
    """

    SKIP = "skip"
    BURST = "burst"
    DELAY = "delay"

    def next_point(
        self, grid_tick: int, now_tick: int, ceil_tick: int, interval: int, max_catchup: int
    ) -> tuple[int, int]:
        """``(next grid point, missed)`` for a run due at ``grid_tick`` that happens at a time
        whose tick is ``now_tick`` (rounded down) or ``ceil_tick`` (rounded up), a whole
        ``interval`` or more late (ticks of the timer's grid). The one place that knows the
        missed-tick arithmetic (Tokio's ``MissedTickBehavior::next_timeout``)."""
        passed = (now_tick - grid_tick) // interval  # grid points that passed after grid_tick
        if self is MISSED_SKIP:  # merge them into this run
            return grid_tick + (passed + 1) * interval, passed
        if self is MISSED_BURST:  # replay them, but at most max_catchup
            missed = max(0, passed - max_catchup)
            return grid_tick + (missed + 1) * interval, missed
        # DELAY: the grid restarts from this late run, a whole interval after it (never shorter)
        return ceil_tick + interval, passed


# Enum members read through their class cost ~0.2 µs each on CPython 3.11 (the enum
# metaclass has a __getattr__, which slows every attribute lookup on an enum class);
# module globals cost ~15 ns. The late-run path reads these.
MISSED_SKIP: Final = Missed.SKIP
MISSED_BURST: Final = Missed.BURST
MISSED_DELAY: Final = Missed.DELAY


@final
class Overlap:
    """What happens when a run is due while the previous run of the same timer still runs.

    period 100 ms, each run takes 260 ms::

        grid:           |100  |200  |300  |400  |500  |600
        SKIP:           |100=======360  |400=======660       200, 300, 500, 600 skipped
        QUEUE:          |100=======|360=======|620======     one run waits; 300, 500, 600 skipped
        CONCURRENT(2):  |100=======360  |400=======660
                              |200=======460  |500========   300 and 600 skipped

    Only asynchronous runs (coroutines, and sync callbacks in a thread) can overlap: an inline
    sync callback holds the loop, so the next run is simply late (see :class:`Missed`).
    """

    __slots__ = ("limit", "mode")

    SKIP: Overlap
    """Skip a run that is due while the previous one runs (default; counted in stats)."""
    QUEUE: Overlap
    """Run right after the previous run ends; at most one run waits, further ones are skipped."""

    def __init__(self, mode: str, limit: int) -> None:
        self.mode = mode
        self.limit = limit

    @staticmethod
    def CONCURRENT(limit: int) -> Overlap:
        """Let up to ``limit`` runs of the timer run at once; beyond that, skip (counted)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"Overlap.CONCURRENT(limit) needs an int >= 1, got {limit!r}")
        return Overlap("concurrent", limit)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Overlap) and self.mode == other.mode and self.limit == other.limit

    def __hash__(self) -> int:
        return hash((self.mode, self.limit))

    def __repr__(self) -> str:
        if self.mode == "concurrent":
            return f"Overlap.CONCURRENT({self.limit})"
        return f"Overlap.{self.mode.upper()}"


Overlap.SKIP = Overlap("skip", 1)
Overlap.QUEUE = Overlap("queue", 1)


@dataclass(frozen=True, slots=True)
class Policy:
    """How a timer behaves when things go wrong. Every field has a safe default.

    :param missed: after a stall, see :class:`Missed` (default ``SKIP``)
    :param max_catchup: with ``Missed.BURST``, at most this many catch-up runs after a stall
    :param overlap: a run due while the previous one runs, see :class:`Overlap`
    :param timeout_s: a coroutine run is cancelled after this long (counted as a timeout); a
        sync run in a thread cannot be killed, so running past it is reported and counted
    :param thread: run a sync callback in a worker thread (for blocking work), through
        the scheduler's own bounded pool (see ``Scheduler(thread_limit=)``), never the loop's
        default executor
    :param jitter_ms: delay each run by a random ``0 <= j < jitter_ms`` after its grid point,
        drawn afresh per run (never accumulated: run k stays within ``[grid_k, grid_k + jitter)``)
    :param on_error: ``on_error(timer, exc)`` after a failed run, besides the scheduler's hook
    :param max_failures: cancel the timer after this many consecutive failed runs (off: None)
    :param eager: a coroutine run starts at its grid point, synchronously in the dispatch of
        its batch, and becomes a task only if it suspends (asyncio and uvloop; a run with a
        ``timeout_s`` and every run on trio are tasks from the start). Before its first
        suspension it has no current task: set ``False`` for a coroutine that enters a cancel
        scope or ``asyncio.timeout`` before its first ``await``
    """

    missed: Missed = Missed.SKIP
    max_catchup: int = 100
    overlap: Overlap = Overlap.SKIP
    timeout_s: float | None = None
    thread: bool = False
    jitter_ms: int = 0
    on_error: ErrorHook | None = None
    max_failures: int | None = None
    eager: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.missed, Missed):
            raise TypeError(f"missed must be a Missed, got {self.missed!r}")
        _check_int("max_catchup", self.max_catchup, minimum=1)
        if not isinstance(self.overlap, Overlap):
            raise TypeError(f"overlap must be an Overlap, got {self.overlap!r}")
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, (int, float))
            or not math.isfinite(self.timeout_s)
            or self.timeout_s <= 0
            or self.timeout_s > MAX_DELAY_S
        ):
            raise ValueError(
                f"timeout_s must be a finite number > 0 and <= {MAX_DELAY_S}, "
                f"got {self.timeout_s!r}"
            )
        if not isinstance(self.thread, bool):
            raise TypeError(f"thread must be a bool, got {self.thread!r}")
        _check_int("jitter_ms", self.jitter_ms, minimum=0)
        if self.on_error is not None and not callable(self.on_error):
            raise TypeError(f"on_error must be callable, got {self.on_error!r}")
        if self.max_failures is not None:
            _check_int("max_failures", self.max_failures, minimum=1)
        if not isinstance(self.eager, bool):
            raise TypeError(f"eager must be a bool, got {self.eager!r}")

    @property
    def timeout_ns(self) -> int | None:
        return None if self.timeout_s is None else math.ceil(self.timeout_s * 1e9)


def _check_int(what: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")


DEFAULT_POLICY: Final = Policy()
