"""Workload ``churn`` (issue 18): one-shot timers re-armed at a high rate, as SIP does.

Kamailio's ``tm`` and ``dialog`` arm a one-shot per transaction or call and delete or re-arm
most of them before they fire. The workload: 100,000 pending one-shots of 30-60 s; every
100 ms, 1,000 of them picked at random are re-armed with a new 30-60 s delay (10,000 re-arms
per second); few ever fire. Four ways to write it, each on asyncio and on uvloop, each variant
in a process of its own:

* ``call_later``: raw ``loop.call_later`` + ``handle.cancel()``, the baseline;
* ``cancel+add_once_ms``: aiotimer, ``timer.cancel()`` then a new ``add_once_ms``;
* ``reschedule``: aiotimer, ``timer.reschedule(new_delay)`` on the same handle;
* ``kamailio``: the façade as a ported module writes it: ``timer_del(tl)`` then
  ``timer_add(tl, delta)`` on a reused ``timer_ln`` (``timer_init`` once per ``tl``);
* ``pause+reschedule``: the façade's floor, the two core calls it makes (``timer.pause()``,
  then ``timer.reschedule(delay, resume=True)``) and nothing else.

A slot whose one-shot fired is re-armed by the same operation (a fired ``call_later`` handle's
``cancel()`` is a no-op; ``reschedule`` of a finished timer raises, and the slot gets a new
``add_once_ms``), so every variant keeps about 100,000 pending. Every variant replays the same
seeded random slots and delays, in the unit its API takes; for the CPU window they are
generated before the clock starts (none is replayed), the memory check draws each batch when
it is due.

**It starts in its steady state.** The initial one-shots are armed with what is left of their
delays once the churn has run a while (each slot last armed a random time ago, at its re-arm
rate: see :func:`_steady_delays`), not with fresh 30-60 s delays: from a fresh start nothing
comes due for 30 s, so a short window saw only the re-arms, and none of what a service running
for hours pays for them later: the wake-ups for old deadlines (aiotimer woke for each of its
dead buckets, ~870 times a second, until its queue took them out ahead), ~170 runs a second of
the one-shots that were not re-armed in time, and ``call_later``'s
cancelled handles (popped off the heap's head one by one, the heap rebuilt every ~10 s here,
and the garbage collector's full passes that its handle per re-arm sets off every few seconds).

Measured: CPU seconds (``getrusage``, user + system) per wall second over a window of whole
re-arm periods (it starts and ends half-way between two batches, after 60 s of warm-up; 30 s:
see :data:`FULL`), the ratio to
``call_later`` on the same loop in the same run, fires per second, the RSS change over the
window, and the cost of the 100,000 initial arms.

``python -m benchmarks.churn --minutes N [--loop uvloop] [--sample-s S]`` is the memory check
instead: each variant churns for N minutes and RSS is sampled as it goes (the issue's target:
flat within 5 MiB over 10 minutes). Its variants run side by side (each one uses ~10% of a
core, and RSS is per process), on asyncio unless ``--loop uvloop``; ``--quick`` there means
the quick sizes (for the smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import _harness as h

NAME = "churn"
IMPLS = ("call_later", "cancel+add_once_ms", "reschedule", "kamailio", "pause+reschedule")
BASELINE = "call_later"
PERIOD_NS = 100_000_000
"""One batch of re-arms every 100 ms."""
DELAY_MS = (30_000, 60_000)
"""The one-shots' delays, uniform (inclusive bounds)."""
SEED = 18
SPARE_BATCHES = 10
"""Batches generated ahead beyond the window's (the CPU window's batches are generated before
the clock starts: generating them on the loop would be measured too; the warm-up's are drawn
when due, from the same seeded generator: replaying a few hundred batches would re-arm the same
slots over and over, and far fewer one-shots would ever fire)."""

# (pending one-shots, re-arms per batch, warm-up batches, measured batches)
FULL = (100_000, 1_000, 600, 300)
"""60 s of warm-up, 30 s measured: ``call_later``'s costs grow for about a minute (cancelled
handles and their contexts pile up in its heap and in the collector's oldest generation, whose
full passes, every ~5 s, went from ~0.13 to ~0.6 s of CPU over the first minute here), and a
30-s window holds ~6 of those passes (a 10-s one read 0.09-0.10 CPU s per wall s for it, 60 s
read 0.13; aiotimer's ``reschedule`` stays at ~0.09-0.10 from the first second)."""
QUICK = (10_000, 100, 2, 3)
MIB = 1024 * 1024
RSS_FLAT_MIB = 5.0
"""The issue's memory target: RSS within 5 MiB over 10 minutes of churn."""

