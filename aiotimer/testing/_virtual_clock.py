"""A virtual clock: time moves only when a test says so, or jumps when everything waits.

Ground rules:

* ``now_ns`` starts at ``start_ns`` (0 by default) and changes only in :meth:`advance`,
  :meth:`advance_to` or an autojump; nothing here reads a real clock, so timing tests are exact
  and never flaky, and an hourly timer is tested in milliseconds.
* Time never moves past a sleeper's deadline without waking it first and letting the woken
  tasks run until the loop is idle again: time steps from deadline to deadline, so callbacks
  see every intermediate time they would see on a real clock.
* "Idle" means no task can run: on asyncio (and uvloop) every task is blocked on an unfinished
  future and the loop has nothing ready; on trio, ``trio.testing.wait_all_tasks_blocked``.
  Work in a thread holds the clock (:meth:`hold`): time does not move until it finishes.
* Real-time waits (``asyncio.sleep``, I/O) are not virtual: they are not jumped over and do not
  hold time back, so code under a virtual clock should sleep on the clock.
* It has a virtual wall clock too: ``wall_ns()`` is ``wall_start_ns`` plus the virtual time
  gone by, plus every :meth:`step_wall` (an NTP step or a suspend, forward or back), so DST
  transitions and clock steps are tested in milliseconds. The wall clock never moves the
  monotonic one.
* Not thread-safe: use it from the event loop's thread (threads only ``hold`` it).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, final

import anyio
import anyio.lowlevel

from .._backend import current_backend

__all__ = ["VirtualClock"]

NS_PER_S: Final = 1_000_000_000
DEFAULT_WALL_START_NS: Final = 1_767_225_600 * NS_PER_S
"""2026-01-01T00:00:00Z: the virtual wall clock's default start."""


class _Sleeper:
    __slots__ = ("deadline_ns", "done", "event")

    def __init__(self, deadline_ns: int, event: anyio.Event) -> None:
        self.deadline_ns = deadline_ns
        self.event = event
        self.done = False


