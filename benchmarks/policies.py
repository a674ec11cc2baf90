"""Workload ``policies`` (issue 3): what each policy and callback kind costs per fire.

Each variant registers N periodic 1 s timers of one kind on a running scheduler (asyncio) and
measures the process's CPU over a window of whole seconds (the same window as ``core``), so the
table reads as "CPU µs per fire" next to the fast path (a sync, no-argument, default-policy
timer). The variants: a callback taking the Tick, ``missed=BURST``, ``max_failures`` with an
``on_error`` hook (they act only on late or failed runs), ``jitter_ms``, a coroutine, a
coroutine with ``timeout_s``, and ``thread=True``. Fewer timers for the costly kinds, so each
window stays a steady state (every fire of the window runs within its second).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiotimer

from . import _harness as h

NAME = "policies"
WINDOW_S = 5
QUICK_WINDOW_S = 2


def _noop() -> None:
    pass


def _noop_tick(tick: aiotimer.Tick) -> None:
    pass


async def _anoop() -> None:
    pass


def _on_error(timer: aiotimer.Timer, exc: BaseException) -> None:
    pass


# variant -> (timers, quick timers, how to add one)
VARIANTS: dict[str, tuple[int, int, Callable[[aiotimer.Scheduler], object]]] = {
    "fast path": (20_000, 5_000, lambda s: s.add_every_s(1, _noop)),
    "Tick argument": (20_000, 5_000, lambda s: s.add_every_s(1, _noop_tick)),
    "missed=BURST": (
        20_000,
        5_000,
        lambda s: s.add_every_s(1, _noop, missed=aiotimer.Missed.BURST),
    ),
    "max_failures+on_error": (
        20_000,
        5_000,
        lambda s: s.add_every_s(1, _noop, max_failures=3, on_error=_on_error),
    ),
    "jitter_ms=100": (5_000, 1_000, lambda s: s.add_every_s(1, _noop, jitter_ms=100)),
    "coroutine": (2_000, 500, lambda s: s.add_every_s(1, _anoop)),
    "coroutine+timeout_s": (2_000, 500, lambda s: s.add_every_s(1, _anoop, timeout_s=0.5)),
    "thread=True": (500, 100, lambda s: s.add_every_s(1, _noop, thread=True)),
}


def variants(quick: bool) -> list[str]:
    return list(VARIANTS)


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 120.0


async def _measure(variant: str, quick: bool) -> dict[str, Any]:
    full_n, quick_n, add = VARIANTS[variant]
    n = quick_n if quick else full_n
    origin_ns = time.monotonic_ns()
    scheduler = aiotimer.Scheduler(grid_origin_ns=origin_ns, name="bench-policies")
    await scheduler.start()
    try:
        for _ in range(n):
            add(scheduler)

        def fires() -> int:
            return sum(t.runs for t in scheduler.timers.values())

        window_s = QUICK_WINDOW_S if quick else WINDOW_S
        window = await h.measure_window(NAME, variant, origin_ns, window_s, fires)
    finally:
        await scheduler.stop()
    result: dict[str, Any] = dict(window.as_dict())
    result["timers"] = n
    result["cpu_us_per_fire"] = window.cpu_s / window.fires * 1e6 if window.fires else None
    return result


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    h.progress(NAME, f"{variant}: periodic 1 s timers on asyncio")
    return h.run_on_loop("asyncio", lambda: _measure(variant, quick))


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    rows: list[list[object]] = []
    notes: list[str] = []
    base = results.get("fast path", {})
    base_us = base.get("cpu_us_per_fire")
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        us = r["cpu_us_per_fire"]
        extra = us - base_us if isinstance(base_us, float) and isinstance(us, float) else None
        rows.append([variant, r["timers"], r["fires_per_s"], us, extra])
    tables = [
        h.format_table(
            "policies: CPU per fire of periodic 1 s timers, by kind and policy (asyncio)",
            ["variant", "timers", "fires/s", "CPU us/fire", "extra us vs fast path"],
            rows,
        )
    ]
    return h.Report(tables, {"window_s": QUICK_WINDOW_S if quick else WINDOW_S}, [], notes)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
