"""One owner per host: a ``fcntl.flock`` leader lock, so that one process runs guarded timers.

An aiohttp app served by gunicorn with N workers (or any N copies of a service on one host)
registers every timer N times. Attach a :class:`LeaderLock` to each process's scheduler and the
guarded timers run in exactly one of them::

    scheduler.add_service(LeaderLock("/run/myapp/timers.lock", timers=["msilo-clean"]))

Ground rules:

* **Exclusion.** Every process opens the same lock file and tries ``flock(LOCK_EX | LOCK_NB)``.
  The one that holds it is the leader: its guarded timers run. The others are followers: their
  guarded timers are paused (:meth:`~aiotimer.Timer.pause`), so they cost nothing but a
  non-blocking ``flock`` retry every ``retry_s``. Unguarded timers run everywhere.
* **Leader death.** The kernel releases a ``flock`` when the last descriptor of the open file
  goes away, so a leader that exits, crashes or is SIGKILLed frees the lock at once; the next
  follower to retry takes it within ``retry_s`` and resumes its guarded timers from the next
  point of their grids. ``retry_s`` defaults to the shortest guarded interval (at most 1 s),
  so a follower takes over within one interval of the leader's death and at most one grid
  point is lost. Processes on one host share ``CLOCK_MONOTONIC``: give every scheduler the same
  ``grid_origin_ns`` (``Scheduler(grid_origin_ns=0)``) and the new leader continues the dead
  one's grid instead of starting its own.
* **Graceful stop.** The lock is released when the scheduler has drained its callbacks (the
  service is cancelled after the drain), so a follower never runs a guarded timer while the
  old leader's run of it is still going.
* **Liveness, not health.** A leader that is alive but hung keeps the lock: nothing here
  detects it. A process that ``fork()`` s while leader shares the lock with its child (a
  ``flock`` belongs to the open file, not the process); aiotimer's worker processes are
  spawned, not forked, and do not inherit it.
* **Same host only.** ``flock`` is a local lock. On NFS, Linux emulates it with byte-range
  locks whose behaviour across hosts depends on the server and its lease recovery, and some
  network filesystems ignore it: keep the lock file on a local filesystem (``/run``,
  ``/tmp``) and use a cluster lock to have one owner across hosts.
* **Ownership of pause.** While the scheduler runs, the lock owns the paused state of the
  guarded timers: a guarded timer that was paused before start stays paused, the others are
  paused and resumed by the lock. The guarded set is fixed at start (``timers=None`` means
  every timer the scheduler has then); timers added later are not guarded.
* The lock file is created if missing, holds the leader's pid (informational; it may be stale
  after a crash) and is never deleted: unlinking a lock file that others hold open lets two
  processes lead at once.

Unix only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import anyio
from anyio.abc import TaskStatus

from ._clock import NS_PER_S
from ._scheduler import Scheduler
from ._timer import Timer, TimerState

__all__ = ["LeaderLock", "LeaderStats"]

logger = logging.getLogger("aiotimer.leader")

MAX_RETRY_S: Final = 1.0
"""The default retry period is the shortest guarded interval, but never longer than this."""


@dataclass(frozen=True, slots=True)
class LeaderStats:
    """A :class:`LeaderLock`'s numbers (``scheduler.stats().services[lock.name]``)."""

    lock_file: str
    is_leader: bool
    pid: int
    guarded: tuple[str, ...]
    leaderships: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "lock_file": self.lock_file,
            "is_leader": self.is_leader,
            "pid": self.pid,
            "guarded": list(self.guarded),
            "leaderships": self.leaderships,
        }


