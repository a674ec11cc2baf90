"""Per-timer statistics: counters, and lateness/duration histograms in bounded memory.

Ground rules:

* Histograms have :data:`N_BUCKETS` log2 buckets of nanoseconds (:data:`BUCKET_UPPER_NS`):
  16 µs and below, then one per power of two up to 134 ms, then up to 1.07 s, then above.
  Percentiles are interpolated inside a bucket and clamped to the exact maximum, so they are
  within a factor of 2 of the truth (4 above 134 ms) and never above the largest value seen.
* Counts are cumulative (Prometheus histograms can be built from them) and 32-bit; a bucket
  that would pass 2**32 halves its whole histogram (years at 1 kHz; a counter reset then).
* All histograms of a scheduler live in one ``array('I')`` (:class:`HistogramSlab`), with their
  sums and each timer's last run, last lateness and maxima beside them in two 64-bit arrays:
  176 bytes a timer and no per-timer object, allocated at a timer's first timed run (a timer
  that never runs, such as a cancelled per-call one-shot, has none). Released slots are zeroed
  and reused.
* The histograms count *timed* runs: every run of a service with fewer than 256 timers due at
  once; a rotating sample of runs in bigger batches (see ``_dispatch.py``). Run counters are
  always exact.
* Snapshots are plain data (``dict``/``int``/``float``/``str``/``None``), ready for JSON.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, final, runtime_checkable

__all__ = [
    "BUCKET_UPPER_NS",
    "N_BUCKETS",
    "Distribution",
    "Histogram",
    "HistogramSlab",
    "JsonStats",
    "SchedulerStats",
    "TimerStats",
    "bucket_of",
]

N_BUCKETS: Final = 16
BUCKET_UPPER_NS: Final[tuple[int, ...]] = (
    *(1 << bits for bits in range(14, 28)),  # 16.4 µs, 32.8 µs, ... 134 ms
    1 << 30,  # 1.07 s
    1 << 62,  # and above
)
"""The exclusive upper bound of each bucket, in ns (the last one stands for infinity)."""
# bucket of a value, by the value's bit_length (0..64): one tuple lookup on the timing path.
_BUCKET_OF_BITS: Final[tuple[int, ...]] = tuple(
    next(b for b, upper in enumerate(BUCKET_UPPER_NS) if (1 << bits) - 1 < upper)
    if bits < 62
    else N_BUCKETS - 1
    for bits in range(65)
)
SLOT: Final = 2 * N_BUCKETS
"""Array items per timer: its lateness histogram, then its duration histogram."""
DURATION: Final = N_BUCKETS
"""Offset of the duration histogram inside a timer's slot."""
_MAX_COUNT: Final = 0xFFFFFFFF
NO_HISTOGRAM: Final = -1
"""The slot of a timer that has no histograms yet (none of its runs was timed)."""


