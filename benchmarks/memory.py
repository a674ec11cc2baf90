"""Workload ``memory``: memory per timer and registration cost for 1,000,000 periodic timers.

aiotimer (``add_every_s(1, noop)`` on a running scheduler) next to raw ``loop.call_at`` chains
(a closure that re-arms itself, and its handle) on asyncio and on uvloop, each in a process of
its own. aiotimer's registration does not touch the event loop, so it is measured on asyncio
only.

* registration: wall time of the ``n`` registrations, per timer;
* RSS: resident memory growth over the registrations, per timer (at a million timers the
  allocator's page granularity is noise);
* tracemalloc: bytes the registrations allocated, per timer, measured in a second pass (at most
  100,000 timers: tracemalloc slows every allocation down), with aiotimer's biggest allocation
  sites, to show where its bytes go.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _harness as h

NAME = "memory"
N_TIMERS = 1_000_000
QUICK_N_TIMERS = 100_000
TRACED_MAX = 100_000
QUICK_TRACED_MAX = 10_000
TOP_SITES = 6


def variants(quick: bool) -> list[str]:
    return ["aiotimer/asyncio", *(f"call_at/{loop}" for loop in h.available_loops())]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 300.0


def _noop() -> None:
    pass


def _chain(loop: asyncio.AbstractEventLoop, first: float) -> None:
    when = first

    def fire() -> None:
        nonlocal when
        when += 1.0
        loop.call_at(when, fire)

    loop.call_at(when, fire)


class _Registrar:
    """Registers timers of one implementation; ``close()`` drops them."""

    def __init__(self, impl: str) -> None:
        self.impl = impl
        self.scheduler: Any = None
        self.loop = asyncio.get_running_loop()
        self.first = time.monotonic() + 3600.0  # never due during the run

    async def open(self) -> Callable[[], object]:
        if self.impl == "aiotimer":
            import aiotimer

            self.scheduler = aiotimer.Scheduler(name="bench-memory")
            await self.scheduler.start()
            scheduler = self.scheduler
            return lambda: scheduler.add_every_s(1, _noop)
        loop, first = self.loop, self.first
        return lambda: _chain(loop, first)

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()  # its timers stay registered: dropped with the process


def _timed(tag: str, n: int, add: Callable[[], object]) -> dict[str, Any]:
    gc.collect()
    rss0 = h.rss_bytes()
    elapsed = 0.0
    step = max(1, n // 10)
    done = 0
    while done < n:
        count = min(step, n - done)
        t0 = time.perf_counter()
        for _ in range(count):
            add()
        elapsed += time.perf_counter() - t0
        done += count
        h.progress(NAME, f"{tag}: registered {done:,}/{n:,}")
    rss1 = h.rss_bytes()
    return {
        "register_s": elapsed,
        "register_us_per_timer": elapsed / n * 1e6,
        "rss_bytes_per_timer": (rss1 - rss0) / n,
    }


def _traced(tag: str, n: int, add: Callable[[], object]) -> dict[str, Any]:
    h.progress(NAME, f"{tag}: tracemalloc pass, {n:,} timers")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        add()
    traced = tracemalloc.get_traced_memory()[0] - base
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    sites = [
        {
            "site": f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}",
            "bytes_per_timer": s.size_diff / n,
            "blocks_per_timer": s.count_diff / n,
        }
        for s in after.compare_to(before, "lineno")[:TOP_SITES]
    ]
    return {"traced_timers": n, "traced_bytes_per_timer": traced / n, "top_sites": sites}


async def _measure(tag: str, impl: str, n: int, traced_n: int) -> dict[str, Any]:
    registrar = _Registrar(impl)
    result = _timed(tag, n, await registrar.open())
    await registrar.close()
    del registrar
    registrar = _Registrar(impl)
    result.update(_traced(tag, traced_n, await registrar.open()))
    await registrar.close()
    return result


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    impl, loop = variant.split("/")
    n = QUICK_N_TIMERS if quick else N_TIMERS
    traced_n = QUICK_TRACED_MAX if quick else TRACED_MAX
    h.progress(NAME, f"{variant}: {n:,} timers")
    result = h.run_on_loop(loop, lambda: _measure(variant, impl, n, traced_n))
    return {"impl": impl, "loop": loop, "timers": n, **result}


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    n = QUICK_N_TIMERS if quick else N_TIMERS
    traced_n = QUICK_TRACED_MAX if quick else TRACED_MAX
    rows: list[list[object]] = []
    notes: list[str] = []
    targets: list[dict[str, Any]] = []
    ok = {k: r for k, r in results.items() if "error" not in r}
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        rows.append(
            [
                r["loop"],
                r["impl"],
                r["register_us_per_timer"],
                r["rss_bytes_per_timer"],
                r["traced_bytes_per_timer"],
            ]
        )
    tables = [
        h.format_table(
            f"memory: {n:,} periodic 1 s timers (tracemalloc pass: {traced_n:,} timers)",
            ["loop", "impl", "reg us/timer", "RSS B/timer", "tracemalloc B/timer"],
            rows,
        )
    ]
    a = ok.get("aiotimer/asyncio")
    if a is not None:
        ratio_rows = [
            [f"call_at/{loop}", label, a[key] / b[key] if b[key] else None]
            for loop in h.available_loops()
            if (b := ok.get(f"call_at/{loop}")) is not None
            for key, label in (
                ("register_us_per_timer", "registration"),
                ("rss_bytes_per_timer", "RSS"),
                ("traced_bytes_per_timer", "tracemalloc"),
            )
        ]
        tables.append(
            h.format_table(
                "memory ratios: aiotimer / call_at chain (< 1: aiotimer is cheaper)",
                ["baseline", "metric", "aiotimer/baseline"],
                ratio_rows,
            )
        )
        tables.append(
            h.format_table(
                "aiotimer: biggest allocation sites per timer (tracemalloc)",
                ["site", "B/timer", "blocks/timer"],
                [[s["site"], s["bytes_per_timer"], s["blocks_per_timer"]] for s in a["top_sites"]],
            )
        )
        targets = [
            h.target("registration", a["register_us_per_timer"], "<=", 5, "us/timer"),
            h.target("memory (RSS)", a["rss_bytes_per_timer"], "<=", 400, "B/timer"),
            h.target("memory (tracemalloc)", a["traced_bytes_per_timer"], "<=", 400, "B/timer"),
        ]
    return h.Report(tables, {"timers": n}, targets, notes)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
