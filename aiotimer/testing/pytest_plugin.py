"""aiotimer's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures are synchronous and bind to no event loop, so they work the same under pytest-asyncio
(strict and auto mode) and under anyio's pytest plugin, on asyncio, uvloop and trio.
"""

from __future__ import annotations

import pytest

from ._virtual_clock import VirtualClock


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A :class:`~aiotimer.testing.VirtualClock` at time 0; move it with ``advance``."""
    return VirtualClock()


@pytest.fixture
def autojump_clock() -> VirtualClock:
    """A :class:`~aiotimer.testing.VirtualClock` that jumps to the next deadline when idle."""
    return VirtualClock(autojump=True)
