"""Twisted's ``LoopingCall`` test vectors, ported onto aiotimer (missed-tick conformance).

Source: twisted ``src/twisted/test/test_task.py``, ``LoopTests`` and ``ReactorLoopTests`` (the
tests named above each test here). Times and counts are Twisted's, copied as written, in ms;
a small adapter maps them onto aiotimer.

How Twisted's semantics map onto aiotimer's:

* **First call.** ``LoopingCall.start(interval)`` (``now=True``, Twisted's default) calls at
  once, at 0, then on the grid ``interval, 2 * interval, ...``; aiotimer's first run is one
  interval after start. So with ``now=True`` Twisted's time ``t`` is aiotimer's time
  ``t + interval``: the adapter's ``start()`` lets one interval pass for the first call and
  subtracts it from every recorded time. ``start(interval, now=False)`` is aiotimer's own
  behaviour and needs no shift.
* **``Clock.advance(x)``** moves time in one step and only then runs the calls due, once:
  the loop held for ``x`` (``VirtualClock.spend``), then run until idle. ``Clock.pump`` is a
  list of such steps. A callback that advances the clock itself (``test_callbackTimeSkips``)
  is a sync callback calling ``virtual_clock.spend(seconds)``: it holds the loop.
* **Counts.** ``LoopingCall.withCount``'s count (the calls that should have been made) is
  ``tick.missed + 1``.
* **Deferreds.** A callable returning a Deferred is an ``async def`` callback; LoopingCall
  does not call again before the Deferred fires, and neither does aiotimer's default
  ``Overlap.SKIP``: points due meanwhile are skipped and counted in ``Timer.overlaps``.

Decided differences (explicit expectations below, with Twisted's result beside them):

* **An inline callback that overruns its interval** is followed at once by the grid point that
  came due meanwhile (with the points before it merged, ``tick.missed``); Twisted reschedules
  from the end of the call to the next *future* grid point (``test_callbackTimeSkips``).
* **Points skipped while a coroutine run is still running** are counted in
  ``Timer.overlaps`` (and ``Timer.missed`` for points a late dispatch merged), not in the next
  run's ``tick.missed``; Twisted's count covers them (``test_deferredWithCount``: 3, here 1).
* **A failing callback never stops its timer** (DESIGN 4): it is logged, counted and passed
  to ``on_error``; Twisted's loop stops and its Deferred errbacks (``testFailure``,
  ``testFailurePropagation``).

No aiotimer equivalent (not ported, on purpose):

* Interval 0 (``test_withCountIntervalZero``, ``test_withCountIntervalZeroDelay``,
  ``test_withCountIntervalZeroDelayThenNonZeroInterval``, ``testStopAtOnce``,
  ``ReactorLoopTests.testEveryIteration``): "call on every reactor iteration" is refused by
  aiotimer at registration (``test_zero_and_negative_intervals_are_refused``).
* Changing ``LoopingCall.interval`` while a call's Deferred is pending: aiotimer changes an
  interval with ``Timer.reschedule``, which starts a new grid (``test_reset``).
* ``test_reprFunction``, ``test_reprMethod``, ``test_deferredDeprecation``,
  ``test_defaultClock``: Twisted's API surface. ``ClockTests`` test Twisted's fake clock;
  aiotimer's ``VirtualClock`` has its own (``tests/test_virtual_clock.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest
from timeline import MS

import aiotimer
from aiotimer import TimerState
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

Call = tuple[int, int]
"""(time in Twisted's ms, withCount's count)"""


class TwistedLoop:
    """An aiotimer timer driven like a ``LoopingCall`` on Twisted's ``task.Clock``: records
    each call's time (in Twisted's numbers) and count."""

    def __init__(
        self,
        clock: VirtualClock,
        interval_ms: int,
        *,
        now: bool = True,
        durations_s: Sequence[float] = (),
        callback: Callable[..., object] | None = None,
        **options: object,
    ) -> None:
        self.clock = clock
        self.interval_ms = interval_ms
        self.shift_ms = interval_ms if now else 0
        self.durations_s = list(durations_s)
        self.calls: list[Call] = []
        self.scheduler = aiotimer.Scheduler(clock=clock)
        self.timer = self.scheduler.add_every_ms(
            interval_ms,
            self.record if callback is None else callback,
            **options,  # type: ignore[arg-type]
        )

    def now_ms(self) -> int:
        """The time in Twisted's numbers."""
        return self.clock.now_ns() // MS - self.shift_ms

    def record(self, tick: aiotimer.Tick) -> None:
        """The default callable: records the call and takes the next of ``durations_s``."""
        self.calls.append((self.now_ms(), tick.missed + 1))
        if self.durations_s:  # this call takes time: it holds the loop
            self.clock.spend(self.durations_s.pop(0))

    async def start(self) -> list[Call]:
        """``start(interval)``: with ``now=True``, the immediate call (one interval later)."""
        return await self.advance(self.shift_ms)

    async def advance(self, ms: float) -> list[Call]:
        """``Clock.advance(ms / 1000)``: the calls it made."""
        self.clock.spend(ms / 1000)
        await self.clock.advance(0)
        made, self.calls = self.calls, []
        return made

    async def pump(self, steps_ms: Sequence[float]) -> list[Call]:
        made: list[Call] = []
        for step in steps_ms:
            made += await self.advance(step)
        return made


