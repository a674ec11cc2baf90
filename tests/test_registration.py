"""Bad input is refused at registration, with an error naming the timer and the value."""

from __future__ import annotations

import math
from typing import Any

import pytest

import aiotimer
from aiotimer import Missed, Overlap


def noop() -> None:
    pass


@pytest.fixture
def s() -> aiotimer.Scheduler:
    return aiotimer.Scheduler()


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "interval_ms must be finite and > 0, got 0"),
        (-20, ValueError, "interval_ms must be finite and > 0, got -20"),
        (math.nan, ValueError, "interval_ms must be finite and > 0, got nan"),
        (math.inf, ValueError, "interval_ms must be finite and > 0, got inf"),
        (True, TypeError, "interval_ms must be an int or float, got bool True"),
        ("20", TypeError, "interval_ms must be an int or float, got str '20'"),
        (None, TypeError, "interval_ms must be an int or float, got NoneType None"),
        (2.5, ValueError, "interval_ms must be a whole number of ms, got 2.5"),
    ],
)
def test_bad_ms_intervals(
    s: aiotimer.Scheduler, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^timer 'rtp': {message}"):
        s.add_every_ms(value, noop, name="rtp")
    assert not s.timers


def test_fractional_seconds_suggest_every_ms(s: aiotimer.Scheduler) -> None:
    with pytest.raises(
        ValueError, match=r"interval_s must be a whole number of s, got 1.5; use every_ms\(1500\)"
    ):
        s.every_s(1.5)(noop)


def test_whole_floats_are_accepted(s: aiotimer.Scheduler) -> None:
    assert s.add_every_ms(20.0, noop).interval == 20


def test_unnamed_bad_timer_is_named_after_its_callback(s: aiotimer.Scheduler) -> None:
    with pytest.raises(ValueError, match=r"^timer 'test_registration.noop': delay_s must be"):
        s.add_once_s(0, noop)


@pytest.mark.parametrize("callback", [None, 42, "noop"])
def test_non_callables_are_refused(s: aiotimer.Scheduler, callback: Any) -> None:
    with pytest.raises(TypeError, match="timer 'x': callback must be callable"):
        s.add_every_s(1, callback, name="x")


def test_callbacks_with_more_than_one_argument_are_refused(s: aiotimer.Scheduler) -> None:
    def two(a: object, b: object) -> None:
        pass

    with pytest.raises(TypeError, match=r"timer 'two': callback .*requires 2 arguments"):
        s.add_every_s(1, two, name="two")


def test_required_keyword_only_arguments_are_refused(s: aiotimer.Scheduler) -> None:
    def kw(*, db: object) -> None:
        pass

    with pytest.raises(TypeError, match="required keyword-only parameter 'db'"):
        s.add_every_s(1, kw)


def test_duplicate_names_are_refused(s: aiotimer.Scheduler) -> None:
    s.add_every_s(1, noop, name="clean")
    with pytest.raises(
        ValueError, match="timer 'clean': a timer of that name is already registered"
    ):
        s.add_every_ms(5, noop, name="clean")


def test_decorating_an_already_registered_function_is_refused(s: aiotimer.Scheduler) -> None:
    @s.every_s(1)
    def job() -> None:
        pass

    with pytest.raises(ValueError, match=r"function .*job is already registered .* as timer"):
        s.every_ms(10, name="other")(job)


def test_the_same_callback_may_be_added_many_times(s: aiotimer.Scheduler) -> None:
    names = {s.add_every_s(1, noop).name for _ in range(3)}
    assert names == {
        "test_registration.noop",
        "test_registration.noop#2",
        "test_registration.noop#3",
    }


def test_decorator_without_parentheses_is_a_clear_error(s: aiotimer.Scheduler) -> None:
    with pytest.raises(TypeError, match=r"write @every_ms\(20\), not @every_ms"):
        s.every_ms(noop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"missed": "skip"}, TypeError, "missed must be a Missed, got 'skip'"),
        ({"max_catchup": 0}, ValueError, "max_catchup must be >= 1, got 0"),
        ({"overlap": 2}, TypeError, "overlap must be an Overlap, got 2"),
        (
            {"timeout_s": 0},
            ValueError,
            "timeout_s must be a finite number > 0 and <= 3153600000, got 0",
        ),
        (
            {"timeout_s": math.inf},
            ValueError,
            "timeout_s must be a finite number > 0 and <= 3153600000, got inf",
        ),
        ({"thread": 1}, TypeError, "thread must be a bool, got 1"),
        ({"jitter_ms": -1}, ValueError, "jitter_ms must be >= 0, got -1"),
        (
            {"jitter_ms": 1000},
            ValueError,
            r"jitter_ms must be below the interval \(1000 ms\), got 1000",
        ),
        ({"on_error": "log"}, TypeError, "on_error must be callable, got 'log'"),
        ({"max_failures": 0}, ValueError, "max_failures must be >= 1, got 0"),
        ({"bogus": 1}, TypeError, "unexpected keyword argument 'bogus'"),
        ({"policy": "strict"}, TypeError, "policy must be a Policy, got 'strict'"),
    ],
)
def test_bad_policy_options(
    s: aiotimer.Scheduler, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^timer 'job': .*{message}"):
        s.add_every_s(1, noop, name="job", **options)


def test_overlap_concurrent_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match=r"Overlap.CONCURRENT\(limit\) needs an int >= 1, got 0"):
        Overlap.CONCURRENT(0)


def test_a_shared_policy_object(s: aiotimer.Scheduler) -> None:
    careful = aiotimer.Policy(missed=Missed.DELAY, timeout_s=2.0)
    t = s.add_every_s(5, noop, policy=careful, max_failures=3)
    assert t.spec.policy.missed is Missed.DELAY
    assert t.spec.policy.max_failures == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_warn_s": 0}, "block_warn_s must be a number > 0 or None, got 0"),
        ({"thread_limit": 0}, "thread_limit must be an int >= 1, got 0"),
        ({"grid_origin_ns": 1.5}, "grid_origin_ns must be an int, got 1.5"),
        ({"clock": object()}, "clock must implement Clock"),
    ],
)
def test_bad_scheduler_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=f"scheduler 'aiotimer': {message}"):
        aiotimer.Scheduler(**kwargs)


def test_async_on_error_hook_is_refused() -> None:
    async def hook(timer: aiotimer.Timer, exc: BaseException) -> None:
        pass

    with pytest.raises(TypeError, match="on_error must be a sync callable"):
        aiotimer.Scheduler(on_error=hook)
