"""The tick source: one task that sleeps until the next deadline and hands out what is due.

Ground rules:

* Tickless: with nothing queued it waits without a timeout; it wakes only for a deadline or
  because :meth:`TickSource.wake_for` learned of an earlier one (a timer added while it sleeps).
* Never early: after every sleep it re-reads the clock and goes back to sleep if the deadline
  has not passed (uvloop rounds its timers to whole milliseconds and wakes up to 1 ms early).
* One wake-up hands every queue everything due by ``now``: the second queue's whole bucket and
  every ms bucket already due, then yields to the loop once so I/O is never starved, even by a
  1 ms timer whose callback takes longer than 1 ms.
* **On asyncio (and uvloop) with the timerfd, a wake-up is one loop callback**: the fd's reader
  callback re-reads the clock, hands out what is due and re-arms the fd, and the tick source's
  task only waits (for an error to raise, or to be cancelled). A task sleeping on the fd took
  three passes of the loop per wake-up (the reader callback, the task's step, its checkpoint),
  where a wake-up's own work is often one timer's run (a one-shot: SIP's shape): a 7 ms timer
  alone cost 50-55 ms of CPU a second that way on a 2-vCPU VM, 39-42 ms as one callback (raw
  ``call_later``: 22 ms). A callback that returns to the loop is the yield: I/O that is ready
  runs before the fd's next expiry is seen. An error in a wake-up fails the task as before
  (the scheduler stops). Trio, and the loop source (a virtual clock), keep the task that
  sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, final

import anyio

from ._backend import current_backend
from ._clock import Clock

if TYPE_CHECKING:
    from ._grid import Grid
    from ._timerfd import TimerFd

__all__ = ["TickSource"]


@final
class TickSource:
    """Drives ``grids`` on ``clock``: calls ``on_due(now_ns)`` whenever something is due."""

    __slots__ = (
        "_armed_ns",
        "_clock",
        "_failed",
        "_grids",
        "_on_due",
        "_sleep_scope",
        "_timerfd",
        "_waiting",
        "wakeups",
    )

    def __init__(self, clock: Clock, grids: Sequence[Grid], on_due: Callable[[int], None]) -> None:
        self._clock = clock
        self._grids = tuple(grids)
        self._on_due = on_due
        self._sleep_scope: anyio.CancelScope | None = None
        self._armed_ns: int | None = None  # the deadline we sleep for; None = until woken
        self._timerfd: TimerFd | None = None  # the precise source, while the scheduler runs
        self._waiting = False  # sleeping on the timerfd
        self._failed: asyncio.Future[None] | None = None  # what the fd's callback failed with
        self.wakeups = 0  # times the loop woke us (for benchmarks and the tickless tests)

    def next_deadline_ns(self) -> int | None:
        deadlines = [d for g in self._grids if (d := g.next_deadline_ns()) is not None]
        return min(deadlines) if deadlines else None

    def use_timerfd(self, timerfd: TimerFd | None) -> None:
        """Sleep on ``timerfd`` (the precise source) from now on; ``None``: on the clock."""
        self._timerfd = timerfd

    def wake_for(self, deadline_ns: int) -> None:
        """A timer was queued for ``deadline_ns``: cut the current sleep short if it ends later."""
        if self._armed_ns is not None and deadline_ns >= self._armed_ns:
            return
        if self._timerfd is not None:
            if self._waiting:
                self._armed_ns = deadline_ns
                self._timerfd.arm(deadline_ns)  # the fd is the wake-up channel too
        elif self._sleep_scope is not None:
            self._sleep_scope.cancel()

    async def run(self) -> None:
        """Loop until cancelled (the scheduler cancels it when it stops)."""
        if self._timerfd is not None and not self._timerfd.trio:
            await self._run_on_fd(self._timerfd)
            return
        clock = self._clock
        checkpoint = current_backend().checkpoint()
        while True:
            deadline_ns = self.next_deadline_ns()
            if deadline_ns is None or clock.now_ns() < deadline_ns:
                self._armed_ns = deadline_ns
                timerfd = self._timerfd
                if timerfd is not None:
                    timerfd.arm(deadline_ns)
                    self._waiting = True
                    try:
                        await timerfd.wait()
                    finally:
                        self._waiting = False
                else:
                    with anyio.CancelScope() as scope:
                        self._sleep_scope = scope
                        if deadline_ns is None:
                            await anyio.sleep_forever()
                        else:
                            await clock.sleep_until(deadline_ns)
                    self._sleep_scope = None
                self.wakeups += 1
                continue  # re-read the clock: never dispatch before the deadline
            self._on_due(clock.now_ns())
            await checkpoint()

    async def _run_on_fd(self, timerfd: TimerFd) -> None:
        """The tick source on asyncio with the timerfd: each wake-up is the fd's reader
        callback (:meth:`_on_fd`); this task waits for an error of one, or to be cancelled."""
        self._failed = asyncio.get_running_loop().create_future()
        timerfd.watch(self._on_fd)
        self._waiting = True
        try:
            deadline_ns = self.next_deadline_ns()
            self._armed_ns = deadline_ns
            timerfd.arm(deadline_ns)
            await self._failed
        finally:
            self._waiting = False
            self._failed = None
            timerfd.unwatch()

    def _on_fd(self) -> None:
        """The timerfd expired (or was re-armed for a deadline that had passed): if the
        deadline has come (never early), hand out what is due; then re-arm it for the next."""
        timerfd = self._timerfd
        assert timerfd is not None
        self.wakeups += 1
        try:
            now_ns = self._clock.now_ns()
            armed_ns = self._armed_ns  # (the kernel expires it never early: it has passed,
            if armed_ns is not None and now_ns >= armed_ns:  # unless re-armed since)
                self._on_due(now_ns)  # (runs nothing early: it pops the buckets due by now)
            deadline_ns = self.next_deadline_ns()
            self._armed_ns = deadline_ns
            # Re-arming resets the fd's count of expiries: it is not readable until the new
            # deadline passes (at once if it has), so no read() is needed to clear it (a
            # syscall saved per wake-up).
            timerfd.arm(deadline_ns)
        except BaseException as exc:
            timerfd.clear()  # (not re-armed: readable still)
            failed = self._failed
            if failed is not None and not failed.done():
                failed.set_exception(exc)  # the task raises it: the scheduler stops, logging it
            if not isinstance(exc, Exception):
                raise  # (KeyboardInterrupt, SystemExit: out of the loop, as from a task)
