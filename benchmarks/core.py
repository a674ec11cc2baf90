"""Workload ``core`` (issue 2): 100,000 periodic 1 s timers with no-op sync callbacks.

aiotimer (``Scheduler.add_every_s(1, noop)``) next to the same workload built from raw
``loop.call_at`` chains (each callback records its lateness and re-arms itself at ``t + 1`` on an
absolute grid), on asyncio and on uvloop, each variant in a process of its own.

What is measured, and how:

* registration: wall time of the ``n`` registrations (scheduler already running, the garbage
  collector on, as in a service), made in a plain loop as a user would, per timer;
* bytes per timer: RSS delta over the registrations (includes allocator slack; the ``memory``
  workload gives exact tracemalloc numbers);
* CPU: ``getrusage`` user + system seconds over a window of whole seconds that starts and ends
  half-way between two grid points, so it holds exactly one dispatch per second;
* fires per second: aiotimer's ``timer.runs`` (read outside the CPU window), the baseline's
  own count;
* lateness, over the window only (the registrations hold the loop for seconds, and the batches
  they delay are no steady state): for aiotimer, exactly, by one timer in ``PROBE_EVERY`` that
  takes the Tick and records ``time.monotonic_ns() - tick.scheduled_ns`` (probes are spread
  evenly through the batch, so they see its lateness profile; its own log2 statistics, within
  a factor of 2, are kept in the JSON as ``lateness_own_stats``); the baseline measures every
  fire in its callback with ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiotimer

from . import _harness as h
from . import plots

NAME = "core"
N_TIMERS = 100_000
WINDOW_S = 10
QUICK_WINDOW_S = 3
NS_PER_S = 1_000_000_000
IMPLS = ("aiotimer", "call_at")


def variants(quick: bool) -> list[str]:
    return [f"{impl}/{loop}" for loop in h.available_loops() for impl in IMPLS]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 150.0


def _noop() -> None:
    pass


def _register(tag: str, n: int, add_many: Callable[[int], object]) -> dict[str, Any]:
    """Register ``n`` timers with ``add_many(count)``, in quarters (for the progress line);
    time it and measure the RSS it took."""
    gc.collect()
    rss0 = h.rss_bytes()
    elapsed = 0.0
    quarter = n // 4
    for part in range(4):
        count = quarter if part < 3 else n - 3 * quarter
        t0 = time.perf_counter()
        add_many(count)
        elapsed += time.perf_counter() - t0
        h.progress(NAME, f"{tag}: registered {(part + 1) * 25}% of {n:,} timers")
    rss1 = h.rss_bytes()
    return {
        "register_s": elapsed,
        "register_us_per_timer": elapsed / n * 1e6,
        "rss_bytes_per_timer": (rss1 - rss0) / n,
    }


# -- aiotimer ------------------------------------------------------------------------------------


def _hist_percentile(buckets: list[int], upper_ns: list[int], q: float, max_ns: int) -> float:
    """Percentile of a histogram (bucket b holds values below ``upper_ns[b]`` and at or above
    the previous bound), interpolated inside the bucket and clamped to the largest value seen,
    as aiotimer's own stats do."""
    total = sum(buckets)
    rank = q * total
    seen = 0
    for b, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = 0 if b == 0 else upper_ns[b - 1]
            high = upper_ns[b] if b < len(buckets) - 1 else max(max_ns, low)
            return float(min(low + (high - low) * (rank - seen) / count, max_ns))
        seen += count
    return float(max_ns)


def merged_histogram(scheduler: Any) -> list[int]:
    """aiotimer's lateness histograms of every timer of ``scheduler``, added up."""
    lateness, _ = scheduler.histograms()
    return list(lateness.counts)


def aiotimer_lateness(before: list[int], after: list[int]) -> dict[str, Any]:
    """Lateness of the runs between two :func:`merged_histogram` snapshots, from aiotimer's own
    statistics."""
    window = [a - b for a, b in zip(after, before, strict=True)]
    upper_ns = list(aiotimer.BUCKET_UPPER_NS)
    top = max((b for b, c in enumerate(window) if c), default=0)
    max_ns = upper_ns[top]  # the upper edge of the top bucket: within 2x of the true maximum
    return {
        "method": "aiotimer's own stats: its per-timer log2 histograms merged over all timers "
        "and taken over the window (so within 2x); max = upper edge of the top bucket",
        "count": sum(window),
        "p50_ms": _hist_percentile(window, upper_ns, 0.50, max_ns) / 1e6,
        "p99_ms": _hist_percentile(window, upper_ns, 0.99, max_ns) / 1e6,
        "max_ms": min(upper_ns[top], max_ns) / 1e6,
        "early": 0,  # aiotimer's lateness is never negative: it does not fire early
    }


