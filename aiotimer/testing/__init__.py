"""Testing helpers: the virtual clock (and, through the ``pytest11`` entry point, fixtures).

``VirtualClock`` is a :class:`aiotimer.Clock` whose time only moves when the test says so::

    async def test_hourly(virtual_clock):
        s = aiotimer.Scheduler(clock=virtual_clock)
        ...
        await virtual_clock.advance(3 * 3600)
"""

from ._virtual_clock import VirtualClock

__all__ = ["VirtualClock"]
