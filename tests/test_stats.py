"""Per-timer stats: exact counters, bounded histograms, JSON-ready snapshots."""

from __future__ import annotations

import dataclasses
import gc
import logging
import tracemalloc

import pytest

import aiotimer
from aiotimer._stats import DURATION, N_BUCKETS, HistogramSlab, bucket_of
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

MS = 1_000_000


def test_percentiles_are_within_a_factor_of_two_and_capped_by_max() -> None:
    slab = HistogramSlab()
    base = slab.allocate()
    values = [i * 10_000 for i in range(1, 101)]  # 10 µs .. 1 ms, uniform
    for v in values:
        slab.record(base, v)
    d = slab.distribution(base, max(values))
    assert d.count == 100
    assert d.p50_s is not None
    assert d.p99_s is not None
    assert 0.5 * 0.0005 <= d.p50_s <= 2 * 0.0005
    assert 0.5 * 0.00099 <= d.p99_s <= 0.001
    assert d.max_s == 0.001


def test_a_full_bucket_halves_its_histogram_instead_of_overflowing() -> None:
    slab = HistogramSlab()
    base = slab.allocate()
    slab.counts[base + 5] = 2**32 - 1
    slab.counts[base + 3] = 10
    slab.record(base, 300_000)  # bucket 5: 262..524 µs
    assert bucket_of(300_000) == 5
    counts = slab.histogram(base).counts
    assert counts[5] == 2**31
    assert counts[3] == 5  # the whole histogram halves: its shape is kept
    assert slab.histogram(base + DURATION).counts == (0,) * N_BUCKETS  # the other: untouched


def test_released_slots_are_zeroed_and_reused() -> None:
    slab = HistogramSlab()
    a = slab.allocate()
    slab.record(a, 40_000)
    slab.release(a)
    b = slab.allocate()
    assert b == a
    assert not any(slab.counts[b : b + 2 * N_BUCKETS])


async def test_timer_stats_count_runs_lateness_and_duration(virtual_clock: VirtualClock) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)
    t = s.add_every_ms(10, lambda: virtual_clock.spend(0.002), name="work")
    async with s:
        await virtual_clock.advance_ms(100)
    st = t.stats
    assert st.runs == 10
    assert st.duration.count == 10
    assert st.duration.max_s == pytest.approx(0.002)
    assert st.duration.p50_s == pytest.approx(0.002, rel=1)
    assert st.lateness.max_s == 0
    assert st.last_run_ns == 100 * MS
    lateness, duration = t.histograms()
    assert lateness.count == duration.count == 10
    assert duration.sum_ns == 10 * 2 * MS
    assert lateness.sum_ns == 0


