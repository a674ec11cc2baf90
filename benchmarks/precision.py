"""Workload ``precision`` (issue 7): how late a 1 ms periodic timer fires.

Implementations, each on asyncio and on uvloop, idle and with 10,000 other 1 s timers running
(timers of the same implementation: aiotimer timers for aiotimer, ``call_at`` chains for the
two baselines):

* ``aiotimer[<precision>]``: ``Scheduler(precision=...)`` for each tick source (``loop``,
  ``timerfd``) where the scheduler has that parameter, else ``aiotimer[default]``. The callback
  takes the :class:`~aiotimer.Tick` and records ``time.monotonic_ns() - tick.scheduled_ns``.
* ``call_at``: a raw ``loop.call_at`` chain on an absolute 1 ms grid, recording the same way;
  after a stall it skips the passed grid points, as aiotimer's default ``Missed.SKIP`` does.
* ``sleep``: a naive ``while True: await asyncio.sleep(0.001)`` loop. Its "lateness" is the
  oversleep of each iteration (interval - 1 ms); its drift is how far behind ``start + n ms`` it
  ends after ``n`` iterations.

Early = fired before its scheduled time (negative lateness). Each (loop, load) pair runs in a
process of its own; the implementations run one after the other in it. The quick run measures
the baselines idle only.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import time
from array import array
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import _harness as h
from . import plots

NAME = "precision"
DURATION_S = 5.0
QUICK_DURATION_S = 1.0
LOAD_TIMERS = 10_000
LOADS = {"idle": 0, "10k": LOAD_TIMERS}
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
PRECISIONS = ("loop", "timerfd")


def precision_supported() -> bool:
    """Whether this aiotimer's ``Scheduler`` takes a ``precision`` argument."""
    import aiotimer

    return "precision" in inspect.signature(aiotimer.Scheduler).parameters


def impls() -> list[str]:
    tick_sources = (
        [f"aiotimer[{p}]" for p in PRECISIONS] if precision_supported() else ["aiotimer[default]"]
    )
    return [*tick_sources, "call_at", "sleep"]


def variants(quick: bool) -> list[str]:
    return [f"{loop}/{load}" for loop in h.available_loops() for load in LOADS]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 120.0


def _noop() -> None:
    pass


def _cpu_window() -> Callable[[], dict[str, float]]:
    """Start measuring; the returned function ends the window and gives CPU per wall second."""
    w0, c0 = time.monotonic_ns(), h.cpu_s()

    def stop() -> dict[str, float]:
        wall_s = (time.monotonic_ns() - w0) / NS_PER_S
        return {"wall_s": wall_s, "cpu_per_wall_s": (h.cpu_s() - c0) / wall_s}

    return stop


def _load_chain(loop: asyncio.AbstractEventLoop, first: float) -> None:
    """A periodic 1 s ``call_at`` chain that does nothing else (background load)."""
    when = first

    def fire() -> None:
        nonlocal when
        when += 1.0
        loop.call_at(when, fire)

    loop.call_at(when, fire)


