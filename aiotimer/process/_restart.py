"""When a dead worker is restarted, and how fast: a small frozen value object.

Ground rules: a worker that the parent asked to stop is never restarted; any other end is a
crash, restarted or not according to :attr:`RestartPolicy.mode`; crashes are restarted with an
exponential backoff, and after ``max_restarts`` restarts within ``window_s`` the supervisor gives
up on that worker (its state becomes ``failed``, reported in the log and in the stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, final

__all__ = ["RestartMode", "RestartPolicy"]

RestartMode = Literal["always", "on-failure", "never"]
_MODES: tuple[RestartMode, ...] = ("always", "on-failure", "never")


@final
@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How the parent restarts a worker that ended without being asked to.

    The defaults (backoff_s=0.1, backoff_max_s=10, max_restarts=5, window_s=60), a worker
    crashing again and again (delays in seconds)::

        crash:    X      X         X              X                    X                 X
        restart:  |0     |0.1      |0.2           |0.4                 |0.8              none
        (each delay doubles, capped at backoff_max_s; after max_restarts restarts within
        window_s: no more restarts, state "failed")

    :param mode: ``"on-failure"`` (default): restart unless it exited with code 0;
        ``"always"``: restart whatever the exit code; ``"never"``: leave it dead
    :param max_restarts: at most this many restarts within ``window_s``
    :param window_s: the sliding window of ``max_restarts``, in seconds
    :param backoff_s: the delay before the second restart in the window (the first one is
        immediate), doubling for each further one
    :param backoff_max_s: the longest delay
    """

    mode: RestartMode = "on-failure"
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"restart mode must be one of {_MODES}, got {self.mode!r}")
        if (
            isinstance(self.max_restarts, bool)
            or not isinstance(self.max_restarts, int)
            or self.max_restarts < 0
        ):
            raise ValueError(f"max_restarts must be an int >= 0, got {self.max_restarts!r}")
        for what in ("window_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, what)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")

    def restarts_after(self, exitcode: int | None) -> bool:
        """Whether a worker that ended by itself with ``exitcode`` is restarted (limits aside)."""
        if self.mode == "always":
            return True
        return self.mode == "on-failure" and exitcode != 0

    def delay_s(self, recent: int) -> float:
        """The delay before a restart when ``recent`` restarts happened within the window."""
        if recent <= 0:
            return 0.0
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (recent - 1)))