@final
class HistogramSlab:
    """The lateness and duration histograms of every timer of a scheduler, in one array."""

    __slots__ = ("_free", "counts", "marks", "retired", "sums")

    def __init__(self) -> None:
        self.counts = array("I")
        self.sums = array("Q")  # the sum of the values of each histogram, in ns
        # per slot: last run start, last lateness (-1: none yet), max lateness, max duration
        self.marks = array("q")
        self._free: list[int] = []
        # the counts and the two sums of every released slot, added up
        self.retired = array("Q", bytes(8 * (SLOT + 2)))

    def allocate(self) -> int:
        """A zeroed slot; returns its base index."""
        if self._free:
            return self._free.pop()
        base = len(self.counts)
        self.counts.extend(_ZEROS)
        self.sums.extend(_NO_SUMS)
        self.marks.extend(_NO_MARKS)
        return base

    def release(self, base: int) -> None:
        """Free the slot at ``base``; its counts and sums go on in :meth:`totals` (the
        scheduler's totals never go back, as Prometheus counters must not)."""
        retired, counts = self.retired, self.counts
        for i in range(SLOT):
            retired[i] += counts[base + i]
        retired[SLOT] += self.sums[base // N_BUCKETS]
        retired[SLOT + 1] += self.sums[base // N_BUCKETS + 1]
        self.counts[base : base + SLOT] = _ZEROS
        self.sums[base // N_BUCKETS : base // N_BUCKETS + 2] = _NO_SUMS
        mark = base // SLOT * _MARKS
        self.marks[mark : mark + _MARKS] = _NO_MARKS
        self._free.append(base)

    def take(self, base: int) -> HistogramSlab:
        """Free the slot at ``base`` (as :meth:`release`), returning a copy of it: a slab of that
        one slot, at base 0, which an ended timer keeps and reads as it read its slot. Three
        C-level slices: its distributions are worked out only if asked for (SIP's one-shots
        end by the hundred a second, and few are ever looked at)."""
        copy = HistogramSlab()
        copy.counts = self.counts[base : base + SLOT]
        copy.sums = self.sums[base // N_BUCKETS : base // N_BUCKETS + 2]
        mark = base // SLOT * _MARKS
        copy.marks = self.marks[mark : mark + _MARKS]
        self.release(base)
        return copy

    def record_run(self, base: int, lateness_ns: int, duration_ns: int, started_ns: int) -> None:
        """A timed run of the timer at slot ``base``: both histograms and the marks."""
        self.record(base, lateness_ns)
        self.record(base + DURATION, duration_ns)
        marks = self.marks
        mark = base // SLOT * _MARKS
        marks[mark] = started_ns
        marks[mark + 1] = lateness_ns
        if lateness_ns > marks[mark + 2]:
            marks[mark + 2] = lateness_ns
        if duration_ns > marks[mark + 3]:
            marks[mark + 3] = duration_ns

    def marks_of(self, base: int) -> tuple[int | None, int | None, int, int]:
        """``(last run start ns, last lateness ns, max lateness ns, max duration ns)`` of the
        timer at slot ``base`` (``None``: no timed run yet)."""
        mark = base // SLOT * _MARKS
        last_run, last_lateness, max_lateness, max_duration = self.marks[mark : mark + _MARKS]
        return (
            None if last_run < 0 else last_run,
            None if last_lateness < 0 else last_lateness,
            max_lateness,
            max_duration,
        )

    def sum_slots(self, bases: list[int]) -> tuple[list[int], int, int]:
        """The slots at ``bases`` added up: ``(SLOT`` bucket counts, the lateness sum, the
        duration sum ``)``.

        For an exporter summing 100,000 timers per scrape, from a thread while the loop runs:
        each pass is C-level (slices joined into one array, one strided sum per bucket), ~30x
        a Python loop over the numbers, and builds nothing the garbage collector tracks. Each
        slice is one atomic read under the GIL, so a slot is never read half-written.
        """
        counts, sums = self.counts, self.sums
        rows = array("I")
        rows.frombytes(
            b"".join(map(counts.__getitem__, map(slice, bases, map(SLOT.__add__, bases))))
        )
        buckets = [sum(rows[b::SLOT]) for b in range(SLOT)]
        at = list(map(N_BUCKETS.__rfloordiv__, bases))  # base // N_BUCKETS: the slot's sums
        return (
            buckets,
            sum(map(sums.__getitem__, at)),
            sum(map(sums.__getitem__, map((1).__add__, at))),
        )

    def record(self, start: int, value_ns: int) -> None:
        """Count ``value_ns`` in the histogram at ``start`` (a slot base, + DURATION)."""
        counts = self.counts
        index = start + _BUCKET_OF_BITS[value_ns.bit_length()]
        if counts[index] >= _MAX_COUNT:
            for i in range(start, start + N_BUCKETS):
                counts[i] >>= 1
            self.sums[start // N_BUCKETS] >>= 1
        counts[index] += 1
        self.sums[start // N_BUCKETS] += value_ns

    def totals(self) -> tuple[Histogram, Histogram]:
        """Every timer's lateness histograms added up, and their duration histograms, those of
        timers whose slots were released included (freed slots are zero)."""
        counts, sums, retired = self.counts, self.sums, self.retired
        return (
            Histogram(
                tuple(sum(counts[b::SLOT]) + retired[b] for b in range(N_BUCKETS)),
                sum(sums[0::2]) + retired[SLOT],
            ),
            Histogram(
                tuple(
                    sum(counts[DURATION + b :: SLOT]) + retired[DURATION + b]
                    for b in range(N_BUCKETS)
                ),
                sum(sums[1::2]) + retired[SLOT + 1],
            ),
        )

    def histogram(self, start: int) -> Histogram:
        """The histogram at ``start``, as plain data (for exporters)."""
        return Histogram(
            tuple(self.counts[start : start + N_BUCKETS]), self.sums[start // N_BUCKETS]
        )

    def distribution(self, start: int, max_ns: int) -> Distribution:
        """The :class:`Distribution` of the histogram at ``start`` whose largest value is
        ``max_ns``."""
        buckets = self.counts[start : start + N_BUCKETS]
        total = sum(buckets)
        if total == 0:
            return Distribution(0, None, None, None)
        return Distribution(
            total,
            _percentile(buckets, total, 0.50, max_ns) / 1e9,
            _percentile(buckets, total, 0.99, max_ns) / 1e9,
            max_ns / 1e9,
        )


_ZEROS: Final = array("I", bytes(4 * SLOT))
_NO_SUMS: Final = array("Q", bytes(16))
_MARKS: Final = 4
_NO_MARKS: Final = array("q", (-1, -1, 0, 0))


def bucket_of(value_ns: int) -> int:
    """The bucket a value falls in."""
    return _BUCKET_OF_BITS[value_ns.bit_length()]


def _percentile(buckets: array[int], total: int, q: float, max_ns: int) -> float:
    rank = q * total
    seen = 0
    for b, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = 0 if b == 0 else BUCKET_UPPER_NS[b - 1]
            high = BUCKET_UPPER_NS[b] if b < N_BUCKETS - 1 else max(max_ns, low)
            value = low + (high - low) * (rank - seen) / count
            return min(max(value, low), max_ns)
        seen += count
    return float(max_ns)


@dataclass(frozen=True, slots=True)
class Histogram:
    """One histogram: ``counts[b]`` values fell in bucket ``b`` (below ``BUCKET_UPPER_NS[b]``,
    at or above the bucket before it; not cumulative), ``sum_ns`` is their sum."""

    counts: tuple[int, ...]
    sum_ns: int

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Distribution:
    """A summary of a histogram, in seconds (``None`` when nothing was recorded).

    ``count`` is the weight of the histogram (it decays; see the module notes), not a run count.
    """

    count: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None


EMPTY_HISTOGRAM: Final = Histogram((0,) * N_BUCKETS, 0)
EMPTY_DISTRIBUTION: Final = Distribution(0, None, None, None)


@dataclass(frozen=True, slots=True)
class TimerStats:
    """A snapshot of one timer's numbers; ``as_dict()`` is JSON-serialisable."""

    name: str
    state: str
    every: str
    runs: int
    missed: int
    overlaps: int
    errors: int
    timeouts: int
    loop_blocks: int
    running: int
    last_run_ns: int | None
    last_lateness_s: float | None
    lateness: Distribution
    duration: Distribution

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (by hand: ``dataclasses.asdict`` is 10x slower, which a status
        route over 100,000 timers feels)."""
        lateness, duration = self.lateness, self.duration
        return {
            "name": self.name,
            "state": self.state,
            "every": self.every,
            "runs": self.runs,
            "missed": self.missed,
            "overlaps": self.overlaps,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "loop_blocks": self.loop_blocks,
            "running": self.running,
            "last_run_ns": self.last_run_ns,
            "last_lateness_s": self.last_lateness_s,
            "lateness": {
                "count": lateness.count,
                "p50_s": lateness.p50_s,
                "p99_s": lateness.p99_s,
                "max_s": lateness.max_s,
            },
            "duration": {
                "count": duration.count,
                "p50_s": duration.p50_s,
                "p99_s": duration.p99_s,
                "max_s": duration.max_s,
            },
        }


@runtime_checkable
class JsonStats(Protocol):
    """Typed stats that turn into JSON-ready data at the edge (what a service's ``stats()``
    returns)."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of a scheduler: its own numbers, its timers' and its services'.

    :ivar timer_count: the timers in the registry (named timers and anonymous periodic ones)
    :ivar queued: every armed timer, anonymous one-shots and returns-interval timers included
    :ivar timers: each registered timer's :class:`TimerStats` by name; empty when the snapshot
        was taken with ``stats(timers=False)`` (``timer_count`` still counts them)
    :ivar services: each attached service's own typed stats, by service name
    """

    scheduler: str
    state: str
    ticks: int
    ticks_raw: int
    wakeups: int
    running: int
    timer_count: int
    queued: int
    timers: Mapping[str, TimerStats]
    services: Mapping[str, JsonStats]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the scheduler's fields, ``"timers"`` by name, and each service's
        ``as_dict()`` under its own name in ``"services"``."""
        return {
            "scheduler": self.scheduler,
            "state": self.state,
            "ticks": self.ticks,
            "ticks_raw": self.ticks_raw,
            "wakeups": self.wakeups,
            "running": self.running,
            "timer_count": self.timer_count,
            "queued": self.queued,
            "timers": {name: t.as_dict() for name, t in self.timers.items()},
            "services": {name: svc.as_dict() for name, svc in self.services.items()},
        }
