"""Prometheus metrics for aiotimer schedulers (the optional extra ``prometheus``).

::

    aiotimer.prometheus.register(scheduler)              # on prometheus_client's global REGISTRY
    aiotimer.prometheus.register(scheduler, registry=r, max_timer_series=100)
    body, content_type = await aiotimer.prometheus.generate(r, accept=request_accept_header)

Ground rules:

* Nothing on the hot path: the numbers are read when Prometheus scrapes, so these are the
  numbers of the status route (DESIGN §5) and a scheduler that is never scraped pays nothing.
* **A scrape never stalls the loop** when it goes through :func:`generate` (what
  ``aiotimer.aiohttp.add_metrics_route`` does): on the loop it only takes the scheduler's
  summary and a tuple of its timers (~1 ms for 100,000); reading each timer's counters and
  histograms, grouping, summing and the text format are done in a worker thread, so timers
  keep their schedule however many there are. A plain
  ``prometheus_client.generate_latest(registry)`` on the loop's thread still works but copies
  everything in one go (fine for hundreds of timers, a stall for 100,000).
* **Cardinality is bounded by design** (Prometheus' instrumentation guidelines): a timer given
  a ``name`` has series of its own (``timer="<its name>"``); timers without one (named after
  their callback: ``module.func``, ``module.func#2``...) are summed under their callback's
  name, so 100,000 per-call timers of one function are one series. At most
  ``max_timer_series`` (:data:`DEFAULT_MAX_TIMER_SERIES` unless given to :func:`register`)
  timer label values per scheduler; the timers past it are summed under
  ``timer="_other"`` (:data:`OTHER`), with a warning logged once on ``aiotimer.prometheus``.
  Which timers fall past the cap follows their registration order.
* One collector per registry serves every scheduler registered on it, told apart by the
  ``scheduler`` label (so two schedulers may share a registry; two of the same name may not).
  A timer of a worker process also has ``worker`` (``"<process>[<index>]"``) and counts
  against the same cap.
* Counters (``_total``) are sums of the timers' own counters; they go down when a timer is
  cancelled (its runs leave the sum) or replaced, which Prometheus reads as a counter reset.

Metrics:

=================================  =======  ================================================
``aiotimer_runs_total``            counter  runs started
``aiotimer_missed_total``          counter  grid points passed without a run of their own
``aiotimer_overlaps_total``        counter  runs skipped because earlier runs were going
``aiotimer_errors_total``          counter  runs that raised (timeouts not included)
``aiotimer_timeouts_total``        counter  runs that exceeded ``timeout_s``
``aiotimer_loop_blocks_total``     counter  inline runs that blocked the loop
``aiotimer_runs_in_flight``        gauge    asynchronous runs going on now
``aiotimer_lateness_seconds``      histo.   start of a run after its grid point
``aiotimer_duration_seconds``      histo.   run duration
``aiotimer_timers``                gauge    live timers of the scheduler (all of them)
``aiotimer_scheduler_running``     gauge    1 while the scheduler runs
``aiotimer_leader``                gauge    1 while a leader service leads (per service)
``aiotimer_worker_restarts_total`` counter  restarts of each worker process
``aiotimer_cluster_points_total``  counter  a cluster timer's grid points on this node, by
                                            ``result``: ``won``, ``elsewhere``,
                                            ``store_error``, ``refused_skew``
``aiotimer_cluster_live_nodes``    gauge    live nodes this node sees (per cluster)
``aiotimer_cluster_refusing``      gauge    1 while this node's clock is too far off
``aiotimer_cluster_claim_seconds`` gauge    claim latency, ``quantile`` 0.5 / 0.99 / 1
``aiotimer_cluster_store_errors_total`` counter  failed claim calls
=================================  =======  ================================================

**Histograms** are aiotimer's own: per timer, cumulative 32-bit counts in log2 buckets whose
bounds are ``le`` = 16.4 µs, 32.8 µs, ... 134 ms (powers of two of ns), 1.07 s and ``+Inf``
(``BUCKET_UPPER_NS`` in ``aiotimer._stats``; a value of exactly a bound counts one bucket
up). Counts only grow (they reset after 2**32 runs in one bucket, or when a timer is
replaced), so ``rate()`` works:
``histogram_quantile(0.99, sum by (le) (rate(aiotimer_lateness_seconds_bucket[5m])))``. They
have ``_sum`` and ``_count`` (from ``Timer.histograms()``). They count *timed* runs: all of
them unless hundreds of timers are due at once (see ``aiotimer._stats``). Timers of worker
processes have counters only.

**Worker processes.** When timer processes are attached, the exporter reads their
:class:`~aiotimer.process.ProcessesStats` (``scheduler.stats().services["aiotimer.process"]``):
each :class:`~aiotimer.process.WorkerStats` gives ``restarts`` and the worker's own
:class:`~aiotimer.SchedulerStats` as it last reported it (every ``stats_interval_s``), so
workers' numbers come through the parent and no multiprocess directory is needed.

**Threads.** Snapshots are taken on the event loop's thread (schedulers are not thread-safe):
:func:`generate` does that for you. ``prometheus_client.start_http_server`` collects from a
thread of its own, where a scrape racing a timer being added or cancelled can fail: serve
``/metrics`` from the loop instead (``aiotimer.aiohttp.add_metrics_route``, or your own route
awaiting :func:`generate`).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final
from weakref import WeakKeyDictionary

import anyio
import anyio.lowlevel
import anyio.to_thread
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ._scheduler import Scheduler
from ._stats import BUCKET_UPPER_NS, N_BUCKETS, SchedulerStats, TimerStats
from ._timer import EXPORTED, Timer, TimerState

if TYPE_CHECKING:
    from .cluster import ClusterStats
    from .process import ProcessesStats

__all__ = ["DEFAULT_MAX_TIMER_SERIES", "OTHER", "generate", "register", "unregister"]

logger = logging.getLogger("aiotimer.prometheus")

DEFAULT_MAX_TIMER_SERIES: Final = 100
"""Timer label values per scheduler, by default: each is ~45 samples, ~4 KB of exposition, so
the default keeps ``/metrics`` well under 1 MB."""
OTHER: Final = "_other"
"""The ``timer`` label of the timers past ``max_timer_series``, summed."""

_COUNTERS: Final = (
    ("runs", "aiotimer_runs", "Timer runs started."),
    ("missed", "aiotimer_missed", "Grid points that passed without a run of their own."),
    ("overlaps", "aiotimer_overlaps", "Runs skipped because earlier runs were still going."),
    ("errors", "aiotimer_errors", "Runs that raised (timeouts are counted apart)."),
    ("timeouts", "aiotimer_timeouts", "Runs that exceeded their timeout_s."),
    ("loop_blocks", "aiotimer_loop_blocks", "Inline sync runs that blocked the event loop."),
)
_LE: Final = (*(repr(upper / 1e9) for upper in BUCKET_UPPER_NS[:-1]), "+Inf")
"""The ``le`` of each bucket: its exclusive upper bound in seconds (the last is infinity)."""
_ANONYMOUS_SUFFIX: Final = re.compile(r"#\d+$")
_DONE: Final = (TimerState.CANCELLED, TimerState.FINISHED)


def register(
    scheduler: Scheduler,
    *,
    registry: CollectorRegistry | None = None,
    max_timer_series: int = DEFAULT_MAX_TIMER_SERIES,
) -> None:
    """Export ``scheduler``'s metrics on ``registry`` (prometheus_client's global ``REGISTRY``
    by default), from now until :func:`unregister`.

    :param max_timer_series: at most this many ``timer`` label values for this scheduler
        (its own timers and its workers'); the timers past it are summed under
        ``timer="_other"``
    :raises TypeError: if ``scheduler`` is not a :class:`~aiotimer.Scheduler`
    :raises ValueError: for a ``max_timer_series`` that is not an int >= 1; if a scheduler of
        that name is already registered on ``registry``, or another collector there already
        exports ``aiotimer_*`` names
    """
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"register() takes a Scheduler, got {scheduler!r}")
    if (
        isinstance(max_timer_series, bool)
        or not isinstance(max_timer_series, int)
        or max_timer_series < 1
    ):
        raise ValueError(
            f"register(): scheduler {scheduler.name!r}: max_timer_series must be an int >= 1, "
            f"got {max_timer_series!r}"
        )
    registry = REGISTRY if registry is None else registry
    entry = _Entry(scheduler, max_timer_series)
    collector = _collectors.get(registry)
    if collector is None:
        collector = _SchedulerCollector()
        collector.add(entry)
        registry.register(collector)
        _collectors[registry] = collector
        return
    collector.add(entry)


def unregister(scheduler: Scheduler, *, registry: CollectorRegistry | None = None) -> None:
    """Stop exporting ``scheduler``'s metrics on ``registry``.

    :raises ValueError: if ``scheduler`` is not registered there
    """
    registry = REGISTRY if registry is None else registry
    collector = _collectors.get(registry)
    if collector is None or not collector.remove(scheduler):
        raise ValueError(f"scheduler {scheduler.name!r} is not registered on {registry!r}")
    if not collector.entries:
        registry.unregister(collector)
        del _collectors[registry]


async def generate(
    registry: CollectorRegistry | None = None,
    *,
    accept: str = "",
    limiter: anyio.CapacityLimiter | None = None,
) -> tuple[bytes, str]:
    """The exposition of ``registry`` (``REGISTRY`` by default) for a scrape, without stalling
    the loop: the registered schedulers' summaries and timer lists are taken on the loop, then
    every collector of the registry reads and renders them in a worker thread.
    Call it from the loop that runs the schedulers.

    :param accept: the scraper's ``Accept`` header (OpenMetrics when it asks for it)
    :param limiter: the threads renders may use (anyio's default limiter if ``None``)
    :return: ``(body, content type)``
    """
    registry = REGISTRY if registry is None else registry
    encoder, content_type = choose_encoder(accept)
    collector = _collectors.get(registry)
    if collector is None:
        body = await anyio.to_thread.run_sync(encoder, registry, limiter=limiter)
        return body, content_type
    snapshots = [entry.snapshot() for entry in tuple(collector.entries.values())]
    # to_thread runs the encoder in a copy of this context: the collector finds them there.
    token = _prepared.set((collector, snapshots))
    try:
        body = await anyio.to_thread.run_sync(encoder, registry, limiter=limiter)
    finally:
        _prepared.reset(token)
    return body, content_type


# -- snapshots (on the loop) -----------------------------------------------------------------

_FIELDS: Final = EXPORTED
"""Numbers copied per timer (see :meth:`Timer.export_numbers`)."""


@final
class _Copy:
    """The timers of one scheduler, copied into flat, untracked containers.

    A copy of 100,000 timers as objects (a tuple and a few dataclasses each) would be half a
    million objects the garbage collector tracks: once they outlive a young collection they
    trigger full collections, 50-100 ms pauses of the whole process (measured by the
    ``scrape`` benchmark). Strings and ``array`` items are not tracked, so the copy is a list
    of names, one byte per timer and one ``array`` of numbers; the objects read on the way are
    freed at once.
    """

    __slots__ = ("anonymous", "names", "numbers")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.anonymous = bytearray()
        self.numbers = array("Q")

    def add(self, timer: Timer) -> None:
        self.names.append(timer.name)
        self.anonymous.append(timer.spec.name is None)
        timer.export_numbers(self.numbers)


@final
@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one scrape reads of one scheduler: plain data, not shared with the loop."""

    entry: _Entry
    summary: SchedulerStats  # stats(timers=False): the scheduler's numbers and its services'
    leaders: tuple[tuple[str, bool], ...]
    live: tuple[Timer, ...]  # the registry as it was, read in the rendering thread

    @property
    def timers(self) -> _Copy:
        """The timers' numbers, copied (in the rendering thread: see :meth:`_Entry.snapshot`)."""
        copy = _Copy()
        add = copy.add
        for timer in self.live:
            if timer.state not in _DONE:  # cancelled since the copy of the list: gone
                add(timer)
        return copy


@final
class _Entry:
    """A registered scheduler, its series cap, and whether the cap was reported."""

    __slots__ = ("max_timer_series", "scheduler", "warned")

    def __init__(self, scheduler: Scheduler, max_timer_series: int) -> None:
        self.scheduler = scheduler
        self.max_timer_series = max_timer_series
        self.warned = False

    def _head(self) -> tuple[SchedulerStats, tuple[tuple[str, bool], ...], tuple[Timer, ...]]:
        scheduler = self.scheduler
        leaders = tuple(
            (service.name, is_leader)
            for service in scheduler.services.values()
            if isinstance(is_leader := getattr(service, "is_leader", None), bool)
        )
        return scheduler.stats(timers=False), leaders, tuple(scheduler.timers.values())

    def snapshot(self) -> _Snapshot:
        """What the loop does for a scrape: the scheduler's summary and a tuple of its timers
        (a C-level copy of the registry's values: ~1 ms for 100,000). Each timer's numbers are
        read in the rendering thread, from the live timer (its counters are ints and its
        histograms an ``array``: a read never tears one number, and a scrape that sees a run
        more here or there is as good as one a moment later)."""
        summary, leaders, timers = self._head()
        return _Snapshot(self, summary, leaders, timers)


_prepared: contextvars.ContextVar[tuple[_SchedulerCollector, list[_Snapshot]] | None] = (
    contextvars.ContextVar("aiotimer_prometheus_prepared", default=None)
)


# -- the collector (in the rendering thread) ---------------------------------------------------


@final
class _SchedulerCollector:
    """A prometheus_client collector for the schedulers registered on one registry."""

    __slots__ = ("__weakref__", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        name = entry.scheduler.name
        other = self.entries.get(name)
        if other is not None and other.scheduler is entry.scheduler:
            raise ValueError(f"scheduler {name!r} is already registered")
        if other is not None:
            raise ValueError(
                f"another scheduler named {name!r} is already registered; "
                "scheduler names label the metrics, so they must differ"
            )
        self.entries[name] = entry

    def remove(self, scheduler: Scheduler) -> bool:
        entry = self.entries.get(scheduler.name)
        if entry is None or entry.scheduler is not scheduler:
            return False
        del self.entries[scheduler.name]
        return True

    def describe(self) -> list[Metric]:
        """The families, without samples: lets the registry refuse duplicate names."""
        return _Families().all()

    def collect(self) -> Iterator[Metric]:
        prepared = _prepared.get()
        if prepared is not None and prepared[0] is self:
            snapshots = prepared[1]
        else:
            snapshots = [entry.snapshot() for entry in tuple(self.entries.values())]
        families = _Families()
        for snapshot in snapshots:
            families.add(snapshot)
        yield from families.all()


_collectors: WeakKeyDictionary[CollectorRegistry, _SchedulerCollector] = WeakKeyDictionary()


@final
class _Series:
    """The sums of the timers behind one label set."""

    __slots__ = ("counters", "duration", "duration_sum", "lateness", "lateness_sum", "running")

    def __init__(self) -> None:
        self.counters = [0] * len(_COUNTERS)
        self.running = 0
        self.lateness = [0] * N_BUCKETS
        self.duration = [0] * N_BUCKETS
        self.lateness_sum = 0
        self.duration_sum = 0

    def add_copied(self, numbers: array[int], at: int) -> None:
        """Add the timer copied at ``numbers[at : at + _FIELDS]`` (see :class:`_Copy`)."""
        counters, lateness, duration = self.counters, self.lateness, self.duration
        for k in range(6):
            counters[k] += numbers[at + k]
        self.running += numbers[at + 6]
        at += 7
        for b in range(N_BUCKETS):
            lateness[b] += numbers[at + b]
            duration[b] += numbers[at + N_BUCKETS + b]
        at += 2 * N_BUCKETS
        self.lateness_sum += numbers[at]
        self.duration_sum += numbers[at + 1]

    def add_stats(self, stats: TimerStats) -> None:
        """Add a worker's timer (counters only: its histograms stay in the worker)."""
        counters = self.counters
        counters[0] += stats.runs
        counters[1] += stats.missed
        counters[2] += stats.overlaps
        counters[3] += stats.errors
        counters[4] += stats.timeouts
        counters[5] += stats.loop_blocks
        self.running += stats.running


def series_name(name: str, anonymous: bool) -> str:
    """The ``timer`` label of a timer: its name if it was given one, else its callback's name
    (``module.func#3`` -> ``module.func``)."""
    return _ANONYMOUS_SUFFIX.sub("", name) if anonymous else name


@final
class _Budget:
    """Hands out label values up to the cap; past it, :data:`OTHER`."""

    __slots__ = ("cap", "overflow", "used")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used: set[tuple[str, str]] = set()
        self.overflow = 0  # timers summed under OTHER

    def label(self, worker: str, timer: str) -> str:
        key = (worker, timer)
        if key in self.used:
            return timer
        if len(self.used) < self.cap:
            self.used.add(key)
            return timer
        self.overflow += 1
        return OTHER


class _Families:
    """One scrape's metric families, filled scheduler by scheduler."""

    def __init__(self) -> None:
        self.counters = [CounterMetricFamily(name, doc) for _, name, doc in _COUNTERS]
        self.in_flight = GaugeMetricFamily(
            "aiotimer_runs_in_flight", "Asynchronous runs (coroutines, threads) going on now."
        )
        self.lateness = HistogramMetricFamily(
            "aiotimer_lateness_seconds",
            "How late runs started after their grid point (timed runs).",
            labels=("scheduler", "timer"),
        )
        self.duration = HistogramMetricFamily(
            "aiotimer_duration_seconds",
            "How long runs took (timed runs).",
            labels=("scheduler", "timer"),
        )
        self.timers = GaugeMetricFamily("aiotimer_timers", "Live timers of the scheduler.")
        self.running = GaugeMetricFamily(
            "aiotimer_scheduler_running", "1 while the scheduler runs, else 0."
        )
        self.leader = GaugeMetricFamily(
            "aiotimer_leader", "1 while this process leads (per leader service), else 0."
        )
        self.restarts = CounterMetricFamily(
            "aiotimer_worker_restarts", "Restarts of a worker process."
        )
        self.cluster_points = CounterMetricFamily(
            "aiotimer_cluster_points",
            "A cluster timer's grid points on this node, by result (won: run here).",
        )
        self.cluster_live = GaugeMetricFamily(
            "aiotimer_cluster_live_nodes", "Live nodes of the cluster, as this node sees them."
        )
        self.cluster_refusing = GaugeMetricFamily(
            "aiotimer_cluster_refusing", "1 while this node's clock is too far off the store's."
        )
        self.cluster_claim = GaugeMetricFamily(
            "aiotimer_cluster_claim_seconds", "Claim round-trip latency over the newest claims."
        )
        self.cluster_errors = CounterMetricFamily(
            "aiotimer_cluster_store_errors", "Claim calls that failed (store unreachable...)."
        )

    def all(self) -> list[Metric]:
        families = [
            *self.counters,
            self.in_flight,
            self.lateness,
            self.duration,
            self.timers,
            self.running,
            self.leader,
            self.restarts,
        ]
        if self.cluster_live.samples:  # only where a Cluster is attached
            families += [
                self.cluster_points,
                self.cluster_live,
                self.cluster_refusing,
                self.cluster_claim,
                self.cluster_errors,
            ]
        return families

    def add(self, snapshot: _Snapshot) -> None:
        summary = snapshot.summary
        name = summary.scheduler
        sched = {"scheduler": name}
        self.running.add_sample(
            "aiotimer_scheduler_running", sched, 1.0 if summary.state == "running" else 0.0
        )
        self.timers.add_sample("aiotimer_timers", sched, float(summary.timer_count))
        for service, is_leader in snapshot.leaders:
            self.leader.add_sample(
                "aiotimer_leader", {**sched, "service": service}, float(is_leader)
            )
        budget = _Budget(snapshot.entry.max_timer_series)
        series: dict[str, _Series] = {}
        copy = snapshot.timers
        numbers = copy.numbers
        for i, (timer, anonymous) in enumerate(zip(copy.names, copy.anonymous, strict=True)):
            label = budget.label("", series_name(timer, bool(anonymous)))
            one = series.get(label)
            if one is None:
                one = series[label] = _Series()
            one.add_copied(numbers, i * _FIELDS)
        for label, one in series.items():
            self._add_counters({**sched, "timer": label}, one)
            self.lateness.add_metric(
                (name, label), _cumulative(one.lateness), one.lateness_sum / 1e9
            )
            self.duration.add_metric(
                (name, label), _cumulative(one.duration), one.duration_sum / 1e9
            )
        cluster = sys.modules.get("aiotimer.cluster")  # imported if a Cluster is attached
        if cluster is not None:
            for service_stats in summary.services.values():
                if isinstance(service_stats, cluster.ClusterStats):
                    self._add_cluster(sched, service_stats, budget)
        processes = summary.services.get("aiotimer.process")
        if processes is not None:  # then the process layer is imported: no cost here
            from .process import ProcessesStats

            if isinstance(processes, ProcessesStats):
                self._add_workers(sched, processes, budget)
        if budget.overflow and not snapshot.entry.warned:
            snapshot.entry.warned = True
            logger.warning(
                "scheduler %r: more timer series than max_timer_series=%d; %d timers are "
                'summed under timer="%s" (name fewer timers, or raise the cap)',
                name,
                budget.cap,
                budget.overflow,
                OTHER,
            )

    def _add_cluster(
        self, sched: dict[str, str], service_stats: ClusterStats, budget: _Budget
    ) -> None:
        labels = {**sched, "cluster": service_stats.cluster}
        points: dict[tuple[str, str], int] = {}
        for timer, t in service_stats.timers.items():
            label = budget.label("", timer)  # the timer's own series label (or OTHER)
            for result, count in (
                ("won", t.won),
                ("elsewhere", t.run_elsewhere),
                ("store_error", t.store_errors),
                ("refused_skew", t.refused_skew),
            ):
                points[label, result] = points.get((label, result), 0) + count
        for (label, result), count in points.items():
            self.cluster_points.add_sample(
                "aiotimer_cluster_points_total",
                {**labels, "timer": label, "result": result},
                float(count),
            )
        self.cluster_live.add_sample(
            "aiotimer_cluster_live_nodes", labels, float(len(service_stats.live_nodes))
        )
        self.cluster_refusing.add_sample(
            "aiotimer_cluster_refusing", labels, float(service_stats.refusing)
        )
        for quantile, seconds in (
            ("0.5", service_stats.claim_latency_p50_s),
            ("0.99", service_stats.claim_latency_p99_s),
            ("1", service_stats.claim_latency_max_s),
        ):
            if seconds is not None:
                self.cluster_claim.add_sample(
                    "aiotimer_cluster_claim_seconds", {**labels, "quantile": quantile}, seconds
                )
        self.cluster_errors.add_sample(
            "aiotimer_cluster_store_errors_total", labels, float(service_stats.store_errors)
        )

    def _add_workers(
        self, sched: dict[str, str], processes: ProcessesStats, budget: _Budget
    ) -> None:
        for workers in processes.workers.values():
            for worker in workers:
                who = f"{worker.name}[{worker.index}]"
                labels = {**sched, "worker": who}
                self.restarts.add_sample(
                    "aiotimer_worker_restarts_total", labels, float(worker.restarts)
                )
                if worker.stats is None:
                    continue
                series: dict[str, _Series] = {}
                for timer, stats in worker.stats.timers.items():
                    label = budget.label(who, timer)
                    one = series.get(label)
                    if one is None:
                        one = series[label] = _Series()
                    one.add_stats(stats)
                for label, one in series.items():
                    self._add_counters({**labels, "timer": label}, one)

    def _add_counters(self, labels: dict[str, str], one: _Series) -> None:
        for family, value in zip(self.counters, one.counters, strict=True):
            family.add_sample(family.name + "_total", labels, float(value))
        self.in_flight.add_sample("aiotimer_runs_in_flight", labels, float(one.running))


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    """``(le, count of values in this bucket or below)`` from per-bucket counts."""
    total = 0
    buckets = []
    for le, count in zip(_LE, counts, strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets
