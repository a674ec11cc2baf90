"""aiotimer.prometheus: scheduler stats as Prometheus metrics; the aiohttp /metrics route."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

import aiotimer.process
import aiotimer.prometheus
from aiotimer import Overlap, Scheduler
from aiotimer.aiohttp import add_metrics_route, setup
from aiotimer.testing import VirtualClock

TIMER_METRICS = (
    "aiotimer_runs_total",
    "aiotimer_missed_total",
    "aiotimer_overlaps_total",
    "aiotimer_errors_total",
    "aiotimer_timeouts_total",
    "aiotimer_loop_blocks_total",
    "aiotimer_runs_in_flight",
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Family name -> type, as a Prometheus server parses the text format."""
    text = generate_latest(registry).decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    """``async with scheduler`` without a grace period at the end: virtual time stands still
    unless the test moves it, so a grace period would never pass for a run in flight."""
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop(0)


# -- names, types, labels ------------------------------------------------------------------


@pytest.mark.anyio
async def test_metrics_are_named_by_prometheus_conventions_and_labelled_by_timer(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    scheduler.add_every_ms(20, lambda: None, name="rtp")
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(1.0)
        assert families(registry) == {
            "aiotimer_runs": "counter",
            "aiotimer_missed": "counter",
            "aiotimer_overlaps": "counter",
            "aiotimer_errors": "counter",
            "aiotimer_timeouts": "counter",
            "aiotimer_loop_blocks": "counter",
            "aiotimer_runs_in_flight": "gauge",
            "aiotimer_lateness_seconds": "histogram",
            "aiotimer_duration_seconds": "histogram",
            "aiotimer_timers": "gauge",
            "aiotimer_scheduler_running": "gauge",
            "aiotimer_leader": "gauge",
            "aiotimer_worker_restarts": "counter",
        }
        for name in TIMER_METRICS:
            assert value(registry, name, scheduler="svc", timer="rtp") is not None, name
        assert value(registry, "aiotimer_runs_total", scheduler="svc", timer="rtp") == 50


@pytest.mark.anyio
async def test_the_exposition_parses_as_openmetrics_too(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    scheduler = Scheduler(clock=virtual_clock)
    scheduler.add_every_ms(20, lambda: None, name="rtp")
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(0.1)
        parsed = {
            f.name: f.type for f in openmetrics_families(openmetrics_latest(registry).decode())
        }
    assert parsed["aiotimer_lateness_seconds"] == "histogram"
    assert parsed["aiotimer_runs"] == "counter"


# -- values --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_counters_are_the_timers_own_counters(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    async def slow() -> None:  # 250 ms runs every 100 ms: overlaps
        await virtual_clock.sleep(0.25)

    scheduler = Scheduler(clock=virtual_clock, name="s")
    scheduler.add_every_ms(100, broken, name="broken")
    scheduler.add_every_ms(100, slow, name="slow", overlap=Overlap.SKIP)
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(1.0)
        for timer in scheduler.timers.values():
            stats = timer.stats
            labels = {"scheduler": "s", "timer": timer.name}
            assert value(registry, "aiotimer_runs_total", **labels) == stats.runs
            assert value(registry, "aiotimer_errors_total", **labels) == stats.errors
            assert value(registry, "aiotimer_overlaps_total", **labels) == stats.overlaps
            assert value(registry, "aiotimer_runs_in_flight", **labels) == stats.running
        assert value(registry, "aiotimer_errors_total", scheduler="s", timer="broken") == 10
        assert value(registry, "aiotimer_overlaps_total", scheduler="s", timer="slow") == 6
        assert value(registry, "aiotimer_runs_in_flight", scheduler="s", timer="slow") == 1


@pytest.mark.anyio
async def test_histograms_have_log2_ms_scale_buckets_holding_the_runs(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    # Each run takes 3 ms of virtual time: between the bounds 2**21 ns (2.1 ms) and 2**22 ns
    # (4.2 ms). Runs start on time: lateness 0, in the first bucket.
    async def three_ms() -> None:
        await virtual_clock.sleep(0.003)

    scheduler = Scheduler(clock=virtual_clock, name="s")
    scheduler.add_every_ms(10, three_ms, name="t")
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(0.2)
        timer = scheduler.get_timer("t")
        assert (timer.runs, timer.running) == (20, 1)
        runs = 19  # recorded when they end: the 20th is in flight
        labels = {"scheduler": "s", "timer": "t"}

        def bucket(metric: str, le: str) -> float | None:
            return value(registry, f"aiotimer_{metric}_seconds_bucket", le=le, **labels)

        assert bucket("duration", "0.002097152") == 0
        assert bucket("duration", "0.004194304") == runs
        assert bucket("duration", "+Inf") == runs
        assert bucket("lateness", "1.6384e-05") == runs
        assert bucket("lateness", "1.073741824") == runs
        assert value(registry, "aiotimer_duration_seconds_count", **labels) == runs
        assert value(registry, "aiotimer_duration_seconds_sum", **labels) == pytest.approx(
            runs * 0.003
        )

        text = generate_latest(registry).decode()
        bounds = [
            s.labels["le"]
            for f in text_string_to_metric_families(text)
            if f.name == "aiotimer_lateness_seconds"
            for s in f.samples
            if s.name.endswith("_bucket")
        ]
        assert bounds[0] == "1.6384e-05"
        assert bounds[-3:] == ["0.134217728", "1.073741824", "+Inf"]
        assert len(bounds) == 16  # 2**14 .. 2**27 ns, 2**30 ns, +Inf


@pytest.mark.anyio
async def test_the_scheduler_running_gauge_follows_the_lifecycle(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="s")
    aiotimer.prometheus.register(scheduler, registry=registry)
    assert value(registry, "aiotimer_scheduler_running", scheduler="s") == 0
    async with running(scheduler):
        assert value(registry, "aiotimer_scheduler_running", scheduler="s") == 1
    assert value(registry, "aiotimer_scheduler_running", scheduler="s") == 0


@pytest.mark.anyio
async def test_without_workers_there_is_no_restart_series(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="s")
    aiotimer.prometheus.register(scheduler, registry=registry)
    text = generate_latest(registry).decode()
    assert "aiotimer_worker_restarts_total{" not in text


@pytest.mark.anyio
@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
async def test_a_leader_service_exposes_its_role(
    virtual_clock: VirtualClock, registry: CollectorRegistry, tmp_path: Path
) -> None:
    from aiotimer.leader import LeaderLock

    lock_file = tmp_path / "t.lock"
    a, b = Scheduler(clock=virtual_clock, name="a"), Scheduler(clock=virtual_clock, name="b")
    for s in (a, b):
        s.add_service(LeaderLock(lock_file, name="host-leader"))
        aiotimer.prometheus.register(s, registry=registry)
    async with running(a), running(b):
        assert value(registry, "aiotimer_leader", scheduler="a", service="host-leader") == 1
        assert value(registry, "aiotimer_leader", scheduler="b", service="host-leader") == 0


# -- registration --------------------------------------------------------------------------


def test_several_schedulers_share_a_registry_by_name(registry: CollectorRegistry) -> None:
    a, b = Scheduler(name="a"), Scheduler(name="b")
    a.add_every_s(1, lambda: None, name="t")
    b.add_every_s(1, lambda: None, name="t")
    aiotimer.prometheus.register(a, registry=registry)
    aiotimer.prometheus.register(b, registry=registry)
    assert value(registry, "aiotimer_runs_total", scheduler="a", timer="t") == 0
    assert value(registry, "aiotimer_runs_total", scheduler="b", timer="t") == 0

    aiotimer.prometheus.unregister(a, registry=registry)
    assert value(registry, "aiotimer_runs_total", scheduler="a", timer="t") is None
    assert value(registry, "aiotimer_runs_total", scheduler="b", timer="t") == 0
    aiotimer.prometheus.unregister(b, registry=registry)
    assert families(registry) == {}


def test_two_schedulers_of_one_name_on_one_registry_are_refused(
    registry: CollectorRegistry,
) -> None:
    aiotimer.prometheus.register(Scheduler(name="svc"), registry=registry)
    with pytest.raises(ValueError, match="another scheduler named 'svc' is already registered"):
        aiotimer.prometheus.register(Scheduler(name="svc"), registry=registry)


def test_registering_a_scheduler_twice_is_refused(registry: CollectorRegistry) -> None:
    scheduler = Scheduler(name="svc")
    aiotimer.prometheus.register(scheduler, registry=registry)
    with pytest.raises(ValueError, match="scheduler 'svc' is already registered"):
        aiotimer.prometheus.register(scheduler, registry=registry)


def test_unregistering_an_unknown_scheduler_is_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="scheduler 'svc' is not registered"):
        aiotimer.prometheus.unregister(Scheduler(name="svc"), registry=registry)


def test_a_clash_with_other_aiotimer_metrics_on_the_registry_is_refused(
    registry: CollectorRegistry,
) -> None:
    class Foreign:
        def collect(self) -> list[CounterMetricFamily]:
            return [CounterMetricFamily("aiotimer_runs", "not ours")]

        describe = collect

    registry.register(Foreign())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        aiotimer.prometheus.register(Scheduler(), registry=registry)


def test_the_default_registry_is_prometheus_clients_global_one() -> None:
    scheduler = Scheduler(name="aiotimer-test-default-registry")
    aiotimer.prometheus.register(scheduler)
    try:
        assert (
            REGISTRY.get_sample_value(
                "aiotimer_scheduler_running", {"scheduler": "aiotimer-test-default-registry"}
            )
            == 0
        )
    finally:
        aiotimer.prometheus.unregister(scheduler)


def test_register_takes_a_scheduler(registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError, match="register\\(\\) takes a Scheduler, got 'svc'"):
        aiotimer.prometheus.register("svc", registry=registry)  # type: ignore[arg-type]


# -- the aiohttp route ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_metrics_route_exposes_the_metric_names_while_the_app_runs(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    scheduler.add_every_ms(20, lambda: None, name="rtp")
    app = web.Application()
    setup(app, scheduler)
    add_metrics_route(app, registry=registry)
    assert families(registry) == {}  # registered while the app runs only

    client = await aiohttp_client(app)
    await virtual_clock.advance(1.0)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    for name in (*TIMER_METRICS, "aiotimer_lateness_seconds_bucket"):
        assert f"{name}{{" in text, name
    assert 'aiotimer_runs_total{scheduler="svc",timer="rtp"} 50.0' in text

    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert "# TYPE aiotimer_lateness_seconds histogram" in await response.text()
    assert (await client.post("/metrics")).status == 405

    await client.close()
    assert families(registry) == {}


@pytest.mark.parametrize("path", ["/metrics", "/timers"])
def test_a_metrics_path_that_is_taken_is_refused(path: str, registry: CollectorRegistry) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    setup(app, Scheduler())
    app.router.add_get(path, handler)
    with pytest.raises(ValueError, match=f"add_metrics_route: path '{path}' is already routed"):
        add_metrics_route(app, path, registry=registry)


def test_the_metrics_route_before_setup_is_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(RuntimeError, match=r"add_metrics_route: app .* has no scheduler"):
        add_metrics_route(web.Application(), registry=registry)


# -- cardinality ---------------------------------------------------------------------------


def per_call() -> None:
    pass


def other_per_call() -> None:
    pass


@pytest.mark.anyio
async def test_anonymous_timers_are_summed_under_their_callback_and_named_ones_kept(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    for _ in range(3):
        scheduler.add_every_ms(100, per_call)  # test_prometheus.per_call, #2, #3
    scheduler.add_every_ms(100, other_per_call)
    scheduler.add_every_ms(100, per_call, name="per_call#9")  # named: its own series
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(1.0)
        body, _ = await aiotimer.prometheus.generate(registry)
    runs = {
        s.labels["timer"]: s.value
        for f in text_string_to_metric_families(body.decode())
        if f.name == "aiotimer_runs"
        for s in f.samples
    }
    assert runs == {
        f"{__name__}.per_call": 30,  # three timers, ten runs each
        f"{__name__}.other_per_call": 10,
        "per_call#9": 10,
    }
    assert value(registry, "aiotimer_timers", scheduler="svc") == 5
    assert (
        value(
            registry,
            "aiotimer_lateness_seconds_count",
            scheduler="svc",
            timer=f"{__name__}.per_call",
        )
        == 30
    )


@pytest.mark.anyio
async def test_timer_series_past_the_cap_are_summed_under_other_with_one_warning(
    virtual_clock: VirtualClock, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    for name in ("a", "b", "c", "d"):
        scheduler.add_every_ms(100, per_call, name=name)
    aiotimer.prometheus.register(scheduler, registry=registry, max_timer_series=2)
    async with running(scheduler):
        await virtual_clock.advance(1.0)
        with caplog.at_level(logging.WARNING, logger="aiotimer.prometheus"):
            await aiotimer.prometheus.generate(registry)
            await aiotimer.prometheus.generate(registry)
    assert value(registry, "aiotimer_runs_total", scheduler="svc", timer="a") == 10
    assert value(registry, "aiotimer_runs_total", scheduler="svc", timer="b") == 10
    assert value(registry, "aiotimer_runs_total", scheduler="svc", timer="c") is None
    assert value(registry, "aiotimer_runs_total", scheduler="svc", timer="_other") == 20
    warnings = [r for r in caplog.records if r.name == "aiotimer.prometheus"]
    assert len(warnings) == 1
    assert "max_timer_series=2" in warnings[0].getMessage()
    assert 'timer="_other"' in warnings[0].getMessage()


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, None])
def test_a_bad_series_cap_is_refused(registry: CollectorRegistry, cap: object) -> None:
    with pytest.raises(ValueError, match=r"scheduler 'svc': max_timer_series must be an int >= 1"):
        aiotimer.prometheus.register(
            Scheduler(name="svc"),
            registry=registry,
            max_timer_series=cap,  # type: ignore[arg-type]
        )


@pytest.mark.anyio
async def test_twenty_thousand_per_call_timers_make_a_small_exposition(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    for _ in range(20_000):
        scheduler.add_every_s(1, per_call)
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(2.0)
        body, _ = await aiotimer.prometheus.generate(registry)
    assert len(body) < 20_000  # was 96 MB: one series per timer
    assert f'aiotimer_runs_total{{scheduler="svc",timer="{__name__}.per_call"}} 40000.0' in (
        body.decode()
    )


# -- scrapes and the loop --------------------------------------------------------------------


@pytest.mark.anyio
async def test_generate_renders_in_a_worker_thread(registry: CollectorRegistry) -> None:
    threads: list[int] = []

    class Probe:
        def collect(self) -> list[CounterMetricFamily]:
            threads.append(threading.get_ident())
            return []

        def describe(self) -> list[CounterMetricFamily]:
            return []

    registry.register(Probe())
    aiotimer.prometheus.register(Scheduler(name="svc"), registry=registry)
    body, content_type = await aiotimer.prometheus.generate(registry)
    assert threads
    assert threads[0] != threading.get_ident()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"aiotimer_scheduler_running" in body


@pytest.mark.anyio
async def test_generate_copies_many_timers_in_slices_and_lets_the_loop_run_between(
    registry: CollectorRegistry,
) -> None:
    scheduler = Scheduler(name="svc")
    for _ in range(20_000):
        scheduler.add_every_s(1, per_call)
    aiotimer.prometheus.register(scheduler, registry=registry)
    gaps: list[float] = []

    async def loop_watch() -> None:
        last = time.perf_counter()
        while True:
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_watch)
        await anyio.lowlevel.checkpoint()
        started = time.perf_counter()
        await aiotimer.prometheus.generate(registry)
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    # The loop kept turning during the scrape: on the loop it only takes a tuple of the timers
    # (50 ms: a loaded CI machine; reading 20,000 timers on the loop took 100+ ms).
    assert len(gaps) > 10
    assert max(gaps) < max(0.05, elapsed / 3), (max(gaps), elapsed)


@pytest.mark.anyio
@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_generate_renders_what_prometheus_client_renders_byte_for_byte(
    virtual_clock: VirtualClock, registry: CollectorRegistry, accept: str
) -> None:
    """generate() writes the exposition itself (no prometheus_client Sample objects for the
    garbage collector): it must be what prometheus_client's encoders make of the same
    families, escapes included."""
    from prometheus_client.exposition import choose_encoder

    scheduler = Scheduler(clock=virtual_clock, name='svc "one"\\')

    def flaky(tick: aiotimer.Tick) -> None:
        if tick.ticks_raw % 30 == 0:
            raise ValueError("every third")

    scheduler.add_every_ms(10, flaky, name='a "quoted" \\ name')
    scheduler.add_every_ms(25, lambda: None, name="plain")
    for _ in range(50):
        scheduler.add_every_ms(7, per_call)
    aiotimer.prometheus.register(scheduler, registry=registry, max_timer_series=2)
    encoder, _ = choose_encoder(accept)
    async with running(scheduler):
        await virtual_clock.advance(0.5)
        body, content_type = await aiotimer.prometheus.generate(registry, accept=accept)
        reference = encoder(registry)
    assert body == reference
    assert content_type.startswith("application/openmetrics" if accept else "text/plain")
    assert b'timer="_other"' in body  # the cap, rendered too
    assert b'timer="a \\"quoted\\" \\\\ name"' in body


@pytest.mark.anyio
@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_generate_renders_the_other_collectors_of_the_registry_too(
    registry: CollectorRegistry, accept: str
) -> None:
    from prometheus_client import Counter

    Counter("app_requests", "Requests.", registry=registry).inc(3)
    aiotimer.prometheus.register(Scheduler(name="svc"), registry=registry)
    body, _ = await aiotimer.prometheus.generate(registry, accept=accept)
    text = body.decode()
    parse = openmetrics_families if accept else text_string_to_metric_families
    names = {family.name for family in parse(text)}
    assert {"app_requests", "aiotimer_scheduler_running"} <= names
    assert text.count("# EOF") == (1 if accept else 0)
    assert text.endswith("# EOF\n") == bool(accept)


@pytest.mark.anyio
async def test_back_to_back_scrapes_of_many_timers_set_off_no_full_collection(
    registry: CollectorRegistry,
) -> None:
    """A full collection walks every object of the process (30-50 ms at 100,000 timers): a
    scrape must not leave thousands of tracked objects alive across young collections, or
    back-to-back scrapes set one off every dozen scrapes (it did, with prometheus_client's
    Sample objects)."""
    import gc

    scheduler = Scheduler(name="svc")
    for i in range(20_000):
        scheduler.add_every_s(1, per_call, name=f"t{i}" if i % 10 == 0 else None)
    aiotimer.prometheus.register(scheduler, registry=registry)
    full: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    await aiotimer.prometheus.generate(registry)
    gc.collect()  # what the 20,000 registrations left pending
    gc.callbacks.append(note)
    try:
        for _ in range(40):
            await aiotimer.prometheus.generate(registry)
    finally:
        gc.callbacks.remove(note)
    assert full == []


# -- worker processes, through the parent ------------------------------------------------------


@pytest.mark.anyio
async def test_an_inline_worker_timers_are_exported_through_the_parent(
    virtual_clock: VirtualClock, registry: CollectorRegistry
) -> None:
    import process_targets as pt

    from aiotimer.process import TimerProcess

    proc = TimerProcess("wp", workers=2)
    proc.add_every_ms(20, pt.noop, name="wt")
    scheduler = Scheduler(clock=virtual_clock, name="parent")
    proc.run_inline(scheduler)
    aiotimer.prometheus.register(scheduler, registry=registry)
    async with running(scheduler):
        await virtual_clock.advance(1.0)
        for index in (0, 1):
            labels = {"scheduler": "parent", "worker": f"wp[{index}]"}
            assert value(registry, "aiotimer_runs_total", **labels, timer="wt") == 50
            assert value(registry, "aiotimer_errors_total", **labels, timer="wt") == 0
            assert value(registry, "aiotimer_worker_restarts_total", **labels) == 0


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_real_worker_runs_and_restarts_are_exported_through_the_parent(
    registry: CollectorRegistry,
) -> None:
    import process_targets as pt

    from aiotimer.process import TimerProcess

    proc = TimerProcess("wp", heartbeat_s=0.1, heartbeat_timeout_s=5, stats_interval_s=0.1)
    proc.add_every_ms(20, pt.noop, name="wt")
    scheduler = Scheduler(name="parent")
    aiotimer.process.attach(scheduler, proc)
    aiotimer.prometheus.register(scheduler, registry=registry)
    labels = {"scheduler": "parent", "worker": "wp[0]"}

    async def exported(name: str, **more: str) -> float | None:
        body, _ = await aiotimer.prometheus.generate(registry)
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == {**labels, **more}:
                    return sample.value
        return None

    async def until(name: str, pred: Callable[[float | None], bool], **more: str) -> None:
        for _ in range(400):
            if pred(await exported(name, **more)):
                return
            await anyio.sleep(0.05)
        raise AssertionError(f"{name} {more} never matched")

    with anyio.fail_after(30):
        async with scheduler:
            pid = proc.workers[0].pid
            assert pid is not None
            await until("aiotimer_runs_total", lambda runs: (runs or 0) >= 5, timer="wt")
            assert await exported("aiotimer_worker_restarts_total") == 0
            os.kill(pid, signal.SIGKILL)
            await until("aiotimer_worker_restarts_total", lambda restarts: restarts == 1)
            new_pid = proc.workers[0].pid
            # the restarted worker's own numbers arrive: its runs start again from 0
            await until("aiotimer_runs_total", lambda runs: (runs or 0) >= 1, timer="wt")
            assert proc.workers[0].pid == new_pid != pid
            await scheduler.stop(1)


@pytest.mark.asyncio
async def test_scraping_both_routes_of_a_big_scheduler_never_stalls_the_loop(
    aiohttp_client: AiohttpClient, registry: CollectorRegistry
) -> None:
    from aiotimer.aiohttp import add_status_route

    scheduler = Scheduler(name="svc")
    for _ in range(20_000):
        scheduler.add_every_s(3600, per_call)
    app = web.Application()
    setup(app, scheduler)
    add_status_route(app)
    add_metrics_route(app, registry=registry)
    client = await aiohttp_client(app)
    gaps: list[float] = []

    async def loop_watch() -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_watch)
        for _ in range(2):
            metrics = await client.get("/metrics")
            assert metrics.status == 200
            assert len(await metrics.read()) < 20_000
            timers = await client.get("/timers")
            assert (await timers.json())["timer_count"] == 20_000
        tg.cancel_scope.cancel()
    # was 7.9 s for /metrics of 20,000 timers (one series each, rendered on the loop); 50 ms
    # leaves room for a loaded CI machine (and a full garbage collection)
    assert max(gaps) < 0.05, max(gaps)


@pytest.mark.anyio
async def test_generate_reads_each_timer_off_the_loop(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the loop a scrape only takes the summary and the list of timers; every timer's
    numbers are read in the rendering thread."""
    import threading

    scheduler = Scheduler(name="svc")
    scheduler.add_every_s(1, per_call, name="t")
    aiotimer.prometheus.register(scheduler, registry=registry)
    readers: list[str] = []
    sum_exported = aiotimer.prometheus.sum_exported

    def sum_and_note(timers: Sequence[aiotimer.Timer]) -> array[int]:
        readers.append(threading.current_thread().name)
        return sum_exported(timers)

    monkeypatch.setattr(aiotimer.prometheus, "sum_exported", sum_and_note)
    loop_thread = threading.current_thread().name
    body, _ = await aiotimer.prometheus.generate(registry)
    assert b'aiotimer_runs_total{scheduler="svc",timer="t"} 0.0' in body
    assert readers
    assert loop_thread not in readers
