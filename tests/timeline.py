"""Helpers for timeline tests: virtual time read in whole milliseconds."""

from __future__ import annotations

from aiotimer.testing import VirtualClock

MS = 1_000_000


def ms(clock: VirtualClock) -> int:
    """The clock's time in whole milliseconds."""
    return clock.now_ns() // MS
