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
``aiotimer_lateness_seconds``      gauge    start of a run after its grid point (histogram)
``aiotimer_duration_seconds``      gauge    run durations (histogram)
``aiotimer_scheduler_running``     gauge    1 while the scheduler runs
``aiotimer_leader``                gauge    1 while a leader service leads (per service)
``aiotimer_worker_restarts_total`` counter  restarts of each worker process
=================================  =======  ================================================

**Histograms are gauge histograms.** aiotimer keeps a log2 histogram per timer in bounded memory
and halves it when a bucket fills up, so its buckets are a current, recent-weighted
distribution that can go down, not ever-growing counters. They are exposed as OpenMetrics
*gauge histograms* (``# TYPE ... histogram`` in the Prometheus text format) with the log2
bucket bounds ``le`` = 2**k ns from 16.4 µs to 1.07 s, then ``+Inf`` (a value of exactly
2**k ns counts one bucket up; no other value crosses a bound). There is no ``_gsum`` (aiotimer
keeps no sums), hence no ``_gcount`` either: the ``+Inf`` bucket is the count. Query them
without ``rate()``: ``histogram_quantile(0.99, sum by (le) (aiotimer_lateness_seconds_bucket))``.
Timers of worker processes have counters only.

**Worker processes.** When a worker-process service is attached, ``scheduler.stats()`` has
``"workers": {worker_name: {"restarts": int, "timers": {timer_name: TimerStats dict}}}``
(either inner key may be absent); that is what the worker series are read from, so workers'
numbers come through the parent and no multiprocess directory is needed.

**Threads.** Collect on the event loop's thread, as ``aiotimer.aiohttp.add_metrics_route``
does. ``prometheus_client.start_http_server`` scrapes from a thread of its own; it works, but a
scrape that races a timer being added or cancelled can fail (that scrape only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, final
from weakref import WeakKeyDictionary

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ._scheduler import Scheduler
from ._stats import DURATION, N_BUCKETS
from ._timer import Timer

__all__ = ["register", "unregister"]

logger = logging.getLogger("aiotimer.prometheus")

_COUNTERS: Final = (
    ("runs", "aiotimer_runs", "Timer runs started."),
    ("missed", "aiotimer_missed", "Grid points that passed without a run of their own."),
    ("overlaps", "aiotimer_overlaps", "Runs skipped because earlier runs were still going."),
    ("errors", "aiotimer_errors", "Runs that raised or timed out."),
    ("timeouts", "aiotimer_timeouts", "Runs that exceeded their timeout_s."),
    ("loop_blocks", "aiotimer_loop_blocks", "Inline sync runs that blocked the event loop."),
)
_FIRST_BOUND: Final = 14
"""The smallest finite bucket bound is 2**14 ns (16.4 µs); below it, values are pooled."""
_BOUNDS: Final = tuple((k, repr(2**k / 1e9)) for k in range(_FIRST_BOUND, N_BUCKETS - 1))
"""(log2 bucket, ``le``): bucket b holds values of bit_length b, all < 2**b ns, so the cumulative
count up to b counts the values <= 2**b ns (but 2**b itself). The last bucket pools everything
from 2**30 ns up, so it maps to +Inf only."""


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
        self.lateness = Metric(
            "aiotimer_lateness_seconds",
            "How late runs started after their grid point (gauge histogram: recent-weighted, "
            "log2 buckets).",
            "gaugehistogram",
        )
        self.duration = Metric(
            "aiotimer_duration_seconds",
            "How long runs took (gauge histogram: recent-weighted, log2 buckets).",
            "gaugehistogram",
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

    def all(self) -> list[Metric]:
        return [
            *self.counters.values(),
            self.in_flight,
            self.lateness,
            self.duration,
            self.running,
            self.leader,
            self.restarts,
        ]

    def add_scheduler(self, scheduler: Scheduler) -> None:
        stats = scheduler.stats()
        sched = {"scheduler": scheduler.name}
        self.running.add_sample(
            "aiotimer_scheduler_running", sched, 1.0 if scheduler.running else 0.0
        )
        live = scheduler.timers
        for name, timer_stats in stats["timers"].items():
            labels = {**sched, "timer": name}
            self._add_timer(labels, timer_stats)
            lateness, duration = _log2_counts(live[name])  # the same registry, same moment
            _add_histogram(self.lateness, labels, lateness)
            _add_histogram(self.duration, labels, duration)
        for service in scheduler.services.values():
            is_leader = getattr(service, "is_leader", None)
            if isinstance(is_leader, bool):
                self.leader.add_sample(
                    "aiotimer_leader", {**sched, "service": service.name}, float(is_leader)
                )
        workers = stats.get("workers")
        if isinstance(workers, Mapping):
            for worker, info in workers.items():
                self._add_worker(sched, str(worker), info)

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


def _add_histogram(family: Metric, labels: dict[str, str], counts: Sequence[int]) -> None:
    bucket = family.name + "_bucket"
    cumulative = sum(counts[:_FIRST_BOUND])
    for k, le in _BOUNDS:
        cumulative += counts[k]
        family.add_sample(bucket, {**labels, "le": le}, float(cumulative))
    family.add_sample(bucket, {**labels, "le": "+Inf"}, float(sum(counts)))


def _log2_counts(timer: Timer) -> tuple[Sequence[int], Sequence[int]]:
    """The raw log2 bucket weights of a timer's lateness and duration histograms.

    The one place that reads the core's histogram slab (layout in ``aiotimer._stats``), until
    the core offers it publicly (proposed: ``Timer.histogram_counts()``).
    """
    counts = timer.scheduler._hist.counts
    base = timer._hist
    return (
        counts[base : base + N_BUCKETS],
        counts[base + DURATION : base + DURATION + N_BUCKETS],
    )
