"""aiotimer.kamailio: the timer_ln API (timer_init, timer_add, timer_del, timer_reinit).

The handler ``f(ticks_raw, tl, data)`` returns what comes next: 0 = one-shot, PERIODIC = again
after the same interval, n = again after n ticks (the new interval). Ticks are 1 ms.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import aiotimer
from aiotimer import kamailio
from aiotimer.kamailio import (
    PERIODIC,
    TimerLn,
    timer_add,
    timer_alloc,
    timer_allow_del,
    timer_del,
    timer_init,
    timer_reinit,
)
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def scheduler(virtual_clock: VirtualClock) -> Iterator[aiotimer.Scheduler]:
    s = aiotimer.Scheduler(clock=virtual_clock)
    with kamailio.use_scheduler(s):
        yield s


def handler(returns: Callable[[int], object]) -> tuple[list[int], Callable[..., object]]:
    """A handler that records the ticks it ran at and returns ``returns(ticks)``."""
    ran: list[int] = []

    def f(ticks: int, tl: TimerLn, data: Any) -> object:
        ran.append(ticks)
        return returns(ticks)

    return ran, f


async def test_a_handler_returning_0_is_a_one_shot(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None, 0)
    assert timer_add(tl, 100) == 0
    assert tl.active
    async with scheduler:
        await virtual_clock.advance_ms(1000)
    assert ran == [100]
    assert not tl.active


async def test_the_handler_gets_raw_ticks_the_timer_ln_and_its_data(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    seen: list[tuple[int, TimerLn, object]] = []
    data = object()

    def f(ticks: int, tl: TimerLn, data: object) -> int:
        seen.append((ticks, tl, data))
        return 0

    tl = TimerLn()
    timer_init(tl, f, data)
    async with scheduler:
        await virtual_clock.advance_ms(250)
        timer_add(tl, 30)
        await virtual_clock.advance_ms(100)
    assert seen == [(280, tl, data)]


async def test_periodic_runs_again_after_the_same_interval(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran, f = handler(lambda t: PERIODIC)
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(350)
    assert ran == [100, 200, 300]
    assert tl.active


async def test_minus_one_is_taken_as_periodic(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran, f = handler(lambda t: -1)  # (ticks_t)-1, as ported C code may write it
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(250)
    assert ran == [100, 200]


async def test_another_value_is_the_next_interval_and_becomes_the_interval(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    #   t (ms):  100      150  200  250
    #   returns: 50       P    P    0
    answers = iter([50, PERIODIC, PERIODIC, 0])
    ran, f = handler(lambda t: next(answers))
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(1000)
    assert ran == [100, 150, 200, 250]


async def test_delta_0_runs_at_the_next_tick(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None)
    async with scheduler:
        await virtual_clock.advance_ms(10)
        timer_add(tl, 0)
        await virtual_clock.advance_ms(5)
    assert ran == [11]


async def test_timer_add_on_an_active_timer_fails_with_minus_1(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    results: list[int] = []

    def f(ticks: int, tl: TimerLn, data: Any) -> int:
        results.append(timer_add(tl, 10))  # in its own handler it is still active
        return 0

    tl = timer_alloc()
    timer_init(tl, f, None)
    assert timer_add(tl, 100) == 0
    assert timer_add(tl, 5) == -1  # queued: refused, the first add stands
    async with scheduler:
        await virtual_clock.advance_ms(500)
    assert results == [-1]
    assert tl.timer is not None
    assert tl.timer.runs == 1


async def test_an_expired_one_shot_can_be_added_again_without_timer_reinit(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    # Kamailio keeps an expired one-shot "active" until timer_reinit(); we do not.
    ran, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(150)
        assert timer_add(tl, 100) == 0
        await virtual_clock.advance_ms(150)
    assert ran == [100, 250]


async def test_timer_del_stops_an_active_timer_and_returns_0(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran, f = handler(lambda t: PERIODIC)
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(250)
        assert timer_del(tl) == 0
        assert not tl.active
        await virtual_clock.advance_ms(500)
    assert ran == [100, 200]


def test_timer_del_of_an_inactive_timer_returns_minus_1(scheduler: aiotimer.Scheduler) -> None:
    tl = timer_alloc()
    assert timer_del(tl) == -1  # never initialised nor added
    timer_init(tl, lambda *a: 0, None)
    assert timer_del(tl) == -1  # never added
    timer_add(tl, 10)
    assert timer_del(tl) == 0
    assert timer_del(tl) == -1  # already deleted


async def test_timer_del_from_its_own_handler_works_and_the_return_value_is_ignored(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    # Kamailio returns -2 here, ignores the delete, and re-adds the timer for PERIODIC.
    results: list[int] = []

    def f(ticks: int, tl: TimerLn, data: Any) -> int:
        results.append(timer_del(tl))
        return PERIODIC

    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(1000)
    assert results == [0]
    assert not tl.active


async def test_timer_allow_del_is_accepted_and_changes_nothing(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    results: list[int] = []

    def f(ticks: int, tl: TimerLn, data: Any) -> int:
        timer_allow_del()
        results.append(timer_del(tl))
        return PERIODIC

    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    timer_allow_del()  # outside a handler too (Kamailio logs a bug)
    async with scheduler:
        await virtual_clock.advance_ms(1000)
    assert results == [0]


async def test_timer_reinit_in_the_handler_lets_it_add_itself_again_with_a_new_delta(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran: list[int] = []

    def f(ticks: int, tl: TimerLn, data: Any) -> int:
        ran.append(ticks)
        if len(ran) < 3:
            timer_reinit(tl)
            assert timer_add(tl, 30) == 0
        return PERIODIC  # ignored after a re-add: the re-added timer is the one that stays

    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    first = tl.timer
    async with scheduler:
        await virtual_clock.advance_ms(200)
        assert scheduler.stats(timers=False).queued == 1
    # Runs 1 and 2 re-add with delta 30; run 3 (no re-add) returns PERIODIC: every 30 ms.
    assert ran == [100, 130, 160, 190]
    assert tl.active
    assert tl.timer is first  # one core timer for the timer_ln's life, re-armed


def test_timer_reinit_of_a_queued_timer_raises(scheduler: aiotimer.Scheduler) -> None:
    tl = timer_alloc()
    timer_reinit(tl)  # inactive: nothing to do
    timer_init(tl, lambda *a: 0, None)
    timer_add(tl, 10)
    with pytest.raises(RuntimeError, match=r"timer_reinit: .* is queued .* timer_del it first"):
        timer_reinit(tl)


def test_timer_init_of_an_active_timer_raises(scheduler: aiotimer.Scheduler) -> None:
    tl = timer_alloc()
    timer_init(tl, lambda *a: 0, None)
    timer_add(tl, 10)
    with pytest.raises(RuntimeError, match=r"timer_init: .* is active .* timer_del it first"):
        timer_init(tl, lambda *a: 0, None)


def test_timer_add_before_timer_init_raises(scheduler: aiotimer.Scheduler) -> None:
    # Kamailio would call a NULL handler (and stop its whole slow timer: #1897, #2120).
    with pytest.raises(RuntimeError, match=r"timer_add: .* has no handler: call timer_init"):
        timer_add(timer_alloc(), 10)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda tl: timer_add(tl, -1), ValueError, "timer_add: delta takes ticks >= 0, got -1"),
        (lambda tl: timer_add(tl, 1.5), TypeError, "timer_add: delta .* got float 1.5"),  # type: ignore[arg-type]
        (lambda tl: timer_add("tl", 1), TypeError, "timer_add: tl must be a TimerLn, got str"),  # type: ignore[arg-type]
        (lambda tl: timer_del(None), TypeError, "timer_del: tl must be a TimerLn"),  # type: ignore[arg-type]
        (lambda tl: timer_init(tl, 42, None), TypeError, "timer_init: f must be callable, got int"),  # type: ignore[arg-type]
        (lambda tl: timer_init(tl, print, None, 4), ValueError, "0 or F_TIMER_FAST, got 0x4"),
        (lambda tl: timer_init(tl, print, None, "1"), TypeError, "flags must be an int, got '1'"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_naming_the_function_and_the_value(
    scheduler: aiotimer.Scheduler, call: Callable[[TimerLn], object], error: type, match: str
) -> None:
    tl = timer_alloc()
    timer_init(tl, lambda *a: 0, None)
    with pytest.raises(error, match=match):
        call(tl)


def test_f_timer_fast_is_accepted(scheduler: aiotimer.Scheduler) -> None:
    tl = timer_alloc()
    timer_init(tl, lambda *a: 0, None, kamailio.F_TIMER_FAST)
    assert tl.flags == kamailio.F_TIMER_FAST


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "returned None; return 0 \\(one-shot\\), PERIODIC"),
        (-5, "returned -5"),
        ("50", "returned '50'"),
    ],
)
async def test_a_bad_return_value_is_the_runs_error_and_the_interval_is_kept(
    virtual_clock: VirtualClock,
    scheduler: aiotimer.Scheduler,
    caplog: pytest.LogCaptureFixture,
    value: object,
    match: str,
) -> None:
    ran, f = handler(lambda t: value)
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100, name="forgetful")
    with caplog.at_level(logging.ERROR, logger="aiotimer"):
        async with scheduler:
            await virtual_clock.advance_ms(250)
    assert ran == [100, 200]
    assert tl.timer is not None
    assert tl.timer.errors == 2
    assert caplog.records[0].getMessage().startswith("timer 'forgetful' failed")
    assert re.search(f"timer 'forgetful': timer_ln handler {match}", caplog.text)


async def test_a_raising_handler_is_isolated_and_keeps_its_interval(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    ran, f = handler(lambda t: 1 // 0)
    other, g = handler(lambda t: PERIODIC)
    a, b = timer_alloc(), timer_alloc()
    timer_init(a, f, None)
    timer_init(b, g, None)
    timer_add(a, 100)
    timer_add(b, 100)
    with caplog.at_level(logging.ERROR, logger="aiotimer"):
        async with scheduler:
            await virtual_clock.advance_ms(250)
    assert ran == [100, 200]
    assert other == [100, 200]
    assert "ZeroDivisionError" in caplog.text


async def test_an_async_handler_is_awaited_and_its_return_value_used(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    ran: list[int] = []

    async def f(ticks: int, tl: TimerLn, data: Any) -> int:
        await virtual_clock.sleep(0.01)
        ran.append(ticks)
        return 40 if len(ran) < 3 else 0

    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(1000)
    assert ran == [100, 140, 180]
    assert not tl.active


async def test_timer_del_during_an_async_handler_lets_the_run_finish_and_ignores_its_value(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    finished: list[int] = []

    async def f(ticks: int, tl: TimerLn, data: Any) -> int:
        await virtual_clock.sleep(0.05)
        finished.append(ticks)
        return PERIODIC

    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 100)
    async with scheduler:
        await virtual_clock.advance_ms(120)  # the first run is in progress
        assert timer_del(tl) == 0  # does not wait for it
        await virtual_clock.advance_ms(1000)
    assert finished == [100]
    assert not tl.active


def test_the_core_timer_is_named_after_the_handler(scheduler: aiotimer.Scheduler) -> None:
    def retransmit(ticks: int, tl: TimerLn, data: Any) -> int:
        return 0

    a, b, named = timer_alloc(), timer_alloc(), timer_alloc()
    for tl in (a, b, named):
        timer_init(tl, retransmit, None)
    timer_add(a, 10)
    timer_add(b, 10)
    timer_add(named, 10, name="t1-retransmit")
    assert a.timer is not None
    assert b.timer is not None
    # Anonymous timer_ln timers are per-transaction: named after the handler, not registered.
    assert a.timer.name == b.timer.name == f"{__name__}.{retransmit.__qualname__}"
    assert list(scheduler.timers) == ["t1-retransmit"]
    assert scheduler.get_timer("t1-retransmit") is named.timer


async def test_timer_del_then_timer_add_re_arms_the_same_core_timer(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    """A SIP transaction's timer: deleted and re-added before it fires, over and over: one
    core timer, re-armed, nothing left behind."""
    ran, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None)
    async with scheduler:
        timer_add(tl, 100)
        core = tl.timer
        for _ in range(50):
            await virtual_clock.advance_ms(10)
            assert timer_del(tl) == 0
            assert not tl.active
            assert timer_add(tl, 100) == 0
            assert tl.timer is core
        assert scheduler.stats(timers=False).queued == 1
        await virtual_clock.advance_ms(100)
        assert ran == [600]  # 500 + 100: the last re-arm's delay
        assert not tl.active  # an expired one-shot: addable again, still the same timer
        assert timer_add(tl, 5) == 0
        assert tl.timer is core
        await virtual_clock.advance_ms(5)
    assert ran == [600, 605]


def test_a_timer_add_with_another_name_makes_a_core_timer_of_that_name(
    scheduler: aiotimer.Scheduler,
) -> None:
    _, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None)
    timer_add(tl, 10)
    anonymous = tl.timer
    assert anonymous is not None
    timer_del(tl)
    timer_add(tl, 10, name="t1-retransmit")
    named = tl.timer
    assert named is not anonymous
    assert named is not None
    assert named.name == "t1-retransmit"
    assert scheduler.get_timer("t1-retransmit") is named
    assert anonymous.state is aiotimer.TimerState.CANCELLED
    timer_del(tl)
    timer_add(tl, 20, name="t1-retransmit")  # the same name again: the same core, re-armed
    assert tl.timer is named
    timer_del(tl)
    timer_add(tl, 20)  # anonymous again: a timer of its own
    assert tl.timer is not named
    assert named.state is aiotimer.TimerState.CANCELLED
    assert list(scheduler.timers) == []


@pytest.mark.parametrize("delta", [10**30, 2**63])
async def test_a_delta_over_100_years_is_refused_on_a_re_add_and_the_timer_ln_kept(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler, delta: int
) -> None:
    ran, f = handler(lambda t: 0)
    tl = timer_alloc()
    timer_init(tl, f, None)
    async with scheduler:
        timer_add(tl, 10)
        core = tl.timer
        assert core is not None
        timer_del(tl)
        with pytest.raises(
            ValueError,
            match=rf"timer '.*handler.*': interval_ms must be at most .*100 years.*{delta}",
        ):
            timer_add(tl, delta)
        assert not tl.active
        assert core.state is aiotimer.TimerState.PAUSED  # kept, as timer_del left it
        assert timer_add(tl, 10) == 0  # and re-armed by the next good delta
        assert tl.timer is core
        await virtual_clock.advance_ms(10)
    assert ran == [10]


async def test_a_timer_ln_per_transaction_reads_the_handler_once_and_keeps_nothing_after_it(
    virtual_clock: VirtualClock,
    scheduler: aiotimer.Scheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ported ``tm`` inits a new timer_ln per transaction with one handler: the handler's
    signature is read once (not per transaction: it costs tens of µs), and a transaction's
    timer_ln and data are freed once its timer is over and the module drops them (no cache of
    aiotimer's keeps them)."""
    import gc
    import inspect
    import weakref

    reads: list[object] = []
    real_signature = inspect.signature

    def counting_signature(obj: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        reads.append(obj)
        return real_signature(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)

    class Transaction:
        pass

    def retransmit(ticks: int, tl: TimerLn, data: Transaction) -> int:
        return 0

    freed: list[weakref.ref[Transaction]] = []
    async with scheduler:
        for i in range(300):
            transaction = Transaction()
            freed.append(weakref.ref(transaction))
            tl = timer_alloc()
            timer_init(tl, retransmit, transaction)
            assert timer_add(tl, 10 + i % 7) == 0
            if i % 2:  # half are deleted before they fire, the other half expire
                assert timer_del(tl) == 0
        del tl, transaction
        await virtual_clock.advance_ms(20)
        assert scheduler.stats(timers=False).queued == 0
    assert [r for r in reads if r is retransmit] in ([], [retransmit])
    assert all(not isinstance(r, kamailio.TimerLn) for r in reads)
    gc.collect()
    assert [ref for ref in freed if ref() is not None] == []