@final
class LeaderLock:
    """A :class:`~aiotimer.Service` that lets one process on the host run the guarded timers.

    :param path: the lock file, on a local filesystem; created if missing (its directory must
        exist). Every process that shares the work opens the same path.
    :param timers: names (or :class:`~aiotimer.Timer` handles) of the timers to guard;
        ``None`` guards every timer the scheduler has when it starts
    :param retry_s: how often a follower retries the lock; by default the shortest guarded
        interval, at most 1 s
    :param name: the service's name (unique among the scheduler's services); also its key in
        ``scheduler.stats()``
    :raises TypeError: for a path that is not a ``str`` or ``os.PathLike``
    :raises ValueError: for an empty ``timers`` or a ``retry_s`` that is not a number > 0
    """

    __slots__ = (
        "_fd",
        "_guarded",
        "_held",
        "_leader",
        "_leaderships",
        "_name",
        "_path",
        "_retry_s",
        "_stopping",
        "_timer_names",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timers: Iterable[str | Timer] | None = None,
        retry_s: float | None = None,
        name: str = "leader",
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"leader lock {name!r}: path must be a str or PathLike, got {path!r}")
        if retry_s is not None and (
            isinstance(retry_s, bool)
            or not isinstance(retry_s, (int, float))
            or not math.isfinite(retry_s)
            or retry_s <= 0
        ):
            raise ValueError(
                f"leader lock {name!r}: retry_s must be a finite number > 0, got {retry_s!r}"
            )
        names: tuple[str, ...] | None = None
        if isinstance(timers, str):
            raise TypeError(
                f"leader lock {name!r}: timers must be a collection of names, got the str "
                f"{timers!r}; write timers=[{timers!r}]"
            )
        if timers is not None:
            names = tuple(t.name if isinstance(t, Timer) else t for t in timers)
            if not names:
                raise ValueError(
                    f"leader lock {name!r}: timers is empty; pass None to guard every timer"
                )
            for n in names:
                if not isinstance(n, str):
                    raise TypeError(
                        f"leader lock {name!r}: timers must be names or Timer handles, got {n!r}"
                    )
        self._name = name
        self._path = Path(path)
        self._timer_names = names
        self._retry_s = retry_s
        self._fd: int | None = None
        self._leader = False
        self._stopping = False
        self._guarded: tuple[Timer, ...] = ()
        self._held: list[Timer] = []  # guarded timers this lock paused (resumed on leading)
        self._leaderships = 0

    def __repr__(self) -> str:
        role = "leader" if self._leader else "follower" if self._fd is not None else "idle"
        return f"<LeaderLock {self._name!r} {str(self._path)!r} {role}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def leaderships(self) -> int:
        """How many times this lock became the leader."""
        return self._leaderships

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the lock (and runs the guarded timers) now."""
        return self._leader

    # -- Service ---------------------------------------------------------------------------

    async def serve(
        self, scheduler: Scheduler, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Take the lock or follow; started by the scheduler (see :class:`~aiotimer.Service`).

        :raises RuntimeError: if this lock already serves a scheduler
        :raises ValueError: if a guarded timer name is not registered on ``scheduler``
        :raises OSError: if the lock file cannot be opened or locked (the error names it)
        """
        if self._fd is not None:
            raise RuntimeError(f"leader lock {self._name!r} already serves a scheduler")
        guarded = self._resolve(scheduler)
        retry_ns = self._retry_ns(guarded)
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"leader lock {self._name!r}: cannot open lock file: {exc.strerror}",
                str(self._path),
            ) from None
        self._fd = fd
        self._guarded = guarded
        self._stopping = False
        try:
            if self._try_lock():
                self._lead()
            else:
                self._follow()
            task_status.started()
            clock = scheduler.clock
            while not self._leader and not self._stopping:
                await clock.sleep_until(clock.now_ns() + retry_ns)
                if not self._stopping and self._try_lock():
                    self._lead()
            await anyio.sleep_forever()
        finally:
            self._release()

    async def stop(self, grace_s: float) -> None:
        """Stop retrying; the lock itself is released once the scheduler has drained."""
        self._stopping = True

    def stats(self) -> LeaderStats:
        return LeaderStats(
            lock_file=str(self._path),
            is_leader=self._leader,
            pid=os.getpid(),
            guarded=tuple(t.name for t in self._guarded),
            leaderships=self._leaderships,
        )

    # -- internals -------------------------------------------------------------------------

    def _resolve(self, scheduler: Scheduler) -> tuple[Timer, ...]:
        timers = scheduler.timers
        if self._timer_names is None:
            return tuple(timers.values())
        missing = [n for n in self._timer_names if n not in timers]
        if missing:
            raise ValueError(
                f"leader lock {self._name!r}: scheduler {scheduler.name!r} has no timer "
                + ", ".join(repr(n) for n in missing)
                + " to guard"
            )
        return tuple(timers[n] for n in self._timer_names)

    def _retry_ns(self, guarded: tuple[Timer, ...]) -> int:
        if self._retry_s is not None:
            return max(1, round(self._retry_s * NS_PER_S))
        intervals = [t.interval * t.spec.unit.tick_ns for t in guarded]
        return min([round(MAX_RETRY_S * NS_PER_S), *intervals])

    def _try_lock(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"leader lock {self._name!r}: flock failed: {exc.strerror}",
                str(self._path),
            ) from None
        return True

    def _lead(self) -> None:
        assert self._fd is not None
        self._leader = True
        self._leaderships += 1
        pid = os.getpid()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid}\n".encode(), 0)
        held, self._held = self._held, []
        for timer in held:
            if timer.state is TimerState.PAUSED:  # not cancelled meanwhile
                timer.resume()
        logger.info(
            "pid %d leads %s: running %d guarded timer(s)", pid, self._path, len(self._guarded)
        )

    def _follow(self) -> None:
        for timer in self._guarded:
            if timer.state in (TimerState.PENDING, TimerState.ACTIVE):
                timer.pause()
                self._held.append(timer)
        logger.info(
            "pid %d follows on %s: %d guarded timer(s) paused, retrying",
            os.getpid(),
            self._path,
            len(self._held),
        )

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        was_leader, self._leader = self._leader, False
        held, self._held = self._held, []
        for timer in held:  # hand the pause state back as it was before start
            if timer.state is TimerState.PAUSED:
                timer.resume()
        if fd is None:
            return
        try:
            if was_leader:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if was_leader:
            logger.info("pid %d released %s", os.getpid(), self._path)