@final
class VirtualClock:
    """A :class:`~aiotimer.Clock` whose time is moved by the test.

    :param start_ns: the initial time
    :param wall_start_ns: the wall-clock time (ns since the Unix epoch, UTC) at ``start_ns``;
        by default 2026-01-01T00:00:00Z
    :param autojump: when every task waits, jump straight to the earliest sleeper's deadline
        (like trio's ``MockClock(autojump_threshold=0)``), so ``await clock.sleep(3600)`` in a
        test returns at once with an hour gone by
    """

    def __init__(
        self,
        start_ns: int = 0,
        *,
        wall_start_ns: int = DEFAULT_WALL_START_NS,
        autojump: bool = False,
    ) -> None:
        for what, value in (("start_ns", start_ns), ("wall_start_ns", wall_start_ns)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"VirtualClock: {what} must be an int of ns, got {value!r}")
        self._now_ns = start_ns
        self._wall_offset_ns = wall_start_ns - start_ns  # wall = now + offset
        self._sleepers: list[tuple[int, int, _Sleeper]] = []  # heap; cancelled ones stay, done
        self._seq = itertools.count()
        self._holds = 0
        self._holds_lock = threading.Lock()
        self._released: anyio.Event | None = None
        self._driving = False
        self._idle_verdict: anyio.Event | None = None
        self.autojump = autojump
        self.jumps = 0  # how many times time moved to wake sleepers (for tests of the clock)

    def __repr__(self) -> str:
        return f"VirtualClock(now_ns={self._now_ns}, sleepers={self.sleepers})"

    # -- the Clock protocol ----------------------------------------------------------------

    def now_ns(self) -> int:
        return self._now_ns

    def wall_ns(self) -> int:
        return self._now_ns + self._wall_offset_ns

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= self._now_ns:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(deadline_ns, anyio.Event())
        heapq.heappush(self._sleepers, (deadline_ns, next(self._seq), sleeper))
        if self.autojump and not self._driving:
            self._driving = True
            current_backend().spawn_detached(self._drive, name="aiotimer VirtualClock autojump")
        try:
            await sleeper.event.wait()
        finally:
            sleeper.done = True

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep time still while the block runs (the dispatcher holds it around thread work)."""
        with self._holds_lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._holds_lock:
                self._holds -= 1

    # -- conveniences ----------------------------------------------------------------------

    @property
    def sleepers(self) -> int:
        """Tasks sleeping on this clock now."""
        return sum(1 for _, _, s in self._sleepers if not s.done)

    def next_deadline_ns(self) -> int | None:
        """The earliest deadline anyone sleeps for, or ``None``."""
        self._prune()
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time."""
        await self.sleep_until(self._now_ns + _to_ns(seconds, "seconds"))

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (negative: back) without moving monotonic time:
        what an NTP step, a suspend or an operator's ``date -s`` looks like to a process."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"step_wall takes a number of seconds, got {seconds!r}")
        if not math.isfinite(seconds):
            raise ValueError(f"step_wall takes a finite number of seconds, got {seconds!r}")
        self._wall_offset_ns += round(seconds * NS_PER_S)

    def set_wall(self, wall_ns: int) -> None:
        """Set the wall clock to ``wall_ns`` (ns since the epoch) without moving monotonic time."""
        if isinstance(wall_ns, bool) or not isinstance(wall_ns, int):
            raise TypeError(f"set_wall takes an int of ns since the epoch, got {wall_ns!r}")
        self._wall_offset_ns = wall_ns - self._now_ns

    def spend(self, seconds: float) -> None:
        """Move time forward *without* letting the loop run: what a blocking call does.

        Call it from a sync callback to simulate one that holds the loop for ``seconds``;
        sleepers whose deadline passed wake (late) at the next :meth:`advance`.
        """
        self._now_ns += _to_ns(seconds, "seconds")

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers deadline by deadline."""
        await self.advance_to(self._now_ns + _to_ns(seconds, "seconds"))

    async def advance_ms(self, ms: float) -> None:
        """Move time forward by ``ms`` milliseconds."""
        await self.advance_to(self._now_ns + _to_ns(ms / 1000, "ms"))

    async def advance_to(self, time_ns: int) -> None:
        """Move time to ``time_ns``: wake each sleeper at its own deadline, in order, and let
        the loop run until idle after each step and at the end."""
        if isinstance(time_ns, bool) or not isinstance(time_ns, int):
            raise TypeError(f"advance_to takes an int of ns, got {time_ns!r}")
        if time_ns < self._now_ns:
            raise ValueError(f"time only moves forward: now {self._now_ns} ns, asked {time_ns} ns")
        while True:
            await self.run_until_idle()
            deadline_ns = self.next_deadline_ns()
            if deadline_ns is None or deadline_ns > time_ns:
                break
            self._jump_to(deadline_ns)
        self._now_ns = max(self._now_ns, time_ns)  # a callback may have spent past it
        await self.run_until_idle()

    async def run_until_idle(self) -> None:
        """Let every task run until all of them wait (and no thread holds the clock)."""
        while True:
            await self._loop_idle()
            if self._holds == 0:
                return
            await anyio.sleep(0.0005)  # a thread is working: poll (real time) until it is done

    # -- internals -------------------------------------------------------------------------

    async def _loop_idle(self) -> None:
        """One task at a time probes for idleness; others wait for its verdict (two probes
        would each see the other as runnable, forever)."""
        verdict = self._idle_verdict
        if verdict is not None:
            await verdict.wait()
            return
        verdict = self._idle_verdict = anyio.Event()
        try:
            await _wait_loop_idle()
        finally:
            self._idle_verdict = None
            verdict.set()

    def _prune(self) -> None:
        sleepers = self._sleepers
        while sleepers and sleepers[0][2].done:
            heapq.heappop(sleepers)

    def _jump_to(self, deadline_ns: int) -> None:
        """Set the time to ``deadline_ns`` and wake everyone due by then."""
        self._now_ns = max(self._now_ns, deadline_ns)
        self.jumps += 1
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= self._now_ns:
            _, _, sleeper = heapq.heappop(sleepers)
            if not sleeper.done:
                sleeper.done = True
                sleeper.event.set()

    async def _drive(self) -> None:
        """Autojump: while anyone sleeps on the clock, jump to the next deadline when idle."""
        try:
            while self.autojump:
                await self.run_until_idle()
                deadline_ns = self.next_deadline_ns()
                if deadline_ns is None:
                    return
                self._jump_to(deadline_ns)
        finally:
            self._driving = False


def _to_ns(value: float, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{what} must be a number >= 0, got {value!r}")
    return round(value * NS_PER_S)


async def _wait_loop_idle() -> None:
    """Return once no other task of the running loop can make progress."""
    try:
        await current_backend().wait_idle()
    except RuntimeError as exc:
        raise RuntimeError(f"VirtualClock: {exc}") from None
