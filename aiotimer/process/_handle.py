"""The parent's handle on one worker: its identity, state and numbers, and ``send``.

Ground rules: a :class:`Worker` outlives the processes behind it (a restarted worker is the same
handle with a new pid); what runs it is a *runner*, a real process supervisor or an inline one,
attached while the scheduler runs. The handle's numbers are plain attributes the runner updates
on the loop; :meth:`Worker.stats` snapshots them as a typed :class:`WorkerStats` (with the
worker's own :class:`~aiotimer.SchedulerStats` as it last reported it), which ``as_dict()``
turns into JSON-ready data at the edge.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

from .._stats import SchedulerStats
from ._context import WorkerInfo

__all__ = ["Runner", "Worker", "WorkerState", "WorkerStats"]


class WorkerState(enum.Enum):
    """Where a worker is in its life.

    ``STOPPED`` -> ``STARTING`` -> ``RUNNING`` -> (crash) ``RESTARTING`` -> ``STARTING`` ...;
    ``stop()`` -> ``STOPPING`` -> ``STOPPED``; too many crashes -> ``FAILED`` (given up).
    """

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


class Runner(Protocol):
    """What runs a worker: a process supervisor, or an inline scheduler."""

    @property
    def mode(self) -> str:
        """``"spawn"``, ``"forkserver"`` or ``"inline"``."""
        ...

    def send(self, obj: Any) -> None: ...

    async def drain(self) -> None: ...

    def heartbeat_age_s(self) -> float | None: ...

    def child_stats(self) -> tuple[SchedulerStats | None, float | None]: ...


@final
@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A snapshot of one worker, as its parent sees it (``Worker.stats()``).

    :ivar name: the timer process's name
    :ivar index: the worker's index, ``0 .. workers - 1``
    :ivar mode: ``"spawn"``, ``"forkserver"`` or ``"inline"``; ``None`` when not attached
    :ivar state: its :class:`WorkerState`'s value
    :ivar pid: the pid of its current (or last) process
    :ivar uptime_s: seconds since its last ``READY``, while running
    :ivar restarts: restarts done; ``crashes``: unrequested ends; ``protocol_errors``: bad
        frames from it; ``callback_errors``: its callbacks' failures
    :ivar last_crash: the last crash, as text; ``last_error``: the last callback failure
        (``{"timer", "error", "traceback"}``)
    :ivar heartbeat_age_s: seconds since its last frame (a real process that runs)
    :ivar stats_age_s: seconds since ``stats`` arrived
    :ivar stats: the worker's own scheduler's :class:`~aiotimer.SchedulerStats`, as last
        reported (every ``stats_interval_s``, and once more when it stops); ``None`` before
        the first report
    """

    name: str
    index: int
    mode: str | None
    state: str
    pid: int | None
    uptime_s: float | None
    restarts: int
    crashes: int
    last_crash: str | None
    protocol_errors: int
    callback_errors: int
    last_error: dict[str, Any] | None
    heartbeat_age_s: float | None
    stats_age_s: float | None
    stats: SchedulerStats | None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``"stats"`` is the child scheduler's ``as_dict()``)."""
        return {
            "name": self.name,
            "index": self.index,
            "mode": self.mode,
            "state": self.state,
            "pid": self.pid,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "last_crash": self.last_crash,
            "protocol_errors": self.protocol_errors,
            "callback_errors": self.callback_errors,
            "last_error": self.last_error,
            "heartbeat_age_s": self.heartbeat_age_s,
            "stats_age_s": self.stats_age_s,
            "stats": None if self.stats is None else self.stats.as_dict(),
        }


_RUNNING: Final = WorkerState.RUNNING  # (an enum member via its class costs ~0.2 µs on 3.11)


@final
class Worker:
    """One worker of a :class:`~aiotimer.process.TimerProcess` (``proc.workers[i]``).

    Not built directly. Numbers: ``restarts`` (restarts done), ``crashes`` (unrequested ends),
    ``protocol_errors`` (bad frames from it), ``callback_errors`` (its callbacks' failures).
    """

    __slots__ = (
        "_runner",
        "callback_errors",
        "crashes",
        "index",
        "last_crash",
        "last_error",
        "name",
        "pid",
        "protocol_errors",
        "restarts",
        "started_at",
        "state",
    )

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.state = WorkerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.crashes = 0
        self.protocol_errors = 0
        self.callback_errors = 0
        self.last_crash: str | None = None
        self.last_error: dict[str, Any] | None = None
        self.started_at: float | None = None  # time.monotonic() of its last READY
        self._runner: Runner | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.name!r}[{self.index}] {self.state.value} pid={self.pid}>"

    @property
    def info(self) -> WorkerInfo:
        """Its :class:`WorkerInfo` now (the pid changes when it is restarted; 0 before start)."""
        return WorkerInfo(self.name, self.index, self.pid or 0)

    def send_nowait(self, obj: Any) -> None:
        """Send ``obj`` to the worker's ``on_parent_message`` handlers, without waiting.

        At most once: a message sent to a worker that dies before reading it is lost. Call it
        from the event loop's thread.

        :raises RuntimeError: the worker is not running (starting, restarting, stopped...)
        :raises TypeError: ``obj`` does not pickle
        """
        runner = self._runner
        if runner is None or self.state is not _RUNNING:
            raise RuntimeError(
                f"worker {self.name!r}[{self.index}] cannot take messages: it is {self.state.value}"
            )
        runner.send(obj)

    async def send(self, obj: Any) -> None:
        """:meth:`send_nowait`, then wait while the pipe's buffer is above its high-water mark
        (backpressure for a fast sender)."""
        self.send_nowait(obj)
        runner = self._runner
        if runner is not None:
            await runner.drain()

    def stats(self) -> WorkerStats:
        """A typed snapshot: state, pid, restarts, heartbeat age, and the worker's own
        ``scheduler.stats()`` as last reported (``None`` before the first report)."""
        runner = self._runner
        child, age = runner.child_stats() if runner is not None else (None, None)
        return WorkerStats(
            name=self.name,
            index=self.index,
            mode=runner.mode if runner is not None else None,
            state=self.state.value,
            pid=self.pid,
            uptime_s=(
                time.monotonic() - self.started_at
                if self.started_at is not None and self.state is WorkerState.RUNNING
                else None
            ),
            restarts=self.restarts,
            crashes=self.crashes,
            last_crash=self.last_crash,
            protocol_errors=self.protocol_errors,
            callback_errors=self.callback_errors,
            last_error=self.last_error,
            heartbeat_age_s=runner.heartbeat_age_s() if runner is not None else None,
            stats_age_s=age,
            stats=child,
        )

    def _attach(self, runner: Runner | None) -> None:
        self._runner = runner

    def _ready(self, pid: int | None = None) -> None:
        self.state = WorkerState.RUNNING
        self.pid = pid if pid is not None else os.getpid()
        self.started_at = time.monotonic()