Batch = list[tuple[int, Any]]
Rearm = Callable[[Batch], None]


def variants(quick: bool) -> list[str]:
    return [f"{impl}/{loop}" for loop in h.available_loops() for impl in IMPLS]


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 30.0 if quick else 180.0


# -- the four ways to write it --------------------------------------------------------------------


class _Fires:
    """The one callback every pending one-shot shares: it only counts."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def fire(self) -> None:
        self.count += 1

    def handler(self, ticks: int, tl: object, data: object) -> int:
        """The façade's ``timer_ln`` handler: count, and return 0 (one-shot)."""
        self.count += 1
        return 0


def _delays(rng: random.Random, n: int) -> list[int]:
    low, high = DELAY_MS
    return [rng.randint(low, high) for _ in range(n)]


def _steady_delays(rng: random.Random, n: int, rearms_per_s: float) -> list[int]:
    """The ``n`` one-shots' delays left, as the churn leaves them once it has run a while:
    each slot was last armed a time ago drawn from its re-arm rate (exponential, a mean of
    ``n / rearms_per_s`` seconds: 10 s here) with a delay drawn from :data:`DELAY_MS`, and is
    still pending (a draw that would have fired by now is drawn again)."""
    low, high = DELAY_MS
    rate_per_ms = rearms_per_s / n / 1000
    left = []
    for _ in range(n):
        while (ms := rng.randint(low, high) - int(rng.expovariate(rate_per_ms))) <= 0:
            pass
        left.append(ms)
    return left


def _batch(rng: random.Random, n: int, per_batch: int) -> list[tuple[int, int]]:
    """``per_batch`` random (slot, delay ms), slots drawn with replacement, as traffic would."""
    slots = [rng.randrange(n) for _ in range(per_batch)]
    return list(zip(slots, _delays(rng, per_batch), strict=True))


def _setup(
    impl: str, initial_ms: list[int], fires: _Fires, scheduler: Any
) -> tuple[Rearm, Callable[[int], Any]]:
    """Arm one one-shot per slot the way ``impl`` does (on ``scheduler``, but for the
    baseline); the batch re-arm function and the conversion of a delay in ms to its unit. The
    re-arm loops are written out per impl, so each one costs only its own calls."""
    loop = asyncio.get_running_loop()
    fire = fires.fire
    if impl == "call_later":
        call_later = loop.call_later
        handles = [call_later(d / 1000, fire) for d in initial_ms]

        def rearm_raw(batch: Batch) -> None:
            for i, delay_s in batch:
                handles[i].cancel()
                handles[i] = call_later(delay_s, fire)

        return rearm_raw, lambda ms: ms / 1000

    add_once_ms = scheduler.add_once_ms
    if impl == "cancel+add_once_ms":
        timers = [add_once_ms(d, fire) for d in initial_ms]

        def rearm_cancel_add(batch: Batch) -> None:
            for i, delay_ms in batch:
                timers[i].cancel()
                timers[i] = add_once_ms(delay_ms, fire)

        return rearm_cancel_add, int

    if impl == "reschedule":
        timers = [add_once_ms(d, fire) for d in initial_ms]

        def rearm_reschedule(batch: Batch) -> None:
            for i, delay_ms in batch:
                try:
                    timers[i].reschedule(delay_ms)
                except RuntimeError:  # it fired (finished): the slot gets a new one-shot
                    timers[i] = add_once_ms(delay_ms, fire)

        return rearm_reschedule, int

    if impl == "kamailio":
        from aiotimer import kamailio as k

        k.use_scheduler(scheduler)
        tls = []
        for d in initial_ms:
            tl = k.timer_alloc()
            k.timer_init(tl, fires.handler, None)
            k.timer_add(tl, d)
            tls.append(tl)
        timer_add, timer_del = k.timer_add, k.timer_del

        def rearm_kamailio(batch: Batch) -> None:
            for i, delta in batch:
                tl = tls[i]
                timer_del(tl)  # -1 for one that fired: then timer_add alone re-arms it
                timer_add(tl, delta)

        return rearm_kamailio, int

    if impl == "pause+reschedule":
        timers = [add_once_ms(d, fire) for d in initial_ms]

        def rearm_pause_reschedule(batch: Batch) -> None:
            for i, delay_ms in batch:
                timer = timers[i]
                try:
                    timer.pause()
                    timer.reschedule(delay_ms, resume=True)
                except RuntimeError:  # it fired (finished): the slot gets a new one-shot
                    timers[i] = add_once_ms(delay_ms, fire)

        return rearm_pause_reschedule, int

    raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")