async def test_10000_failing_runs_leave_the_scheduler_running_and_memory_flat(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = aiotimer.Scheduler(clock=virtual_clock)

    def fails() -> None:
        raise RuntimeError("always")

    failing = [s.add_every_ms(1, fails) for _ in range(10)]
    ok = s.add_every_ms(1, lambda: None)
    caplog.set_level(logging.CRITICAL, logger="aiotimer")  # 10,000 tracebacks are not the point
    async with s:
        await virtual_clock.advance_ms(200)
        gc.collect()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        await virtual_clock.advance_ms(1000)  # 10 timers x 1000 runs = 10,000 failures
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert s.running
    assert all(t.errors == t.runs == 1200 for t in failing)
    assert ok.runs == 1200
    assert after - before < 64 * 1024  # no growth with the number of failures


async def test_big_batches_time_a_rotating_sample(virtual_clock: VirtualClock) -> None:
    """1,000 timers due together: counters are exact, and over 4 runs each timer is timed."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    timers = [s.add_every_s(1, lambda: None) for _ in range(1000)]
    async with s:
        await virtual_clock.advance(8)
    assert all(t.runs == 8 for t in timers)
    timed = sum(t.stats.lateness.count for t in timers)
    assert 8 * 1000 // 5 <= timed < 8 * 1000  # about one run in 1 + 1000 // 256 = 4
    assert all(t.stats.lateness.count >= 1 for t in timers)


async def test_sum_exported_adds_up_the_timers_stats_and_histograms_in_one_flat_row(
    virtual_clock: VirtualClock,
) -> None:
    """What the Prometheus exporter reads per series: counters, histograms and sums of its
    timers, a running one, one that never ran and one that ended (its numbers on the
    handle) alike."""
    from aiotimer._timer import EXPORTED, sum_exported

    s = aiotimer.Scheduler(clock=virtual_clock)

    def flaky(tick: aiotimer.Tick) -> None:
        if tick.ticks_raw % 20 == 0:
            raise ValueError("even")

    timer = s.add_every_ms(10, flaky, name="flaky")
    never = s.add_every_ms(10_000, lambda: None, name="never")
    ended = s.add_every_ms(5, lambda: None, name="ended")
    async with s:
        await virtual_clock.advance_ms(30)
        ended.cancel()
        await virtual_clock.advance_ms(20)
        one = sum_exported([timer])
        three = sum_exported([timer, never, ended])
        none = sum_exported([never])
    lateness, duration = timer.histograms()
    assert len(one) == len(three) == EXPORTED
    assert list(one[:7]) == [5, 0, 0, 2, 0, 0, 0]
    assert list(one[7:]) == [*lateness.counts, *duration.counts, lateness.sum_ns, duration.sum_ns]
    assert list(none) == [0] * EXPORTED
    ended_lateness, ended_duration = ended.histograms()
    assert ended.runs == 6
    assert ended_lateness.count == 6
    assert three[0] == 5 + 6
    assert three[3] == 2
    assert list(three[7:]) == [
        *(a + b for a, b in zip(lateness.counts, ended_lateness.counts, strict=True)),
        *(a + b for a, b in zip(duration.counts, ended_duration.counts, strict=True)),
        lateness.sum_ns + ended_lateness.sum_ns,
        duration.sum_ns + ended_duration.sum_ns,
    ]


async def test_the_schedulers_totals_keep_the_runs_of_ended_timers(
    virtual_clock: VirtualClock,
) -> None:
    """Totals feed counters (Prometheus): they never go back when a timer ends or a timer_ln's
    histograms restart with its next arming."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    once = [s.add_once_ms(5, lambda: None) for _ in range(3)]
    periodic = s.add_every_ms(10, lambda: None, name="p")
    async with s:
        await virtual_clock.advance_ms(30)
        lateness, duration = s.histograms()
        assert lateness.count == duration.count == 3 + 3
        periodic.cancel()
        periodic.restart_histograms()  # (no slot any more: nothing to do)
        assert s.histograms()[0].count == 6
    assert all(t.state is aiotimer.TimerState.FINISHED for t in once)
    assert len(s._hist.counts) == 2 * N_BUCKETS  # one slot, freed and re-used by each in turn


async def test_an_ended_timer_keeps_its_numbers_when_its_slot_goes_to_another(
    virtual_clock: VirtualClock,
) -> None:
    """An ended timer's histograms leave the scheduler's slab (its slot is freed, and the
    next timer timed takes it); the handle keeps a copy, so its stats and histograms read
    what they were at its end (its state aside), whatever the slot holds next."""
    s = aiotimer.Scheduler(clock=virtual_clock)
    ended = s.add_every_ms(10, lambda: virtual_clock.spend(0.001), name="ended")
    async with s:
        await virtual_clock.advance_ms(50)
        stats, histograms = ended.stats, ended.histograms()
        slot = ended._hist
        ended.cancel()
        other = s.add_every_ms(10, lambda: virtual_clock.spend(0.004), name="other")
        await virtual_clock.advance_ms(100)
    assert other._hist == slot  # (the same slot, other numbers)
    assert other.stats.duration.p50_s != stats.duration.p50_s
    assert ended.histograms() == histograms
    assert ended.stats.state == "cancelled"
    assert ended.stats == dataclasses.replace(stats, state="cancelled")
    assert (stats.runs, stats.duration.count, stats.last_run_ns) == (5, 5, 50_000_000)
