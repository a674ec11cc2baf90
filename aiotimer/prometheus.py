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
  summary and a tuple of its timers (~1 ms for 100,000); grouping the timers, summing their
  counters and histograms (C-level passes: ~50 ms of CPU for 100,000) and the text are done in
  a worker thread, which sleeps a moment every millisecond of work so the loop never waits
  long for the GIL. The exposition is written from flat strings and ``array`` numbers, the
  very text prometheus_client's encoders would write: no ``Sample`` object, because thousands
  of those outliving young collections set off the garbage collector's full collections
  (30-50 ms pauses at 100,000 timers) every dozen scrapes. A plain
  ``prometheus_client.generate_latest(registry)`` on the loop's thread still works but does all
  of it in one go (fine for hundreds of timers, a stall for 100,000).
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
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final
from weakref import WeakKeyDictionary

import anyio
import anyio.lowlevel
import anyio.to_thread
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ._scheduler import Scheduler
from ._stats import BUCKET_UPPER_NS, N_BUCKETS, SchedulerStats, TimerStats
from ._timer import EXPORTED, Timer, TimerState, sum_exported

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
_LATENESS: Final = (7, 7 + 2 * N_BUCKETS)
"""Where the lateness histogram is in :func:`sum_exported`'s numbers: counts, sum."""
_DURATION: Final = (7 + N_BUCKETS, 8 + 2 * N_BUCKETS)
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
    openmetrics = content_type.startswith("application/openmetrics-text")

    def render() -> bytes:
        ours = _Families.of(snapshots, in_thread=True).render(openmetrics)
        # the registry's other collectors through prometheus_client's encoder (this one
        # yields nothing there: it is rendered apart, see _SchedulerCollector.collect)
        token = _apart.set(collector)
        try:
            others = encoder(registry)
        finally:
            _apart.reset(token)
        if openmetrics:  # ours go before the closing "# EOF"
            return others[: -len(_EOF)] + ours + _EOF
        return others + ours

    return await anyio.to_thread.run_sync(render, limiter=limiter), content_type


_EOF: Final = b"# EOF\n"
_apart: contextvars.ContextVar[_SchedulerCollector | None] = contextvars.ContextVar(
    "aiotimer_prometheus_apart", default=None
)
"""The collector whose families :func:`generate` renders itself, in this rendering thread."""