async def _churn(
    impl: str,
    n: int,
    per_batch: int,
    premade: tuple[int, int] | None,
    body: Callable[[_Fires, int, Callable[[], int]], Any],
) -> dict[str, Any]:
    """Set up ``n`` one-shots, start re-arming ``per_batch`` of them every 100 ms, and run
    ``body(fires, origin_ns, batches_done)`` meanwhile; its result, with the setup's cost.
    ``premade = (after, count)``: batches ``after + 1`` to ``after + count`` (the CPU window's)
    are generated before the churn starts, the others when due (all of them: ``None``)."""
    rng = random.Random(SEED)
    initial_ms = _steady_delays(rng, n, per_batch * h.NS_PER_S / PERIOD_NS)
    fires = _Fires()
    scheduler = None
    if impl != BASELINE:
        import aiotimer

        scheduler = aiotimer.Scheduler(name="bench-churn")
        await scheduler.start()
    try:
        gc.collect()
        rss0 = h.rss_bytes()
        t0 = time.perf_counter()
        rearm, unit = _setup(impl, initial_ms, fires, scheduler)
        setup_s = time.perf_counter() - t0
        rss1 = h.rss_bytes()

        def draw() -> Batch:
            return [(i, unit(d)) for i, d in _batch(rng, n, per_batch)]

        # The window's batches, made now (from the same seeded draws in every variant); those
        # before it (the warm-up) and after it are drawn when due.
        after, count = premade if premade is not None else (0, 0)
        made = [draw() for _ in range(count)]

        def next_batch(k: int) -> Batch:
            j = k - after - 1
            return made[j] if 0 <= j < count else draw()

        done = 0

        async def drive(origin_ns: int) -> None:
            nonlocal done
            k = 0
            while True:
                k += 1
                await h.sleep_until(origin_ns + k * PERIOD_NS)
                rearm(next_batch(k))
                done += 1

        origin_ns = time.monotonic_ns()
        driver = asyncio.create_task(drive(origin_ns))
        try:
            result: dict[str, Any] = await body(fires, origin_ns, lambda: done)
            if driver.done():
                driver.result()  # the re-arms failed: raise why
        finally:
            driver.cancel()
        if scheduler is not None:
            result["pending_at_end"] = scheduler.stats(timers=False).queued
    finally:
        if scheduler is not None:
            await scheduler.stop(grace_s=0)
    result.update(
        {
            "pending": n,
            "rearms_per_s": per_batch * 1_000_000_000 / PERIOD_NS,
            "setup_us_per_arm": setup_s / n * 1e6,
            "setup_rss_bytes_per_arm": (rss1 - rss0) / n,
        }
    )
    return result


# -- the CPU window (the default mode) ------------------------------------------------------------


