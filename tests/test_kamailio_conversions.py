"""aiotimer.kamailio: the ticks helpers, the constants and get_ticks / get_ticks_raw.

Kamailio's raw tick is 62.5 ms (TIMER_TICKS_HZ 16); aiotimer's is 1 ms. The helpers keep
Kamailio's names and its rounding: ms and s to ticks round up (a timer never fires early),
ticks to ms and s round down (integer division).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiotimer
from aiotimer import kamailio
from aiotimer.kamailio import MS_TO_TICKS, S_TO_TICKS, TICKS_TO_MS, TICKS_TO_S
from aiotimer.testing import VirtualClock


@pytest.fixture
def scheduler(virtual_clock: VirtualClock) -> Iterator[aiotimer.Scheduler]:
    s = aiotimer.Scheduler(clock=virtual_clock)
    with kamailio.use_scheduler(s):
        yield s


def test_constants_keep_kamailio_names_over_a_1ms_tick() -> None:
    assert kamailio.TIMER_TICKS_HZ == 1000
    assert kamailio.PERIODIC == 0xFFFF_FFFF  # (ticks_t)-1 of a 32-bit ticks_t
    assert kamailio.F_TIMER_FAST == 1
    assert (kamailio.PROC_MAIN, kamailio.PROC_TIMER) == (0, -1)


@pytest.mark.parametrize(
    ("ms", "ticks"), [(0, 0), (1, 1), (20, 20), (0.5, 1), (1.001, 2), (2.0, 2), (0.1, 1)]
)
def test_ms_to_ticks_rounds_up(ms: float, ticks: int) -> None:
    assert MS_TO_TICKS(ms) == ticks


@pytest.mark.parametrize(
    ("s", "ticks"), [(0, 0), (1, 1000), (60, 60_000), (0.1, 100), (0.0005, 1), (1.0001, 1001)]
)
def test_s_to_ticks_is_exact_for_what_was_written_and_rounds_a_fraction_up(
    s: float, ticks: int
) -> None:
    # 0.1 is taken as written (1/10), not as the binary float just above it: 100, not 101.
    assert S_TO_TICKS(s) == ticks


@pytest.mark.parametrize(
    ("ticks", "ms", "s"), [(0, 0, 0), (999, 999, 0), (1000, 1000, 1), (1999, 1999, 1)]
)
def test_ticks_to_ms_and_s_round_down(ticks: int, ms: int, s: int) -> None:
    assert TICKS_TO_MS(ticks) == ms
    assert TICKS_TO_S(ticks) == s


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_a_converted_delay_is_never_shorter_than_asked(ms: float) -> None:
    assert TICKS_TO_MS(MS_TO_TICKS(ms)) >= ms
    assert MS_TO_TICKS(ms) - 1 < ms  # less than one tick more


@given(st.integers(min_value=0, max_value=2**40))
def test_whole_values_round_trip(n: int) -> None:
    assert TICKS_TO_MS(MS_TO_TICKS(n)) == n
    assert TICKS_TO_S(S_TO_TICKS(n)) == n


@pytest.mark.parametrize(
    ("helper", "value", "error", "match"),
    [
        (MS_TO_TICKS, -1, ValueError, "MS_TO_TICKS takes a number >= 0.*-1"),
        (MS_TO_TICKS, float("nan"), ValueError, "MS_TO_TICKS takes a finite number, got nan"),
        (S_TO_TICKS, "5", TypeError, "S_TO_TICKS takes an int or float, got str '5'"),
        (S_TO_TICKS, True, TypeError, "got bool True"),
        (TICKS_TO_MS, 1.5, TypeError, "TICKS_TO_MS takes ticks as an int, got float 1.5"),
        (TICKS_TO_S, -3, ValueError, "TICKS_TO_S takes ticks >= 0, got -3"),
    ],
)
def test_bad_values_raise_naming_the_helper_and_the_value(
    helper: object, value: object, error: type[Exception], match: str
) -> None:
    assert callable(helper)
    with pytest.raises(error, match=match):
        helper(value)


# -- get_ticks / get_ticks_raw ---------------------------------------------------------------


def test_ticks_are_0_before_the_scheduler_starts(scheduler: aiotimer.Scheduler) -> None:
    assert kamailio.get_ticks() == 0
    assert kamailio.get_ticks_raw() == 0


@pytest.mark.anyio
async def test_ticks_count_from_the_start_of_the_current_scheduler(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    await virtual_clock.advance(100)  # time before the start does not count
    async with scheduler:
        await virtual_clock.advance(2.9995)
        assert kamailio.get_ticks() == 2
        assert kamailio.get_ticks_raw() == 2999
        await virtual_clock.advance(3600)
        assert kamailio.get_ticks() == 3602  # never wraps (Kamailio's wrap at 2**32 ticks)


def test_the_default_scheduler_is_current_unless_another_is_chosen() -> None:
    assert kamailio.current_scheduler() is aiotimer.default_scheduler()
    other = aiotimer.Scheduler()
    with kamailio.use_scheduler(other) as chosen:
        assert chosen is other
        assert kamailio.current_scheduler() is other
    assert kamailio.current_scheduler() is aiotimer.default_scheduler()


def test_use_scheduler_takes_effect_without_a_with_block() -> None:
    other = aiotimer.Scheduler()
    try:
        kamailio.use_scheduler(other)
        assert kamailio.current_scheduler() is other
    finally:
        kamailio.use_scheduler(None)
    assert kamailio.current_scheduler() is aiotimer.default_scheduler()


def test_use_scheduler_refuses_what_is_not_a_scheduler() -> None:
    with pytest.raises(TypeError, match="use_scheduler\\(\\) takes a Scheduler or None, got str"):
        kamailio.use_scheduler("default")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_inside_a_callback_ticks_are_those_of_the_scheduler_running_it(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    other = aiotimer.Scheduler(clock=virtual_clock, name="other")
    seen: list[tuple[int, int, aiotimer.Scheduler]] = []

    def f(ticks: int, param: object) -> None:
        seen.append((ticks, kamailio.get_ticks(), kamailio.current_scheduler()))

    with kamailio.use_scheduler(other):
        kamailio.register_timer(f, None, 1)
    async with scheduler:  # the current scheduler, started 10 s before `other`
        await virtual_clock.advance(10)
        async with other:
            await virtual_clock.advance(2)
    assert seen == [(1, 1, other), (2, 2, other)]
    assert kamailio.current_scheduler() is scheduler