def times(calls: list[Call]) -> list[int]:
    return [at for at, _ in calls]


# -- LoopTests --------------------------------------------------------------------------------


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_callbackTimeSkips
async def test_callbackTimeSkips(virtual_clock: VirtualClock) -> None:
    """Decided difference.

    Interval 500 ms; the first call takes 2 s, the second 1 s, the others nothing. Twisted
    skips the grid points that are "the present" when a call ends and calls at the next
    future one: ``[0], [], [2500], [], [4000]``. aiotimer runs the point that came due
    during the overrun at once, with the points before it merged::

        grid:      |0    |500  |1000 |1500 |2000 |2500 |3000 |3500 |4000
        Twisted:   |0=========================  2500=======    4000
        aiotimer:  |0=========================2000======3000 |3500 |4000
                                          missed=3    missed=1
    """
    loop = TwistedLoop(virtual_clock, 500, durations_s=[2, 1])
    async with loop.scheduler:
        steps = [await loop.start()]
        steps += [await loop.advance(step) for step in (0, 500, 0, 500)]
    assert steps == [[(0, 1), (2000, 4), (3000, 2)], [], [(3500, 1)], [], [(4000, 1)]]


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_reactorTimeSkips
async def test_reactorTimeSkips(virtual_clock: VirtualClock) -> None:
    """Time jumps 2 s, then 1 s; one call after each, none for a step of 0."""
    loop = TwistedLoop(virtual_clock, 500)
    async with loop.scheduler:
        steps = [await loop.start()]
        steps += [await loop.advance(step) for step in (2000, 1000, 0)]
    assert [times(step) for step in steps] == [[0], [2000], [3000], []]


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_reactorTimeCountSkips
async def test_reactorTimeCountSkips(virtual_clock: VirtualClock) -> None:
    """``withCount`` after a jump of three intervals (plus 10 ms) counts 3: the call made
    and the two skipped."""
    loop = TwistedLoop(virtual_clock, 500)
    async with loop.scheduler:
        steps = [await loop.start()]
        steps += [await loop.advance(step) for step in (510, 1510, 0)]
    assert steps == [[(0, 1)], [(510, 1)], [(2020, 3)], []]


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_countLengthyIntervalCounts
async def test_countLengthyIntervalCounts(virtual_clock: VirtualClock) -> None:
    """A call 1.75 intervals after the last one (late by less than one interval) still
    counts 1."""
    loop = TwistedLoop(virtual_clock, 500)
    async with loop.scheduler:
        steps = [await loop.start()]
        steps += [await loop.advance(step) for step in (510, 875, 125)]
    assert steps == [[(0, 1)], [(510, 1)], [(1385, 1)], [(1510, 1)]]


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_withCountFloatingPointBoundary
async def test_withCountFloatingPointBoundary(virtual_clock: VirtualClock) -> None:
    """Ten steps of one interval (``now=False``) give counts summing to 10, never 0.
    (aiotimer's intervals are whole ms,
    so Twisted's 0.1-is-not-1/10 epsilon cannot arise; the sum is still checked.)"""
    loop = TwistedLoop(virtual_clock, 100, now=False)
    async with loop.scheduler:
        calls = await loop.pump([100] * 10)
    counts = [count for _, count in calls]
    assert sum(counts) == 10
    assert 0 not in counts


# Ported from twisted src/twisted/test/test_task.py: LoopTests.testBadDelay,
# LoopTests.test_withCountIntervalZero
async def test_zero_and_negative_intervals_are_refused(virtual_clock: VirtualClock) -> None:
    """``start(-1)`` raises ValueError; Twisted's interval 0 (``test_withCountIntervalZero``
    ...) is refused too; aiotimer's errors name the timer and the value."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    with pytest.raises(ValueError, match=r"timer 'bad'.*got -1"):
        s.add_every_ms(-1, lambda: None, name="bad")
    with pytest.raises(ValueError, match=r"timer 'bad'.*got 0"):
        s.add_every_ms(0, lambda: None, name="bad")
    assert not s.timers


# Ported from twisted src/twisted/test/test_task.py: LoopTests.testBasicFunction
async def test_testBasicFunction(virtual_clock: VirtualClock) -> None:
    """Interval 100, pump 50, 100, 100: three calls, each with the loop's arguments (aiotimer's
    ``param``); after ``stop()`` nothing is planned any more."""
    params: list[object] = []

    def foo(tick: aiotimer.Tick) -> None:
        params.append(tick.param)
        loop.record(tick)

    loop = TwistedLoop(virtual_clock, 100, callback=foo, param=("a", "b", None, "d"))
    async with loop.scheduler:
        calls = [*await loop.start(), *await loop.pump([50, 100, 100])]
        loop.timer.cancel()  # lc.stop()
        await virtual_clock.advance(1)
        assert virtual_clock.sleepers == 0  # assertFalse(clock.calls)
    assert len(calls) == 3
    assert params == [("a", "b", None, "d")] * 3


# Ported from twisted src/twisted/test/test_task.py: LoopTests.testDelayedStart
async def test_testDelayedStart(virtual_clock: VirtualClock) -> None:
    """``now=False``, pump 50, 100, 100: two calls."""
    loop = TwistedLoop(virtual_clock, 100, now=False)
    async with loop.scheduler:
        calls = await loop.pump([50, 100, 100])
        loop.timer.cancel()
        await virtual_clock.advance(1)
        assert virtual_clock.sleepers == 0
    assert times(calls) == [150, 250]


# Ported from twisted src/twisted/test/test_task.py: LoopTests.testStoppingBeforeDelayedStart
async def test_testStoppingBeforeDelayedStart(virtual_clock: VirtualClock) -> None:
    """``start(10, now=False)`` then ``stop()``: never called, nothing planned."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    ran: list[None] = []
    timer = s.add_every_s(10, lambda: ran.append(None))
    async with s:
        timer.cancel()
        await virtual_clock.advance(30)
        assert virtual_clock.sleepers == 0
    assert ran == []
    assert timer.state is TimerState.CANCELLED