async def _window(impl: str, quick: bool) -> dict[str, Any]:
    n, per_batch, warmup, measured = QUICK if quick else FULL

    async def body(fires: _Fires, origin_ns: int, batches_done: Callable[[], int]) -> Any:
        # Half-way between two batches at both ends: the window holds `measured` batches.
        await h.sleep_until(origin_ns + warmup * PERIOD_NS + PERIOD_NS // 2)
        rss0, fires0, done0 = h.rss_bytes(), fires.count, batches_done()
        w0, c0 = time.monotonic_ns(), h.cpu_s()
        await h.sleep_until(w0 + measured * PERIOD_NS)
        w1, c1 = time.monotonic_ns(), h.cpu_s()
        rss1, fires1, done1 = h.rss_bytes(), fires.count, batches_done()
        wall_s = (w1 - w0) / 1e9
        return {
            "window_s": wall_s,
            "cpu_s": c1 - c0,
            "cpu_per_wall_s": (c1 - c0) / wall_s,
            "fires_per_s": (fires1 - fires0) / wall_s,
            "rss_delta_bytes": rss1 - rss0,
            "batches_in_window": done1 - done0,
        }

    return await _churn(impl, n, per_batch, (warmup, measured + SPARE_BATCHES), body)


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    impl, loop = variant.split("/")
    h.progress(NAME, f"{variant}: {'quick' if quick else 'full'} churn window")
    return h.run_on_loop(loop, lambda: _window(impl, quick))


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    n, per_batch, _, measured = QUICK if quick else FULL
    rows: list[list[object]] = []
    notes: list[str] = []
    targets: list[dict[str, Any]] = []
    limits = {"cancel+add_once_ms": 1.0, "reschedule": 0.7, "kamailio": 0.7}
    for variant, r in results.items():
        impl, loop = variant.split("/")
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        base = results.get(f"{BASELINE}/{loop}", {}).get("cpu_per_wall_s")
        ratio = r["cpu_per_wall_s"] / base if base else None
        rows.append(
            [
                loop,
                impl,
                r["cpu_per_wall_s"],
                ratio,
                r["fires_per_s"],
                r["rss_delta_bytes"] / MIB,
                r["setup_us_per_arm"],
            ]
        )
        if impl in limits:
            targets.append(
                h.target(f"{impl} on {loop}, CPU vs call_later", ratio, "<=", limits[impl], "x")
            )
    for loop in h.available_loops():
        facade = results.get(f"kamailio/{loop}", {}).get("cpu_per_wall_s")
        floor = results.get(f"pause+reschedule/{loop}", {}).get("cpu_per_wall_s")
        if facade and floor:
            notes.append(
                f"kamailio on {loop}: {facade / floor:.2f}x its floor (pause+reschedule, the "
                "two core calls timer_del and timer_add make)"
            )
    title = (
        f"churn: {n:,} pending one-shots of 30-60 s, {per_batch:,} re-armed every 100 ms "
        f"({per_batch * 10:,}/s), in their steady state; CPU over {measured / 10:g} s"
    )
    headers = ["loop", "impl", "CPU s/wall s", "x raw", "fires/s", "RSS delta MiB", "arm us"]
    notes.append(
        "x raw: CPU relative to call_later + handle.cancel() on the same loop, same run; "
        "arm us: the initial arms (setup), per one-shot; fires: the one-shots not re-armed in "
        "time (few: 30-60 s delays, each slot re-armed every 10 s on average)"
    )
    data = {"pending": n, "rearms_per_batch": per_batch, "batches_measured": measured}
    return h.Report(
        [h.format_table(title, headers, rows)], data, targets if not quick else [], notes
    )


# -- the memory check (--minutes) -----------------------------------------------------------------


async def _memory(impl: str, minutes: float, sample_s: float, quick: bool) -> dict[str, Any]:
    n, per_batch, _, _ = QUICK if quick else FULL

    async def body(fires: _Fires, origin_ns: int, batches_done: Callable[[], int]) -> Any:
        # (s since the churn started, RSS bytes, fires so far)
        samples: list[tuple[float, int, int]] = [(0.0, h.rss_bytes(), fires.count)]
        c0 = h.cpu_s()
        end_ns = origin_ns + round(minutes * 60e9)
        k = 0
        while True:
            k += 1
            at_ns = min(origin_ns + round(k * sample_s * 1e9), end_ns)
            await h.sleep_until(at_ns)
            samples.append(((at_ns - origin_ns) / 1e9, h.rss_bytes(), fires.count))
            if at_ns >= end_ns:
                break
        wall_s = (time.monotonic_ns() - origin_ns) / 1e9
        return {
            "minutes": minutes,
            "samples": samples,
            "cpu_per_wall_s": (h.cpu_s() - c0) / wall_s,
            "fires_per_s": fires.count / wall_s,
            "batches": batches_done(),
        }

    return await _churn(impl, n, per_batch, None, body)


def _memory_summary(r: dict[str, Any]) -> dict[str, float]:
    """RSS after warm-up to the end. The warm-up is the longest delay (60 s; half the run if
    shorter): a cancelled one-shot left in a lazily cleaned queue (asyncio's heap, say) can stay
    until its deadline, so RSS may only settle once the first cancelled entries have expired."""
    samples = r["samples"]
    warmup_s = min(DELAY_MS[1] / 1000, r["minutes"] * 30)
    steady = [rss for at, rss, _ in samples if at >= warmup_s] or [samples[-1][1]]
    return {
        "rss_start_mib": samples[0][1] / MIB,
        "rss_steady_first_mib": steady[0] / MIB,
        "rss_end_mib": samples[-1][1] / MIB,
        "rss_steady_spread_mib": (max(steady) - min(steady)) / MIB,
        "rss_steady_drift_mib": (steady[-1] - steady[0]) / MIB,
        "warmup_s": warmup_s,
    }


def _memory_main(args: argparse.Namespace) -> int:
    if args.variant is not None:  # child
        impl, loop = args.variant.split("/")
        h.progress(NAME, f"{args.variant}: memory check, {args.minutes:g} min")
        data = h.run_on_loop(loop, lambda: _memory(impl, args.minutes, args.sample_s, args.quick))
        args.result.write_text(json.dumps(data), encoding="utf-8")
        return 0
    print(h.machine_line(h.machine_info()), end="\n\n", flush=True)
    names = [f"{impl}/{args.loop}" for impl in IMPLS]
    results: dict[str, dict[str, Any]] = {}
    timeout_s = args.minutes * 60 + 180
    with tempfile.TemporaryDirectory(prefix="aiotimer-bench-churn-") as tmp:

        def run(variant: str) -> tuple[str, str | None, Path]:
            result_file = Path(tmp) / f"{variant.replace('/', '_').replace('+', '_')}.json"
            cmd = ["-m", "benchmarks.churn", "--variant", variant, "--result", str(result_file)]
            cmd += ["--minutes", str(args.minutes), "--sample-s", str(args.sample_s)]
            cmd += ["--quick"] if args.quick else []
            return variant, h.run_child(cmd, timeout_s), result_file

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            for variant, error, result_file in pool.map(run, names):
                if error is None and result_file.exists():
                    results[variant] = json.loads(result_file.read_text(encoding="utf-8"))
                else:
                    results[variant] = {"error": error or "wrote no result"}
    rows: list[list[object]] = []
    targets = []
    for variant, r in results.items():
        if "error" in r:
            print(f"note: {variant}: {r['error']}")
            continue
        r.update(_memory_summary(r))
        rows.append(
            [
                variant,
                r["rss_start_mib"],
                r["rss_steady_first_mib"],
                r["rss_end_mib"],
                r["rss_steady_spread_mib"],
                r["rss_steady_drift_mib"],
                r["fires_per_s"],
                r["cpu_per_wall_s"],
            ]
        )
        targets.append(
            h.target(
                f"{variant}: RSS spread after warm-up",
                r["rss_steady_spread_mib"],
                "<=",
                RSS_FLAT_MIB,
                "MiB",
            )
        )
    n, per_batch, _, _ = QUICK if args.quick else FULL
    title = (
        f"churn memory: {n:,} pending one-shots, {per_batch * 10:,} re-arms/s for "
        f"{args.minutes:g} min ({args.loop}, variants side by side); RSS in MiB"
    )
    headers = ["variant", "start", "after warm-up", "end", "spread", "drift", "fires/s", "CPU/wall"]
    print(h.format_table(title, headers, rows), end="\n\n")
    print(h.format_targets(targets), end="\n\n")
    print(
        "note: start = RSS when the churn starts (after the initial arms); warm-up = the longest "
        "delay, 60 s (half the run if shorter); spread = max - min of the samples after it; "
        "drift = last - first of them. CPU/wall is indicative: the variants share the machine."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "churn_memory.json"
    path.write_text(json.dumps({"variants": results, "targets": targets}, indent=1) + "\n")
    print(f"results: {path}")
    return 0 if all("error" not in r for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sample-s", type=float, default=None)
    parser.add_argument("--loop", choices=h.available_loops(), default="asyncio")
    parser.add_argument("--variant")
    parser.add_argument("--result", type=Path)
    parser.add_argument("--out", type=Path, default=h.DEFAULT_OUT)
    args, rest = parser.parse_known_args(argv)
    if args.minutes is None:  # the CPU table, through the shared workload runner
        return h.workload_main(argv, sys.modules[__name__])
    if rest:
        parser.error(f"unexpected arguments with --minutes: {' '.join(rest)}")
    if not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.sample_s is None:
        args.sample_s = max(1.0, args.minutes)  # 60 samples
    return _memory_main(args)


if __name__ == "__main__":
    sys.exit(main())