# -- snapshots (on the loop) -----------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one scrape reads of one scheduler: plain data, not shared with the loop."""

    entry: _Entry
    summary: SchedulerStats  # stats(timers=False): the scheduler's numbers and its services'
    leaders: tuple[tuple[str, bool], ...]
    live: tuple[Timer, ...]  # the registry as it was, read in the rendering thread


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
        return [family.metric() for family in _Families().all()]

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus_client objects (``generate_latest(registry)`` on the
        loop's thread); nothing when :func:`generate` renders them itself."""
        if _apart.get() is self:
            return
        snapshots = [entry.snapshot() for entry in tuple(self.entries.values())]
        for family in _Families.of(snapshots, in_thread=False).all():
            yield family.metric()


_collectors: WeakKeyDictionary[CollectorRegistry, _SchedulerCollector] = WeakKeyDictionary()


_Labels = tuple[str, ...]
"""Label names and values, flat: ``("scheduler", "svc", "timer", "t")``. Flat tuples of strings
are untracked by the garbage collector at their first collection (a nested one can take
several and be promoted meanwhile: see :class:`_Family`)."""


def _worker_numbers(stats: Iterable[TimerStats]) -> array[int]:
    """The :data:`~aiotimer._timer.EXPORTED` numbers of a worker's timers, as
    :func:`~aiotimer._timer.sum_exported` gives them for the scheduler's own: counters only
    (a worker's histograms stay in the worker)."""
    numbers = array("Q", bytes(8 * EXPORTED))
    for one in stats:
        numbers[0] += one.runs
        numbers[1] += one.missed
        numbers[2] += one.overlaps
        numbers[3] += one.errors
        numbers[4] += one.timeouts
        numbers[5] += one.loop_blocks
        numbers[6] += one.running
    return numbers


def series_name(name: str, anonymous: bool) -> str:
    """The ``timer`` label of a timer: its name if it was given one, else its callback's name
    (``module.func#3`` -> ``module.func``)."""
    if not anonymous:
        return name
    head, hash_sign, number = name.rpartition("#")  # a str method: 100,000 names a scrape
    return head if hash_sign and number.isdigit() else name


@final
class _Budget:
    """Hands out label values up to the cap; past it, :data:`OTHER`."""

    __slots__ = ("cap", "overflow", "used")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used: set[tuple[str, str]] = set()
        self.overflow = 0  # timers summed under OTHER

    def label(self, worker: str, timer: str, timers: int = 1) -> str:
        """The label of ``timers`` timers of series ``timer`` (of ``worker``)."""
        key = (worker, timer)
        if key in self.used:
            return timer
        if len(self.used) < self.cap:
            self.used.add(key)
            return timer
        self.overflow += timers
        return OTHER


@final
class _Family:
    """One metric family of a scrape: its samples as plain tuples of strings and floats.

    :meth:`render` writes the exposition text itself, as prometheus_client's encoders do
    (labels sorted, values as Go prints them), so a scrape of 100,000 timers builds no
    ``Sample`` object: those are tracked by the garbage collector, thousands of them per
    scrape outlive young collections while the scrape renders, and back-to-back scrapes then
    set off a full collection every few scrapes (tens of ms in which no timer runs).
    :meth:`metric` gives the same family to prometheus_client (``generate_latest``).
    """

    __slots__ = ("doc", "kind", "labels", "name", "samples", "values")

    def __init__(self, name: str, kind: str, doc: str) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        # the samples, in three flat lists (not a list of tuples: see _Labels)
        self.samples: list[str] = []
        self.labels: list[_Labels] = []
        self.values: list[float] = []

    def add(self, sample: str, labels: _Labels, value: float) -> None:
        self.samples.append(sample)
        self.labels.append(labels)
        self.values.append(value)

    def metric(self) -> Metric:
        metric = Metric(self.name, self.doc, self.kind)
        for sample, labels, value in zip(self.samples, self.labels, self.values, strict=True):
            metric.add_sample(sample, dict(zip(labels[::2], labels[1::2], strict=True)), value)
        return metric

    def render(self, out: list[str], openmetrics: bool, pace: _Pacer) -> None:
        """Append the family's exposition lines (OpenMetrics 1.0 or the text format 0.0.4)."""
        name, doc = self.name, self.doc.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            doc = doc.replace('"', r"\"")
        elif self.kind == "counter":
            name += "_total"
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {self.kind}\n")
        texts: dict[_Labels, str] = {}
        for i, (sample, labels, value) in enumerate(
            zip(self.samples, self.labels, self.values, strict=True)
        ):
            if not i % _SAMPLES_CHUNK:
                pace()
            text = texts.get(labels)
            if text is None:
                text = texts[labels] = _label_text(labels)
            out.append(f"{sample}{text} {_go_float(value)}\n")


def _escape(value: str) -> str:
    """A label value (and an OpenMetrics HELP text) with ``\\``, newline and ``"`` escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(labels: _Labels) -> str:
    """``{k="v",...}`` with the keys sorted and the values escaped (both formats' rules)."""
    if not labels:
        return ""
    pairs = sorted(zip(labels[::2], labels[1::2], strict=True))
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _go_float(value: float) -> str:
    """A sample value as Go prints it (prometheus_client's own conversion)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class _Families:
    """One scrape's metric families, filled scheduler by scheduler."""

    def __init__(self, pace: _Pacer | None = None) -> None:
        self.pace = _Pacer(False) if pace is None else pace
        self.counters = [_Family(name, "counter", doc) for _, name, doc in _COUNTERS]
        self.in_flight = _Family(
            "aiotimer_runs_in_flight",
            "gauge",
            "Asynchronous runs (coroutines, threads) going on now.",
        )
        self.lateness = _Family(
            "aiotimer_lateness_seconds",
            "histogram",
            "How late runs started after their grid point (timed runs).",
        )
        self.duration = _Family(
            "aiotimer_duration_seconds", "histogram", "How long runs took (timed runs)."
        )
        self.timers = _Family("aiotimer_timers", "gauge", "Live timers of the scheduler.")
        self.running = _Family(
            "aiotimer_scheduler_running", "gauge", "1 while the scheduler runs, else 0."
        )
        self.leader = _Family(
            "aiotimer_leader",
            "gauge",
            "1 while this process leads (per leader service), else 0.",
        )
        self.restarts = _Family(
            "aiotimer_worker_restarts", "counter", "Restarts of a worker process."
        )
        self.cluster_points = _Family(
            "aiotimer_cluster_points",
            "counter",
            "A cluster timer's grid points on this node, by result (won: run here).",
        )
        self.cluster_live = _Family(
            "aiotimer_cluster_live_nodes",
            "gauge",
            "Live nodes of the cluster, as this node sees them.",
        )
        self.cluster_refusing = _Family(
            "aiotimer_cluster_refusing",
            "gauge",
            "1 while this node's clock is too far off the store's.",
        )
        self.cluster_claim = _Family(
            "aiotimer_cluster_claim_seconds",
            "gauge",
            "Claim round-trip latency over the newest claims.",
        )
        self.cluster_errors = _Family(
            "aiotimer_cluster_store_errors",
            "counter",
            "Claim calls that failed (store unreachable...).",
        )

    @classmethod
    def of(cls, snapshots: Sequence[_Snapshot], *, in_thread: bool) -> _Families:
        """The families of these schedulers' snapshots (``in_thread``: in a rendering thread,
        which lets the loop in every millisecond; else on the loop's own thread)."""
        families = cls(_Pacer(in_thread))
        for snapshot in snapshots:
            families.add(snapshot)
        return families

    def all(self) -> list[_Family]:
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

    def render(self, openmetrics: bool) -> bytes:
        out: list[str] = []
        for family in self.all():
            family.render(out, openmetrics, self.pace)
        return "".join(out).encode()

    def add(self, snapshot: _Snapshot) -> None:
        summary = snapshot.summary
        name = summary.scheduler
        sched = ("scheduler", name)
        self.running.add(
            "aiotimer_scheduler_running", sched, 1.0 if summary.state == "running" else 0.0
        )
        self.timers.add("aiotimer_timers", sched, float(summary.timer_count))
        for service, is_leader in snapshot.leaders:
            self.leader.add("aiotimer_leader", (*sched, "service", service), float(is_leader))
        budget = _Budget(snapshot.entry.max_timer_series)
        pace = self.pace
        for label, timers in _grouped(snapshot.live, budget, pace).items():
            pace()
            labels = (*sched, "timer", label)
            numbers = _summed(timers, pace)  # an array: nothing per series for the collector
            self._add_counters(labels, numbers)
            self._add_histogram(self.lateness, labels, numbers, _LATENESS)
            self._add_histogram(self.duration, labels, numbers, _DURATION)
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

    def _add_cluster(self, sched: _Labels, service_stats: ClusterStats, budget: _Budget) -> None:
        labels = (*sched, "cluster", service_stats.cluster)
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
            self.cluster_points.add(
                "aiotimer_cluster_points_total",
                (*labels, "timer", label, "result", result),
                float(count),
            )
        self.cluster_live.add(
            "aiotimer_cluster_live_nodes", labels, float(len(service_stats.live_nodes))
        )
        self.cluster_refusing.add(
            "aiotimer_cluster_refusing", labels, float(service_stats.refusing)
        )
        for quantile, seconds in (
            ("0.5", service_stats.claim_latency_p50_s),
            ("0.99", service_stats.claim_latency_p99_s),
            ("1", service_stats.claim_latency_max_s),
        ):
            if seconds is not None:
                self.cluster_claim.add(
                    "aiotimer_cluster_claim_seconds", (*labels, "quantile", quantile), seconds
                )
        self.cluster_errors.add(
            "aiotimer_cluster_store_errors_total", labels, float(service_stats.store_errors)
        )

    def _add_workers(self, sched: _Labels, processes: ProcessesStats, budget: _Budget) -> None:
        for workers in processes.workers.values():
            for worker in workers:
                who = f"{worker.name}[{worker.index}]"
                labels = (*sched, "worker", who)
                self.restarts.add("aiotimer_worker_restarts_total", labels, float(worker.restarts))
                if worker.stats is None:
                    continue
                series: dict[str, list[TimerStats]] = {}
                for timer, stats in worker.stats.timers.items():
                    series.setdefault(budget.label(who, timer), []).append(stats)
                for label, of_label in series.items():
                    self._add_counters((*labels, "timer", label), _worker_numbers(of_label))

    def _add_counters(self, labels: _Labels, numbers: array[int]) -> None:
        """The counters and the in-flight gauge of one series (its :func:`sum_exported`)."""
        for k, family in enumerate(self.counters):
            family.add(family.name + "_total", labels, float(numbers[k]))
        self.in_flight.add("aiotimer_runs_in_flight", labels, float(numbers[6]))

    @staticmethod
    def _add_histogram(
        family: _Family, labels: _Labels, numbers: array[int], which: tuple[int, int]
    ) -> None:
        """The ``_bucket`` (cumulative), ``_count`` and ``_sum`` samples of one histogram of a
        series: its counts at ``numbers[which[0]:]``, its sum (ns) at ``numbers[which[1]]``."""
        total = 0
        bucket = family.name + "_bucket"
        first = which[0]
        for b, le in enumerate(_LE):
            total += numbers[first + b]
            family.add(bucket, (*labels, "le", le), float(total))
        family.add(family.name + "_count", labels, float(total))
        family.add(family.name + "_sum", labels, numbers[which[1]] / 1e9)


def _grouped(live: Sequence[Timer], budget: _Budget, pace: _Pacer) -> dict[str, list[Timer]]:
    """The live timers by ``timer`` label: their series, in registration order, up to the
    budget's cap; the timers of the series past it under :data:`OTHER`.

    One pass of ~0.3 µs a timer, with one list per label (not per series: 100,000 named
    timers past the cap make one list, not 100,000 for the garbage collector to promote).
    """
    groups: dict[str, list[Timer]] = {}
    group_of: dict[str, list[Timer]] = {}  # series name -> the list of its label
    for i, timer in enumerate(live):
        if not i % _CHUNK:
            pace()
        if timer.state in _DONE:  # cancelled since the snapshot: gone
            continue
        name = timer.name
        if timer.spec.name is None:  # anonymous: summed under its callback's name
            name = series_name(name, True)
        group = group_of.get(name)
        if group is None:
            label = budget.label("", name, 0)
            group = groups.get(label)
            if group is None:
                group = groups[label] = []
            group_of[name] = group
        group.append(timer)
    budget.overflow += len(groups.get(OTHER, ()))
    return groups


_CHUNK: Final = 4096
"""Timers grouped or summed between two looks at the :class:`_Pacer` (~1 ms of work)."""
_SAMPLES_CHUNK: Final = 512
_SLICE_S: Final = 0.001
_PAUSE_S: Final = 0.0001


@final
class _Pacer:
    """Lets the event loop's thread in, about every millisecond of a render's work.

    A thread holding the GIL keeps it until ``sys.getswitchinterval()`` (5 ms) after another
    thread asked for it, and the loop asks after each of its system calls: a render that never
    let go would make a timer several of those 5 ms late. Every ~1 ms of work the rendering
    thread sleeps a moment (``time.sleep(0)`` releases the GIL too, but the releasing thread
    usually takes it back before the waiting one wakes up), so the loop waits ~1 ms at most.
    The work is cut in chunks of ~1 ms (C-level passes included, which no switch interval
    interrupts). ``on=False`` (a render on the loop's own thread) never sleeps.
    """

    __slots__ = ("_next", "on")

    def __init__(self, on: bool) -> None:
        self.on = on
        self._next = time.perf_counter() + _SLICE_S

    def __call__(self) -> None:
        if self.on and time.perf_counter() >= self._next:
            time.sleep(_PAUSE_S)
            self._next = time.perf_counter() + _SLICE_S


def _summed(timers: Sequence[Timer], pace: _Pacer) -> array[int]:
    """:func:`sum_exported`, a chunk at a time."""
    numbers = sum_exported(timers[:_CHUNK])
    for start in range(_CHUNK, len(timers), _CHUNK):
        pace()
        more = sum_exported(timers[start : start + _CHUNK])
        for k, value in enumerate(more):
            numbers[k] += value
    return numbers