PROBE_EVERY = 100
"""One timer in 100 is a probe: it takes the Tick and records its own lateness exactly."""


async def _run_aiotimer(tag: str, n: int, window_s: int) -> dict[str, Any]:
    import aiotimer

    origin_ns = time.monotonic_ns()
    scheduler = aiotimer.Scheduler(grid_origin_ns=origin_ns, name="bench-core")
    samples_ns: list[int] = []
    recording = False

    def probe(tick: aiotimer.Tick) -> None:
        if recording:
            samples_ns.append(time.monotonic_ns() - tick.scheduled_ns)

    def mark() -> list[int]:  # read at both ends of the window: toggles the probes
        nonlocal recording
        recording = not recording
        return merged_histogram(scheduler)

    def add_many(count: int) -> None:
        """``count`` timers in a plain loop, as a user would add them; every
        ``PROBE_EVERY``-th is a probe."""
        add = scheduler.add_every_s
        for _ in range(count // PROBE_EVERY):
            for _ in range(PROBE_EVERY - 1):
                add(1, _noop)
            add(1, probe)
        for _ in range(count % PROBE_EVERY):
            add(1, _noop)

    await scheduler.start()
    try:
        result = _register(tag, n, add_many)

        def fires() -> int:
            return sum(t.runs for t in scheduler.timers.values())

        window = await h.measure_window(NAME, tag, origin_ns, window_s, fires, mark)
        result.update(window.as_dict())
        samples_ms = sorted(v / 1e6 for v in samples_ns)
        result["lateness"] = {
            "method": f"exact, from 1 timer in {PROBE_EVERY} (probes spread evenly through the "
            "batch, each recording time.monotonic_ns() - tick.scheduled_ns), every fire of "
            "the window",
            "count": len(samples_ms),
            "p50_ms": h.percentile(samples_ms, 0.50),
            "p99_ms": h.percentile(samples_ms, 0.99),
            "max_ms": samples_ms[-1] if samples_ms else math.nan,
            "early": sum(1 for v in samples_ms if v < 0),
        }
        result["lateness_own_stats"] = aiotimer_lateness(window.before, window.after)
        result["tick_source"] = getattr(scheduler, "precision", "loop")
    finally:
        await scheduler.stop()
    return result


def _chain(
    loop: asyncio.AbstractEventLoop,
    first: float,
    record: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    """A periodic 1 s timer from ``loop.call_at``: records its lateness, re-arms at ``t + 1``."""
    when = first

    def fire() -> None:
        nonlocal when
        record(clock() - when)
        when += 1.0
        loop.call_at(when, fire)

    loop.call_at(when, fire)


async def _run_call_at(tag: str, n: int, window_s: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    origin_ns = time.monotonic_ns()
    # loop.time() is time.monotonic() on asyncio and on uvloop (truncated to ms there).
    first = (origin_ns + 2 * NS_PER_S) / NS_PER_S
    samples = array("d")
    record = samples.append
    clock = time.monotonic

    def add_many(count: int) -> None:
        for _ in range(count):
            _chain(loop, first, record, clock)

    result = _register(tag, n, add_many)
    window = await h.measure_window(
        NAME, tag, origin_ns, window_s, samples.__len__, samples.__len__
    )
    result.update(window.as_dict())
    # Summarised by run_variant once the loop is closed: sorting takes long enough for the next
    # batch of 100,000 callbacks to come due, and closing a loop runs what is due.
    result["samples_s"] = samples[window.before : window.after]
    return result


def _call_at_lateness(samples_s: array[float]) -> dict[str, Any]:
    lateness = h.summarize_ns(int(s * 1e9) for s in samples_s)
    return {
        "method": "measured in each callback (time.monotonic), every fire of the window",
        "count": lateness["count"],
        "p50_ms": lateness["p50_us"] / 1e3,
        "p99_ms": lateness["p99_us"] / 1e3,
        "max_ms": lateness["max_us"] / 1e3,
        "early": lateness["early"],
    }


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    impl, loop = variant.split("/")
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    runner = _run_aiotimer if impl == "aiotimer" else _run_call_at
    h.progress(NAME, f"{variant}: {N_TIMERS:,} periodic 1 s timers, {window_s} s window")
    result = h.run_on_loop(loop, lambda: runner(variant, N_TIMERS, window_s))
    if "samples_s" in result:
        result["lateness"] = _call_at_lateness(result.pop("samples_s"))
    return {"impl": impl, "loop": loop, "timers": N_TIMERS, **result}


# -- report --------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    rows: list[list[object]] = []
    ratio_rows: list[list[object]] = []
    targets: list[dict[str, Any]] = []
    notes: list[str] = []
    ok = {k: r for k, r in results.items() if "error" not in r}
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        lat = r["lateness"]
        rows.append(
            [
                r["loop"],
                f"{r['impl']}[{r['tick_source']}]" if "tick_source" in r else r["impl"],
                r["register_us_per_timer"],
                r["rss_bytes_per_timer"],
                r["cpu_per_wall_s"],
                r["fires_per_s"],
                r["cpu_s"] / (r["fires_per_s"] * r["window_s"]) * 1e6 if r["fires_per_s"] else None,
                lat["p50_ms"],
                lat["p99_ms"],
                lat["max_ms"],
                lat["early"],
            ]
        )
    metrics = (
        ("CPU s per wall s", "cpu_per_wall_s", None),
        ("p99 lateness ms", "lateness", "p99_ms"),
        ("registration us/timer", "register_us_per_timer", None),
        ("RSS bytes/timer", "rss_bytes_per_timer", None),
    )
    for loop in h.available_loops():
        a, b = ok.get(f"aiotimer/{loop}"), ok.get(f"call_at/{loop}")
        if a is not None:
            targets += [
                h.target(f"{loop}: CPU per wall s", a["cpu_per_wall_s"], "<=", 0.05, "s/s"),
                h.target(f"{loop}: p99 lateness", a["lateness"]["p99_ms"], "<=", 30, "ms"),
                h.target(f"{loop}: registration", a["register_us_per_timer"], "<=", 5, "us/timer"),
                h.target(f"{loop}: memory (RSS)", a["rss_bytes_per_timer"], "<=", 400, "B/timer"),
            ]
        if a is None or b is None:
            continue
        for label, key, sub in metrics:
            va = a[key][sub] if sub else a[key]
            vb = b[key][sub] if sub else b[key]
            ratio_rows.append([loop, label, va, vb, _ratio(va, vb)])
    title = (
        f"core: {N_TIMERS:,} periodic 1 s timers, no-op sync callbacks, {window_s} s window "
        "(RSS = RSS delta over registration)"
    )
    headers = [
        "loop",
        "impl",
        "reg us/timer",
        "RSS B/timer",
        "CPU s/s",
        "fires/s",
        "CPU us/fire",
        "p50 late ms",
        "p99 late ms",
        "max late ms",
        "early",
    ]
    tables = [h.format_table(title, headers, rows)]
    if ratio_rows:
        tables.append(
            h.format_table(
                "core ratios: aiotimer / call_at (< 1: aiotimer is cheaper or less late)",
                ["loop", "metric", "aiotimer", "call_at", "aiotimer/call_at"],
                ratio_rows,
            )
        )
    methods = {r["impl"]: r["lateness"]["method"] for r in ok.values()}
    notes += [f"lateness of {impl}: {m}" for impl, m in sorted(methods.items())]
    plot_paths = plots.bars(
        out / "core.png",
        f"core: {N_TIMERS:,} periodic 1 s timers",
        {v: r for v, r in ok.items()},
        [
            ("CPU s per wall s", lambda r: r["cpu_per_wall_s"]),
            ("p99 lateness (ms)", lambda r: r["lateness"]["p99_ms"]),
        ],
        notes,
    )
    return h.Report(tables, {"timers": N_TIMERS, "window_s": window_s}, targets, notes, plot_paths)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
