"""Workload ``scrape`` (issue 12): ``/metrics`` and ``/timers`` of an aiohttp app with 100,000
timers, scraped in a loop, next to a 10 ms probe timer's lateness.

The app runs ``aiotimer.aiohttp.setup``, ``add_status_route`` and ``add_metrics_route`` on a
real socket; a thread (``urllib``) scrapes ``/metrics`` and ``/timers`` one after the other
for the whole window. The scheduler holds 100,000 timers with a history: 99,000 anonymous
ones of three callbacks and 1,000 named ones, all 1 s timers that ran once, then paused, so
the window measures the scrapes and not 100,000 runs a second (whose own batch would make the
probe late without any scrape). The probe records how late each of its runs started, first
for a window without scrapes (the baseline), then for a window of back-to-back scrapes.

Variants: ``aiotimer routes`` (what the package ships: the summary and a tuple of the timers
taken on the loop, ~1 ms; grouping, summing and the text rendered in a thread, cardinality
capped); the same after ``gc.freeze()`` (once the timers are registered), which takes the
100,000 timers out of the garbage collector's full collections: each of those walks the whole
heap (30-50 ms at 100,000 timers, in whichever thread allocated last; a scrape that left
thousands of tracked objects alive across young collections would set one off every dozen
scrapes, which is why the exporter renders from flat, untracked data); and ``on the loop``
(the same exporter rendered by ``prometheus_client.generate_latest`` in the request handler,
and the full ``stats()`` as JSON: what the routes did before, minus the unbounded
cardinality), for contrast, in the full mode only.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiotimer
import aiotimer.aiohttp
import aiotimer.prometheus

from . import _harness as h

NAME = "scrape"
ANONYMOUS = 99_000
NAMED = 1_000
PROBE_MS = 10
WINDOW_S = 10.0
QUICK_WINDOW_S = 2.0
BASELINE_S = 2.0
QUICK_BASELINE_S = 1.0
TARGET_LATE_MS = 20.0
TARGET_BODY_BYTES = 1_000_000
SHIPPED = "aiotimer routes"
FROZEN = "aiotimer routes, gc.freeze()"
ON_LOOP = "on the loop"


def _anon_a() -> None:
    pass


def _anon_b() -> None:
    pass


def _anon_c() -> None:
    pass


def variants(quick: bool) -> list[str]:
    return [SHIPPED, FROZEN] if quick else [SHIPPED, FROZEN, ON_LOOP]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 80.0 if quick else 240.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _app(scheduler: aiotimer.Scheduler, variant: str) -> Any:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    app = web.Application()
    aiotimer.aiohttp.setup(app, scheduler, grace_s=0)
    if variant != ON_LOOP:
        aiotimer.aiohttp.add_status_route(app)
        aiotimer.aiohttp.add_metrics_route(app, registry=registry)
        return app

    aiotimer.prometheus.register(scheduler, registry=registry)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def timers(request: web.Request) -> web.Response:
        return web.json_response(scheduler.stats().as_dict())

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/timers", timers)
    return app


class _Scraper(threading.Thread):
    """Scrapes both routes one after the other until told to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.seen: dict[str, list[tuple[float, int]]] = {"/metrics": [], "/timers": []}
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for path, seen in self.seen.items():
                    started = time.perf_counter()
                    with urllib.request.urlopen(self.base + path, timeout=120) as response:
                        body = response.read()
                    seen.append((time.perf_counter() - started, len(body)))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


