"""A timer's dispatch mode: bits fixed at registration (``Dispatcher`` decides, from the spec).

``0`` and ``TAKES_TICK`` are the *fast* modes: a periodic, inline sync callback with no jitter
or timeout, run by the dispatcher's hot loops. Every other mode goes through its general path.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ASYNC", "COROUTINE", "FAST", "INTERNAL", "SPECIAL", "TAKES_TICK", "THREAD"]

TAKES_TICK: Final = 1
COROUTINE: Final = 2
THREAD: Final = 4
SPECIAL: Final = 8  # not periodic, or jittered, or with a timeout
INTERNAL: Final = 16  # the scheduler's own one-shots (run timeouts): no stats, no registry
ASYNC: Final = COROUTINE | THREAD
FAST: Final = TAKES_TICK
"""The largest fast mode: ``mode <= FAST`` is the hot loops' test."""
