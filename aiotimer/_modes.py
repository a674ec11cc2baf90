"""A timer's dispatch mode: bits fixed at registration (``Dispatcher`` decides, from the spec).

``0`` and ``TAKES_TICK`` are the *fast* modes: a periodic, inline sync callback with no jitter
or timeout, run by the dispatcher's hot loops. Every other mode goes through its general path,
but a periodic eager coroutine (``COROUTINE | EAGER``, no jitter or timeout) may share a
uniform bucket with them (:data:`LEAN`): the lean loop starts its run through the general
start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._policy import MISSED_BURST
from ._spec import CALENDAR as CALENDAR_KIND
from ._spec import PERIODIC

if TYPE_CHECKING:
    from ._spec import TimerSpec

__all__ = [
    "ASYNC",
    "BURST",
    "CALENDAR",
    "COROUTINE",
    "EAGER",
    "FAST",
    "GATED",
    "INTERNAL",
    "JITTER",
    "LEAN",
    "SPECIAL",
    "TAKES_TICK",
    "THREAD",
    "mode_of",
]

TAKES_TICK: Final = 1
COROUTINE: Final = 2
THREAD: Final = 4
SPECIAL: Final = 8  # not periodic, or jittered, or with a timeout
INTERNAL: Final = 16  # the scheduler's own one-shots (run timeouts): no stats, no registry
JITTER: Final = 32  # each run is drawn off its grid point (with SPECIAL)
CALENDAR: Final = 64  # the instants of a trigger, on the wall grid (with SPECIAL)
GATED: Final = 128  # a cluster timer: each due run is offered to the run gate (with SPECIAL)
EAGER: Final = 256  # a coroutine run starts synchronously, a task only if it suspends
BURST: Final = 512  # an asynchronous run under Missed.BURST: it records its wake-up
ASYNC: Final = COROUTINE | THREAD
FAST: Final = TAKES_TICK
"""The largest fast mode: ``mode <= FAST`` is the hot loops' test."""
LEAN: Final = frozenset(
    {0, TAKES_TICK}
    | {COROUTINE | EAGER | tick | burst for tick in (0, TAKES_TICK) for burst in (0, BURST)}
)
"""The modes a uniform bucket may hold (see ``_queue``): the fast modes, and a periodic eager
coroutine with no jitter or timeout (the dispatcher's lean loop starts its run, see
``_dispatch``)."""


def mode_of(spec: TimerSpec) -> int:
    """The dispatch mode bits of a spec."""
    mode = TAKES_TICK if spec.takes_tick else 0
    if spec.is_coroutine:
        mode |= COROUTINE
        if spec.policy.eager and spec.policy.timeout_s is None:  # (a timeout needs a task)
            mode |= EAGER
    policy = spec.policy
    if policy.thread:
        mode |= THREAD
    if mode & ASYNC and policy.missed is MISSED_BURST:
        mode |= BURST
    if policy.jitter_ms:
        mode |= JITTER | SPECIAL
    # The fast path handles periodic inline runs with any missed policy, error hooks and
    # max_failures (they act only on late or failed runs); these need the general path:
    if spec.kind is not PERIODIC or policy.timeout_s is not None:
        mode |= SPECIAL
    if spec.kind is CALENDAR_KIND:
        mode |= CALENDAR
    if spec.cluster:
        mode |= GATED | SPECIAL
    return mode