def _add_load_chains(n: int) -> None:
    loop = asyncio.get_running_loop()
    first = (time.monotonic_ns() // NS_PER_S + 1) * NS_PER_S / NS_PER_S
    for _ in range(n):
        _load_chain(loop, first)


async def _aiotimer(precision: str | None, load: int, duration_s: float) -> dict[str, Any]:
    import aiotimer

    kwargs: dict[str, Any] = {} if precision is None else {"precision": precision}
    try:
        scheduler = aiotimer.Scheduler(name="bench-precision", **kwargs)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        return {"skipped": f"Scheduler(precision={precision!r}) refused: {exc}"}
    samples = array("q")
    record = samples.append
    clock = time.monotonic_ns

    def on_tick(tick: aiotimer.Tick) -> None:
        record(clock() - tick.scheduled_ns)

    async with scheduler:
        for _ in range(load):
            scheduler.add_every_s(1, _noop)
        timer = scheduler.add_every_ms(1, on_tick, name="1ms")
        window = _cpu_window()
        await asyncio.sleep(duration_s)
        result: dict[str, Any] = window()
        result["missed"] = timer.missed
    result["samples_ns"] = list(samples)
    return result


async def _call_at(load: int, duration_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    _add_load_chains(load)
    samples = array("q")
    record = samples.append
    clock = time.monotonic_ns
    anchor_ns = (clock() // NS_PER_MS + 1) * NS_PER_MS
    k = 0
    missed = 0

    def fire() -> None:
        nonlocal k, missed
        now_ns = clock()
        record(now_ns - (anchor_ns + k * NS_PER_MS))
        k += 1
        due_ns = anchor_ns + k * NS_PER_MS
        if due_ns <= now_ns:  # skip the grid points that passed, like Missed.SKIP
            skip = (now_ns - due_ns) // NS_PER_MS + 1
            k += skip
            missed += skip
            due_ns += skip * NS_PER_MS
        handle[0] = loop.call_at(due_ns / NS_PER_S, fire)

    handle = [loop.call_at(anchor_ns / NS_PER_S, fire)]
    window = _cpu_window()
    await asyncio.sleep(duration_s)
    result: dict[str, Any] = window()
    handle[0].cancel()
    result["missed"] = missed
    result["samples_ns"] = list(samples)
    return result


async def _sleep(load: int, duration_s: float) -> dict[str, Any]:
    _add_load_chains(load)
    samples = array("q")
    clock = time.monotonic_ns
    window = _cpu_window()
    start_ns = prev_ns = clock()
    end_ns = start_ns + int(duration_s * NS_PER_S)
    while prev_ns < end_ns:
        await asyncio.sleep(0.001)
        now_ns = clock()
        samples.append(now_ns - prev_ns - NS_PER_MS)
        prev_ns = now_ns
    result: dict[str, Any] = window()
    result["missed"] = 0
    result["drift_ms"] = (prev_ns - start_ns - len(samples) * NS_PER_MS) / NS_PER_MS
    result["samples_ns"] = list(samples)
    return result


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    loop, load_name = variant.split("/")
    load = LOADS[load_name]
    duration_s = QUICK_DURATION_S if quick else DURATION_S
    out: dict[str, Any] = {"loop": loop, "load": load, "duration_s": duration_s, "impls": {}}
    for impl in impls():
        if quick and load and not impl.startswith("aiotimer"):
            continue  # the quick run measures the baselines idle only
        h.progress(NAME, f"{variant}: {impl}, 1 ms timer for {duration_s:g} s")
        coro: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
        if impl.startswith("aiotimer"):
            precision = impl[len("aiotimer[") : -1]
            p = None if precision == "default" else precision

            def coro(p: str | None = p) -> Coroutine[Any, Any, dict[str, Any]]:
                return _aiotimer(p, load, duration_s)
        elif impl == "call_at":

            def coro() -> Coroutine[Any, Any, dict[str, Any]]:
                return _call_at(load, duration_s)
        else:

            def coro() -> Coroutine[Any, Any, dict[str, Any]]:
                return _sleep(load, duration_s)

        gc.collect()
        result = h.run_on_loop(loop, coro)
        result["expected_fires"] = round(duration_s * 1000)
        out["impls"][impl] = result
    return out


# -- report --------------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    duration_s = QUICK_DURATION_S if quick else DURATION_S
    rows: list[list[object]] = []
    ratio_rows: list[list[object]] = []
    targets: list[dict[str, Any]] = []
    notes: list[str] = []
    cdf_panels: dict[str, dict[str, list[float]]] = {}
    plot_paths: list[str] = []
    if not precision_supported():
        notes.append(
            "aiotimer.Scheduler has no 'precision' parameter yet: the tick sources 'loop' and "
            "'timerfd' were not measured separately; aiotimer[default] is the scheduler as it is"
        )
    stored: dict[str, Any] = {}
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            stored[variant] = r
            continue
        load_label = "idle" if not r["load"] else f"{r['load']:,} other 1 s timers"
        short_load = "idle" if not r["load"] else f"+{r['load'] // 1000}k"
        panel = f"{r['loop']}, {load_label}"
        cdf_panels[panel] = {}
        hist_curves: dict[str, list[float]] = {}
        summaries: dict[str, Any] = {}
        for impl, res in r["impls"].items():
            if "skipped" in res:
                notes.append(f"{variant} {impl}: skipped: {res['skipped']}")
                summaries[impl] = res
                continue
            samples = res.pop("samples_ns")
            s = h.summarize_ns(samples)
            res["lateness"] = s
            summaries[impl] = res
            cdf_panels[panel][impl] = s["cdf_us"]
            hist_curves[impl] = [v / 1e3 for v in samples]
            rows.append(
                [
                    r["loop"],
                    short_load,
                    impl,
                    s["p50_us"],
                    s["p99_us"],
                    s["p999_us"],
                    s["max_us"],
                    s["early"],
                    f"{s['count']}/{res['expected_fires']}",
                    res["missed"],
                    res.get("drift_ms", 0.0),
                    res["cpu_per_wall_s"],
                ]
            )
        stored[variant] = {**r, "impls": summaries}
        base = summaries.get("call_at", {}).get("lateness")
        for impl, res in summaries.items():
            lat = res.get("lateness")
            if not impl.startswith("aiotimer") or lat is None:
                continue
            if r["loop"] == "uvloop":
                targets.append(
                    h.target(f"uvloop {short_load}: {impl} early", lat["early"], "<=", 0, "fires")
                )
            if base is None:
                continue
            ratio = lat["p50_us"] / base["p50_us"] if base["p50_us"] > 0 else None
            ratio_rows.append([r["loop"], short_load, impl, lat["p50_us"], base["p50_us"], ratio])
            if impl == "aiotimer[timerfd]" and not r["load"]:
                targets.append(
                    h.target(f"{r['loop']} idle: timerfd p50", lat["p50_us"], "<=", 150, "us")
                )
                targets.append(
                    h.target(
                        f"{r['loop']} idle: timerfd p50 / call_at p50", ratio, "<=", 1 / 3, "x"
                    )
                )
        if hist_curves:
            slug = variant.replace("/", "_")
            plot_paths += plots.lateness_histograms(
                out / f"precision_hist_{slug}.png",
                f"1 ms timer lateness, {panel}, {duration_s:g} s",
                hist_curves,
                notes,
            )
    plot_paths[:0] = plots.lateness_cdfs(
        out / "precision_cdf.png",
        f"1 ms periodic timer: lateness CDF ({duration_s:g} s)",
        cdf_panels,
        notes,
    )
    title = (
        f"precision: 1 ms periodic timer over {duration_s:g} s, lateness in us "
        "(sleep: oversleep per iteration)"
    )
    headers = [
        "loop",
        "load",
        "impl",
        "p50",
        "p99",
        "p99.9",
        "max",
        "early",
        "fires/expected",
        "missed",
        "drift ms",
        "CPU s/s",
    ]
    tables = [h.format_table(title, headers, rows)]
    if ratio_rows:
        tables.append(
            h.format_table(
                "precision ratios: aiotimer p50 / call_at p50 (< 1: aiotimer is less late)",
                ["loop", "load", "impl", "aiotimer p50 us", "call_at p50 us", "ratio"],
                ratio_rows,
            )
        )
    data = {"duration_s": duration_s, "load_timers": LOAD_TIMERS, "variants": stored}
    return h.Report(tables, data, targets, notes, plot_paths)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