# Ported from twisted src/twisted/test/test_task.py: LoopTests.test_reset
async def test_reset(virtual_clock: VirtualClock) -> None:
    """``start(2, now=False)``, advance 1, ``reset()`` (aiotimer: ``reschedule(interval)``,
    a new grid from now): no call at 2, the first at 3."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    ran: list[int] = []
    timer = s.add_every_s(2, lambda: ran.append(virtual_clock.now_ns() // MS))
    async with s:
        await virtual_clock.advance(1)
        timer.reschedule(2)
        await virtual_clock.advance(1)
        assert ran == []
        await virtual_clock.advance(1)
    assert ran == [3000]


# -- ReactorLoopTests (real reactor in Twisted; virtual time here) -----------------------------


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.testStopAtOnceLater
async def test_testStopAtOnceLater(virtual_clock: VirtualClock) -> None:
    """A loop stopped from another callback before its first call is never called."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    ran: list[None] = []
    loop = s.add_every_s(1, lambda: ran.append(None))
    s.add_once_ms(1, loop.cancel)
    async with s:
        await virtual_clock.advance(3)
    assert ran == []


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.testWaitDeferred
async def test_testWaitDeferred(virtual_clock: VirtualClock) -> None:
    """Interval 200 ms, the call returns a Deferred that fires 1 s later and stops the loop; pump
    200, 800. The callable is not called again before it fires (aiotimer: ``Overlap.SKIP``), and
    nothing is left planned."""
    starts: list[int] = []

    async def foo() -> None:
        starts.append(loop.now_ms())
        await virtual_clock.sleep(1)
        loop.timer.cancel()

    loop = TwistedLoop(virtual_clock, 200, callback=foo)
    async with loop.scheduler:
        await loop.start()
        await loop.pump([200, 800])
        await virtual_clock.advance(1)
        assert virtual_clock.sleepers == 0
    assert starts == [0]
    assert loop.timer.state is TimerState.CANCELLED


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.test_deferredWithCount
async def test_deferredWithCount(virtual_clock: VirtualClock) -> None:
    """Decided difference. Interval 200 ms, ``now=False``; the first call's Deferred is pending
    until 600; pump 200, 400, then it fires, then pump 200. Twisted counts ``[1, 3]``: the
    second call counts the points (400, 600) skipped while the first was pending. aiotimer
    counts ``[1, 1]``: at 600 the late dispatch merged 600 into 400's (``Timer.missed == 1``)
    and that run was skipped as an overlap (``Timer.overlaps == 1``); ``runs + missed +
    overlaps`` is the 4 grid points."""
    counts: list[int] = []
    released = anyio.Event()
    s = aiotimer.Scheduler(clock=virtual_clock)

    async def count_tracker(tick: aiotimer.Tick) -> None:
        counts.append(tick.missed + 1)
        if len(counts) == 1:
            await released.wait()

    timer = s.add_every_ms(200, count_tracker)
    async with s:
        for step in (200, 400):
            virtual_clock.spend(step / 1000)
            await virtual_clock.advance(0)
        assert counts == [1]
        released.set()
        virtual_clock.spend(0.2)
        await virtual_clock.advance(0)
    assert counts == [1, 1]
    assert (timer.runs, timer.missed, timer.overlaps) == (2, 1, 1)


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.testFailure
async def test_testFailure(virtual_clock: VirtualClock) -> None:
    """Decided difference: Twisted's loop stops at the first exception and its Deferred
    errbacks with it; aiotimer's timer keeps its schedule, each failure counted and passed to
    ``on_error``."""
    errors: list[BaseException] = []
    s = aiotimer.Scheduler(clock=virtual_clock)

    def foo() -> None:
        raise ValueError("bar")

    timer = s.add_every_ms(100, foo, on_error=lambda _, exc: errors.append(exc))
    async with s:
        await virtual_clock.advance(0.3)
        assert timer.state is TimerState.ACTIVE
        assert timer.next_deadline_ns == 400 * MS
    assert [str(e) for e in errors] == ["bar"] * 3
    assert timer.errors == 3


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.testFailAndStop
async def test_testFailAndStop(virtual_clock: VirtualClock) -> None:
    """A call that stops its loop, then raises: the error is reported once and there are
    no more calls."""
    errors: list[BaseException] = []
    s = aiotimer.Scheduler(clock=virtual_clock)
    calls: list[int] = []

    def foo() -> None:
        calls.append(virtual_clock.now_ns() // MS)
        timer.cancel()
        raise ValueError("bar")

    timer = s.add_every_ms(100, foo, on_error=lambda _, exc: errors.append(exc))
    async with s:
        await virtual_clock.advance(0.5)
    assert calls == [100]
    assert [str(e) for e in errors] == ["bar"]
    assert timer.state is TimerState.CANCELLED


# Ported from twisted src/twisted/test/test_task.py: ReactorLoopTests.testFailurePropagation
async def test_testFailurePropagation(virtual_clock: VirtualClock) -> None:
    """Decided difference. Interval 1 s; the call's Deferred errbacks 0.3 s later. Twisted's loop
    fails with it and stops; aiotimer passes the coroutine's error to ``on_error`` and the timer
    keeps its schedule."""
    errors: list[tuple[int, BaseException]] = []

    async def foo() -> None:
        await virtual_clock.sleep(0.3)
        raise ValueError("late failure")

    def on_error(_: aiotimer.Timer, exc: BaseException) -> None:
        errors.append((loop.now_ms(), exc))

    loop = TwistedLoop(virtual_clock, 1000, callback=foo, on_error=on_error)
    async with loop.scheduler:
        await loop.start()
        await virtual_clock.advance(0.3)
        assert [(at, str(exc)) for at, exc in errors] == [(300, "late failure")]
        assert loop.timer.state is TimerState.ACTIVE
        await virtual_clock.advance(1)
    assert [at for at, _ in errors] == [300, 1300]
