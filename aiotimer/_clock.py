"""The clock the scheduling core asks for the time and for sleeps.

Ground rules:

* Time is an ``int`` of nanoseconds on a monotonic clock. Nothing in the scheduling core calls
  ``time.*`` directly: it asks the injected :class:`Clock`, so tests swap in
  :class:`aiotimer.testing.VirtualClock` and an hourly timer is tested in milliseconds.
* ``sleep_until`` may return early (uvloop rounds its timers to whole milliseconds and can wake
  up to 1 ms before the deadline). Callers that must never be early re-read ``now_ns`` after
  waking and sleep the remainder; the tick source does exactly that.
* ``wall_ns()`` is the wall clock (ns since the Unix epoch, UTC) for what is anchored on it
  (cluster and calendar timers). It may step (NTP, suspend, an operator): the core maps wall
  instants onto the monotonic clock and re-checks the wall clock on waking, never the reverse.
* ``hold()`` marks work in progress that takes real time outside the event loop (a callback in a
  worker thread). A virtual clock does not jump time while something holds it; the monotonic
  clock ignores it.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol, final, runtime_checkable

import anyio

__all__ = ["Clock", "MonotonicClock"]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


@runtime_checkable
class Clock(Protocol):
    """What the scheduling core needs from time."""

    def now_ns(self) -> int:
        """The current time, in integer nanoseconds of a monotonic clock."""
        ...

    def wall_ns(self) -> int:
        """The wall-clock time, in integer nanoseconds since the Unix epoch (UTC); may step."""
        ...

    async def sleep_until(self, deadline_ns: int) -> None:
        """Sleep until ``deadline_ns`` or a little before it (see the module's ground rules)."""
        ...

    def hold(self) -> AbstractContextManager[None]:
        """A context in which time must not be jumped over (thread work in progress)."""
        ...


@final
class MonotonicClock:
    """The real clock: :func:`time.monotonic_ns`, sleeping on the running event loop."""

    __slots__ = ()

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        delay_ns = deadline_ns - time.monotonic_ns()
        # anyio.sleep(0) is still a checkpoint, so a past deadline yields once to the loop.
        await anyio.sleep(delay_ns / NS_PER_S if delay_ns > 0 else 0)

    def hold(self) -> AbstractContextManager[None]:
        return _NO_HOLD

    def __repr__(self) -> str:
        return "MonotonicClock()"


class _NoHold(AbstractContextManager[None]):
    __slots__ = ()

    def __exit__(self, *exc: object) -> None:
        return None


_NO_HOLD = _NoHold()
