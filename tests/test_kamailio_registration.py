"""aiotimer.kamailio: register_timer, register_ms_timer / register_utimer.

Timeline of the basic case (interval 2 s, registered before the start at t=0)::

    t (s):     0    1    2    3    4    5    6    7
    runs:                f(2)      f(4)      f(6)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import aiotimer
from aiotimer import kamailio
from aiotimer.kamailio import register_ms_timer, register_timer, register_utimer
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def scheduler(virtual_clock: VirtualClock) -> Iterator[aiotimer.Scheduler]:
    s = aiotimer.Scheduler(clock=virtual_clock)
    with kamailio.use_scheduler(s):
        yield s


class Calls:
    """A Kamailio-style callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Any]] = []

    def __call__(self, ticks: int, param: Any) -> None:
        self.calls.append((ticks, param))

    @property
    def ticks(self) -> list[int]:
        return [t for t, _ in self.calls]


async def test_register_timer_calls_f_with_seconds_and_param_one_interval_apart(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    f = Calls()
    param = object()
    register_timer(f, param, 2)
    async with scheduler:
        await virtual_clock.advance(1.999)
        assert f.calls == []  # the first run is one interval after the registration
        await virtual_clock.advance(5.001)
    assert f.calls == [(2, param), (4, param), (6, param)]


async def test_a_timer_registered_while_running_starts_one_interval_later_on_the_second_grid(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    f = Calls()
    async with scheduler:
        await virtual_clock.advance(0.5)
        register_timer(f, None, 2)
        await virtual_clock.advance(2.4)  # t = 2.9: not yet (never before the interval)
        assert f.ticks == []
        await virtual_clock.advance(0.1)  # t = 3.0: the first whole second >= 0.5 + 2
        assert f.ticks == [3]
        await virtual_clock.advance(4)
    assert f.ticks == [3, 5, 7]


async def test_ticks_are_those_of_the_grid_point_even_when_the_run_is_late(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    seen: list[tuple[int, int]] = []

    def clean(ticks: int, param: Any) -> None:
        seen.append((ticks, kamailio.get_ticks()))

    def stall(ticks: int, param: Any) -> None:
        if ticks == 2500:
            virtual_clock.spend(2.0)  # a blocking call holds the loop from 2.5 s to 4.5 s

    register_timer(clean, None, 1)
    register_ms_timer(stall, None, 2500)
    async with scheduler:
        await virtual_clock.advance(7.5)
    # The run due at 3 s ran at 4.5 s (the 4 s point merged into it) with ticks == 3.
    assert seen[:3] == [(1, 1), (2, 2), (3, 4)]
    assert [t for t, _ in seen[3:]] == [5, 6, 7]


async def test_register_ms_timer_calls_f_with_raw_ticks_in_ms(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    f = Calls()
    register_ms_timer(f, "p", 20)
    async with scheduler:
        await virtual_clock.advance_ms(65)
    assert f.calls == [(20, "p"), (40, "p"), (60, "p")]


def test_register_utimer_is_register_ms_timer() -> None:
    assert register_utimer is register_ms_timer


async def test_a_coroutine_function_is_awaited(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    seen: list[int] = []

    async def f(ticks: int, param: list[int]) -> None:
        await virtual_clock.sleep(0.1)
        param.append(ticks)

    register_timer(f, seen, 1)
    async with scheduler:
        await virtual_clock.advance(3.5)
    assert seen == [1, 2, 3]


async def test_thread_true_runs_f_in_a_worker_thread(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    threads: list[int] = []
    register_timer(lambda ticks, p: threads.append(threading.get_ident()), None, 1, thread=True)
    async with scheduler:
        await virtual_clock.advance(2)
    assert len(threads) == 2
    assert threading.get_ident() not in threads


def test_the_id_counts_up_from_0_and_carries_the_timer_handle(
    scheduler: aiotimer.Scheduler,
) -> None:
    f = Calls()
    first = register_timer(f, None, 1)
    second = register_ms_timer(f, None, 5)
    assert isinstance(first, int)
    assert first >= 0
    assert second == first + 1
    assert first.timer is scheduler.timers[first.timer.name]
    assert second.timer.spec.describe() == "every 5 ms"


def test_the_timer_is_named_after_f_and_numbered_when_f_comes_again(
    scheduler: aiotimer.Scheduler,
) -> None:
    def m_clean_silo(ticks: int, param: Any) -> None: ...

    a = register_timer(m_clean_silo, 1, 60)
    b = register_timer(m_clean_silo, 2, 60)
    c = register_timer(m_clean_silo, 3, 60, name="msilo-clean")
    base = f"{__name__}.{m_clean_silo.__qualname__}"
    assert (a.timer.name, b.timer.name, c.timer.name) == (base, f"{base}#2", "msilo-clean")


async def test_cancelling_through_the_handle_stops_the_timer(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    f = Calls()
    tid = register_timer(f, None, 1)
    async with scheduler:
        await virtual_clock.advance(2)
        assert tid.timer.cancel()
        await virtual_clock.advance(3)
    assert f.ticks == [1, 2]


async def test_a_failing_f_is_logged_and_keeps_its_schedule_and_disturbs_no_other_timer(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ticks: int, param: Any) -> None:
        raise ZeroDivisionError(f"ticks % 0 at {ticks}")

    healthy = Calls()
    tid = register_timer(broken, None, 1, name="broken")
    register_timer(healthy, None, 1)
    with caplog.at_level(logging.ERROR, logger="aiotimer"):
        async with scheduler:
            await virtual_clock.advance(3)
    assert healthy.ticks == [1, 2, 3]
    assert tid.timer.runs == 3
    assert tid.timer.errors == 3
    assert "timer 'broken' failed: ZeroDivisionError: ticks % 0 at 1" in caplog.text


@pytest.mark.parametrize(
    ("interval", "error", "match"),
    [
        (0, ValueError, "interval_s must be finite and > 0, got 0"),
        (-60, ValueError, "interval_s must be finite and > 0, got -60"),
        (1.5, ValueError, "interval_s must be a whole number of s, got 1.5"),
        ("60", TypeError, "interval_s must be an int or float, got str '60'"),
    ],
)
def test_a_bad_interval_raises_at_once_naming_the_timer_and_the_value(
    scheduler: aiotimer.Scheduler, interval: object, error: type[Exception], match: str
) -> None:
    # Kamailio returns -1 (or accepts 0 and divides by it later); we raise when registering.
    with pytest.raises(error, match=f"timer 'silo': {match}"):
        register_timer(Calls(), None, interval, name="silo")  # type: ignore[arg-type]
    assert scheduler.timers == {}


def test_a_callback_that_is_not_callable_raises_type_error(scheduler: aiotimer.Scheduler) -> None:
    with pytest.raises(TypeError, match="register_timer: f must be callable, got NoneType None"):
        register_timer(None, None, 1)  # type: ignore[arg-type]


def test_policy_keywords_reach_the_core(scheduler: aiotimer.Scheduler) -> None:
    tid = register_ms_timer(Calls(), None, 100, timeout_s=0.5, missed=aiotimer.Missed.DELAY)
    assert tid.timer.spec.policy.timeout_s == 0.5
    assert tid.timer.spec.policy.missed is aiotimer.Missed.DELAY


def _one_arg(t: Any) -> None:
    pass


def _three_args(a: Any, b: Any, c: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("register", "wrong"),
    [
        (lambda f: kamailio.register_timer(f, None, 1), _one_arg),
        (lambda f: kamailio.register_ms_timer(f, None, 10), _one_arg),
        (lambda f: kamailio.register_utimer(f, None, 10), _three_args),
        (lambda f: kamailio.timer_init(kamailio.timer_alloc(), f, None), _one_arg),
        (lambda f: kamailio.register_timer_process(f, None, 1), _one_arg),
        (lambda f: kamailio.fork_basic_timer(0, "_one_arg", 0, f, None, 1), _one_arg),
        (lambda f: kamailio.fork_dummy_timer(0, "_one_arg", 0, f, None, 1), _three_args),
        (lambda f: kamailio.fork_basic_utimer(0, "_one_arg", 0, f, None, 1000), _one_arg),
        (lambda f: kamailio.fork_sync_timer(0, "_one_arg", 0, f, None, 1), _one_arg),
        (lambda f: kamailio.fork_sync_utimer(0, "_one_arg", 0, f, None, 1000), _one_arg),
        (lambda f: kamailio.fork_basic_timer_w(0, "_one_arg", 0, f, 0, None, 1), _one_arg),
        (lambda f: kamailio.fork_basic_utimer_w(0, "_one_arg", 0, f, 0, None, 1000), _one_arg),
    ],
)
def test_a_callback_of_the_wrong_arity_is_refused_at_registration_naming_the_timer(
    scheduler: aiotimer.Scheduler, register: Any, wrong: Any
) -> None:
    kamailio.register_basic_timers(1)
    kamailio.register_sync_timers(1)
    with pytest.raises(TypeError, match=r"timer '[\w.]*_(one_arg|three_args)': f must take \d"):
        register(wrong)
    assert scheduler.timers == {}


def test_the_arity_error_says_what_a_run_passes(scheduler: aiotimer.Scheduler) -> None:
    with pytest.raises(TypeError) as caught:
        register_timer(lambda t: None, None, 1)
    message = str(caught.value)
    assert message.startswith("register_timer: timer 'test_kamailio_registration.")
    assert "f must take 2 positional arguments (ticks, param), got f(t)" in message


def test_callbacks_with_defaults_or_star_args_are_accepted(scheduler: aiotimer.Scheduler) -> None:
    register_timer(lambda ticks, param=None, extra=1: None, None, 1)
    register_timer(lambda *args: None, None, 1)
    register_ms_timer(print, None, 10)  # a builtin: taken as it is when unreadable
    assert len(scheduler.timers) == 3