async def _measure(variant: str, quick: bool) -> dict[str, Any]:
    from aiohttp import web

    lateness: list[int] = []

    def probe(tick: aiotimer.Tick) -> None:
        lateness.append(tick.timer.scheduler.clock.now_ns() - tick.scheduled_ns)

    scheduler = aiotimer.Scheduler(name="bench-scrape")
    callbacks = (_anon_a, _anon_b, _anon_c)
    started = time.perf_counter()
    for i in range(ANONYMOUS):
        scheduler.add_every_s(1, callbacks[i % 3])
    for i in range(NAMED):
        scheduler.add_every_s(1, _anon_a, name=f"named-{i:04}")
    register_s = time.perf_counter() - started
    port = _free_port()
    runner = web.AppRunner(_app(scheduler, variant), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        await asyncio.sleep(1.5)  # every timer ran once at 1 s: they have numbers
        for timer in tuple(scheduler.timers.values()):
            timer.pause()
        # The 100,000 registrations left a full collection pending (CPython runs one once the
        # objects promoted since the last reach a quarter of the heap): any allocation would
        # set it off, scrapes or not. Run it now, so the window measures the scrapes; the
        # table counts the full collections that happen in the window all the same.
        gc.collect()
        if variant == FROZEN:
            gc.freeze()
        scheduler.add_every_ms(PROBE_MS, probe, name="probe")
        await asyncio.sleep(QUICK_BASELINE_S if quick else BASELINE_S)
        baseline = list(lateness)
        lateness.clear()
        full_collections: list[float] = []
        gc.callbacks.append(_counter(full_collections))
        scraper = _Scraper(port)
        scraper.start()
        await asyncio.sleep(QUICK_WINDOW_S if quick else WINDOW_S)
        # let the scrape in flight finish (the "on the loop" ones take seconds)
        scraper.stop.set()
        await asyncio.to_thread(scraper.join)
        gc.callbacks.pop()
        scraped = list(lateness)
        runs = {t.name: t.runs for t in scheduler.timers.values() if t.name.startswith("named-")}
    finally:
        await runner.cleanup()
    if scraper.error is not None:
        raise RuntimeError(f"scraper failed: {scraper.error}")
    metrics, timers = scraper.seen["/metrics"], scraper.seen["/timers"]
    return {
        "timers": ANONYMOUS + NAMED,
        "register_s": register_s,
        "named_runs_min": min(runs.values()),
        "baseline": h.summarize_ns(baseline),
        "scraping": h.summarize_ns(scraped),
        "full_collections": len(full_collections),
        "full_collection_max_ms": max(full_collections, default=0.0) * 1e3,
        "metrics_scrapes": len(metrics),
        "metrics_mean_s": sum(d for d, _ in metrics) / len(metrics) if metrics else None,
        "metrics_bytes": max((n for _, n in metrics), default=None),
        "timers_scrapes": len(timers),
        "timers_mean_s": sum(d for d, _ in timers) / len(timers) if timers else None,
        "timers_bytes": max((n for _, n in timers), default=None),
    }


def _counter(into: list[float]) -> Any:
    """A ``gc.callbacks`` entry that notes how long each full collection took (s)."""
    started = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            into.append(time.perf_counter() - started[0])

    return note


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    h.progress(NAME, f"{variant}: {ANONYMOUS + NAMED:,} timers, scraping /metrics and /timers")
    return h.run_on_loop("asyncio", lambda: _measure(variant, quick))


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    rows: list[list[object]] = []
    notes: list[str] = []
    targets: list[dict[str, Any]] = []
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        base, scraping = r["baseline"], r["scraping"]
        rows.append(
            [
                variant,
                r["timers"],
                base["max_us"] / 1e3,
                scraping["p99_us"] / 1e3,
                scraping["max_us"] / 1e3,
                r["full_collections"],
                r["full_collection_max_ms"],
                r["metrics_scrapes"],
                r["metrics_mean_s"],
                r["metrics_bytes"],
                r["timers_scrapes"],
                r["timers_mean_s"],
                r["timers_bytes"],
            ]
        )
        if variant == SHIPPED:
            targets += [
                h.target(
                    "10 ms probe max lateness while scraping",
                    scraping["max_us"] / 1e3,
                    "<=",
                    TARGET_LATE_MS,
                    "ms",
                ),
                h.target(
                    "/metrics body",
                    r["metrics_bytes"] / 1e6 if r["metrics_bytes"] else None,
                    "<=",
                    TARGET_BODY_BYTES / 1e6,
                    "MB",
                ),
            ]
    tables = [
        h.format_table(
            f"scrape: {ANONYMOUS + NAMED:,} timers, /metrics and /timers scraped back to back, "
            f"lateness of a {PROBE_MS} ms probe timer (asyncio)",
            [
                "variant",
                "timers",
                "late max idle ms",
                "late p99 ms",
                "late max ms",
                "full GCs",
                "GC max ms",
                "/metrics n",
                "mean s",
                "bytes",
                "/timers n",
                "mean s",
                "bytes",
            ],
            rows,
        )
    ]
    notes.append(
        "late max idle: the probe without scrapes; late p99/max: while scraping; full GCs: "
        "the garbage collector's full collections in the scraping window (each stalls the "
        "whole process), and the longest. /timers "
        f"answers its default page ({aiotimer.aiohttp.DEFAULT_PAGE} timers) in the shipped "
        "variant, every timer in the on-the-loop one"
    )
    data = {"window_s": QUICK_WINDOW_S if quick else WINDOW_S, "rows": json.loads(json.dumps(rows))}
    return h.Report(tables, data, targets, notes)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
