"""Prometheus metrics for aiotimer schedulers (the optional extra ``prometheus``).

::

    aiotimer.prometheus.register(scheduler)              # on prometheus_client's global REGISTRY
    aiotimer.prometheus.register(scheduler, registry=r)  # or on your own

Ground rules:

* Nothing on the hot path: a collector reads ``scheduler.stats()`` and the timers' histograms
  when Prometheus scrapes, so these are the numbers of the status route (DESIGN §5) and a
  scheduler that is never scraped pays nothing.
* One collector per registry serves every scheduler registered on it, told apart by the
  ``scheduler`` label (so two schedulers may share a registry; two of the same name may not).
* Every timer series is labelled ``scheduler`` and ``timer`` (the timer's unique name); a timer
  of a worker process also has ``worker``. The label set grows with the number of timers: for
  services with thousands of timers, scrape the status route instead.
* Counters (``_total``) are the timers' own counters; they restart from 0 if a timer is
  cancelled and one of the same name added, which Prometheus reads as a counter reset.

Metrics:

=================================  =======  ================================================
``aiotimer_runs_total``            counter  runs started
``aiotimer_missed_total``          counter  grid points passed without a run of their own
``aiotimer_overlaps_total``        counter  runs skipped because earlier runs were going
``aiotimer_errors_total``          counter  runs that raised or timed out
``aiotimer_timeouts_total``        counter  runs that exceeded ``timeout_s``
``aiotimer_loop_blocks_total``     counter  inline runs that blocked the loop
``aiotimer_runs_in_flight``        gauge    asynchronous runs going on now
``aiotimer_lateness_seconds``      histo.   start of a run after its grid point
``aiotimer_duration_seconds``      histo.   run duration
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

**Worker processes.** When a worker-process service is attached, ``scheduler.stats()`` has
``"workers": {worker_name: {"restarts": int, "timers": {timer_name: TimerStats dict}}}``
(either inner key may be absent); that is what the worker series are read from, so workers'
numbers come through the parent and no multiprocess directory is needed.

**Threads.** Collect on the event loop's thread, as ``aiotimer.aiohttp.add_metrics_route``
does: schedulers are not thread-safe. ``prometheus_client.start_http_server`` collects from a
thread of its own, where a scrape racing a timer being added or cancelled can fail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, final
from weakref import WeakKeyDictionary

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ._scheduler import Scheduler
from ._stats import BUCKET_UPPER_NS

__all__ = ["register", "unregister"]

_COUNTERS: Final = (
    ("runs", "aiotimer_runs", "Timer runs started."),
    ("missed", "aiotimer_missed", "Grid points that passed without a run of their own."),
    ("overlaps", "aiotimer_overlaps", "Runs skipped because earlier runs were still going."),
    ("errors", "aiotimer_errors", "Runs that raised or timed out."),
    ("timeouts", "aiotimer_timeouts", "Runs that exceeded their timeout_s."),
    ("loop_blocks", "aiotimer_loop_blocks", "Inline sync runs that blocked the event loop."),
)
_LE: Final = (*(repr(upper / 1e9) for upper in BUCKET_UPPER_NS[:-1]), "+Inf")
"""The ``le`` of each bucket: its exclusive upper bound in seconds (the last is infinity)."""


def register(scheduler: Scheduler, *, registry: CollectorRegistry | None = None) -> None:
    """Export ``scheduler``'s metrics on ``registry`` (prometheus_client's global ``REGISTRY``
    by default), from now until :func:`unregister`.

    :raises TypeError: if ``scheduler`` is not a :class:`~aiotimer.Scheduler`
    :raises ValueError: if a scheduler of that name is already registered on ``registry``,
        or another collector there already exports ``aiotimer_*`` names
    """
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"register() takes a Scheduler, got {scheduler!r}")
    registry = REGISTRY if registry is None else registry
    collector = _collectors.get(registry)
    if collector is None:
        collector = _SchedulerCollector()
        collector.add(scheduler)
        registry.register(collector)
        _collectors[registry] = collector
        return
    collector.add(scheduler)


def unregister(scheduler: Scheduler, *, registry: CollectorRegistry | None = None) -> None:
    """Stop exporting ``scheduler``'s metrics on ``registry``.

    :raises ValueError: if ``scheduler`` is not registered there
    """
    registry = REGISTRY if registry is None else registry
    collector = _collectors.get(registry)
    if collector is None or not collector.remove(scheduler):
        raise ValueError(f"scheduler {scheduler.name!r} is not registered on {registry!r}")
    if not collector.schedulers:
        registry.unregister(collector)
        del _collectors[registry]


@final
class _SchedulerCollector:
    """A prometheus_client collector for the schedulers registered on one registry."""

    __slots__ = ("schedulers",)

    def __init__(self) -> None:
        self.schedulers: dict[str, Scheduler] = {}

    def add(self, scheduler: Scheduler) -> None:
        other = self.schedulers.get(scheduler.name)
        if other is scheduler:
            raise ValueError(f"scheduler {scheduler.name!r} is already registered")
        if other is not None:
            raise ValueError(
                f"another scheduler named {scheduler.name!r} is already registered; "
                "scheduler names label the metrics, so they must differ"
            )
        self.schedulers[scheduler.name] = scheduler

    def remove(self, scheduler: Scheduler) -> bool:
        if self.schedulers.get(scheduler.name) is not scheduler:
            return False
        del self.schedulers[scheduler.name]
        return True

    def describe(self) -> list[Metric]:
        """The families, without samples: lets the registry refuse duplicate names."""
        return _Families().all()

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for scheduler in tuple(self.schedulers.values()):
            families.add_scheduler(scheduler)
        yield from families.all()


_collectors: WeakKeyDictionary[CollectorRegistry, _SchedulerCollector] = WeakKeyDictionary()


class _Families:
    """One scrape's metric families, filled scheduler by scheduler."""

    def __init__(self) -> None:
        self.counters = {key: CounterMetricFamily(name, doc) for key, name, doc in _COUNTERS}
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
            "aiotimer_cluster_refusing",
            "1 while this node's wall clock is too far off the store's.",
        )
        self.cluster_claim = GaugeMetricFamily(
            "aiotimer_cluster_claim_seconds", "Claim round-trip latency over the newest claims."
        )
        self.cluster_errors = CounterMetricFamily(
            "aiotimer_cluster_store_errors", "Claim calls that failed (store unreachable...)."
        )

    def all(self) -> list[Metric]:
        families = [
            *self.counters.values(),
            self.in_flight,
            self.lateness,
            self.duration,
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

    def add_scheduler(self, scheduler: Scheduler) -> None:
        stats = scheduler.stats()
        sched = {"scheduler": scheduler.name}
        self.running.add_sample(
            "aiotimer_scheduler_running", sched, 1.0 if scheduler.running else 0.0
        )
        live = scheduler.timers
        for name, typed in stats.timers.items():
            labels = {**sched, "timer": name}
            self._add_timer(labels, typed.as_dict())
            lateness, duration = live[name].histograms()  # the same registry, same moment
            self.lateness.add_metric(
                (scheduler.name, name), _cumulative(lateness.counts), lateness.sum_ns / 1e9
            )
            self.duration.add_metric(
                (scheduler.name, name), _cumulative(duration.counts), duration.sum_ns / 1e9
            )
        for service in scheduler.services.values():
            is_leader = getattr(service, "is_leader", None)
            if isinstance(is_leader, bool):
                self.leader.add_sample(
                    "aiotimer_leader", {**sched, "service": service.name}, float(is_leader)
                )
        for service_stats in stats.services.values():
            self._add_cluster(sched, service_stats)
        processes = stats.services.get("aiotimer.process")
        workers = processes.as_dict().get("workers") if processes is not None else None
        if isinstance(workers, Mapping):
            for worker, info in workers.items():
                self._add_worker(sched, str(worker), info)

    def _add_cluster(self, sched: dict[str, str], service_stats: object) -> None:
        from .cluster._cluster import ClusterStats  # only when a Cluster is attached

        if not isinstance(service_stats, ClusterStats):
            return
        labels = {**sched, "cluster": service_stats.cluster}
        for timer, t in service_stats.timers.items():
            for result, count in (
                ("won", t.won),
                ("elsewhere", t.run_elsewhere),
                ("store_error", t.store_errors),
                ("refused_skew", t.refused_skew),
            ):
                self.cluster_points.add_sample(
                    "aiotimer_cluster_points_total",
                    {**labels, "timer": timer, "result": result},
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

    def _add_worker(self, sched: dict[str, str], worker: str, info: Any) -> None:
        if not isinstance(info, Mapping):
            return
        labels = {**sched, "worker": worker}
        restarts = info.get("restarts")
        if isinstance(restarts, int):
            self.restarts.add_sample("aiotimer_worker_restarts_total", labels, float(restarts))
        timers = info.get("timers")
        if isinstance(timers, Mapping):
            for name, timer_stats in timers.items():
                if isinstance(timer_stats, Mapping):
                    self._add_timer({**labels, "timer": str(name)}, timer_stats)

    def _add_timer(self, labels: dict[str, str], stats: Mapping[str, Any]) -> None:
        for key, family in self.counters.items():
            value = stats.get(key)
            if isinstance(value, int):
                family.add_sample(family.name + "_total", labels, float(value))
        running = stats.get("running")
        if isinstance(running, int):
            self.in_flight.add_sample("aiotimer_runs_in_flight", labels, float(running))


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    """``(le, count of values in this bucket or below)`` from per-bucket counts."""
    total = 0
    buckets = []
    for le, count in zip(_LE, counts, strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets
