"""Workload ``apscheduler``: 10,000 periodic 1 s jobs, aiotimer next to APScheduler 3.

APScheduler 3's ``AsyncIOScheduler`` with one ``IntervalTrigger(seconds=1)`` per job, on the
same asyncio loop kind as aiotimer. Both libraries get the same job code and the same method:

* every job records its lateness in its own body, against its library's grid (aiotimer:
  ``grid_origin_ns`` on the monotonic clock; APScheduler: whole seconds of the wall clock, its
  ``start_date``), so lateness is measured identically for both and on every run;
* jobs are added before ``start()`` (APScheduler's usual way: adding 10,000 jobs to a running
  ``AsyncIOScheduler`` queues one wake-up per job, and those wake-ups re-process the due jobs);
  registration = the adds plus ``start()``, per job;
* memory per job: tracemalloc over the adds and ``start()`` of a second scheduler built after
  the timed run (tracemalloc slows allocations down; 2,000 jobs in the quick mode);
* CPU per wall second over whole seconds, half-way between grid points (see
  :func:`benchmarks._harness.measure_window`).

Variants: ``aiotimer/sync`` (a plain function, run inline), ``aiotimer/async`` (an ``async def``
that returns without suspending: aiotimer runs it eagerly, stepped at its grid point with no
task, issue 15) and ``apscheduler/async`` (an ``async def``: APScheduler's way to run on the
loop, a task per run); the full run adds ``apscheduler/sync`` (a plain function: APScheduler
runs it in the loop's default thread pool). APScheduler's log records (missed runs, skipped
instances) are counted, not printed.

``floor/eager`` is the floor of the coroutine jobs without aiotimer: a ``call_at`` chain on the
same 1 s grid that, each second, starts every job the way an eager run must (a context of its
own with a context variable set, one ``send``, the current task swapped for a host task once
per wake-up) and nothing else: no queue, no policy, no statistics. No implementation of eager
runs can cost less; the report sets the targets against it.

Targets: 50x less CPU than APScheduler's async jobs, p99 lateness 5 ms for sync jobs (issue 3)
and 10 ms for coroutine jobs (issue 15).
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import contextvars
import datetime
import gc
import logging
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _harness as h
from . import plots

NAME = "apscheduler"
N_JOBS = 10_000
WINDOW_S = 10
QUICK_WINDOW_S = 2
QUICK_MEMORY_JOBS = 2_000
NS_PER_S = 1_000_000_000


def _apscheduler_version() -> str | None:
    try:
        import apscheduler
    except ImportError:
        return None
    return str(getattr(apscheduler, "__version__", "3"))


P99_LIMIT_MS = {"aiotimer/sync": 5.0, "aiotimer/async": 10.0}
"""p99 lateness targets: sync jobs (issue 3), coroutine jobs (issue 15)."""
LESS_CPU_X = 50.0
"""Both: at least this many times less CPU per wall second than APScheduler's async jobs."""


FLOOR = "floor/eager"


def variants(quick: bool) -> list[str]:
    names = ["aiotimer/sync", "aiotimer/async", FLOOR]
    if _apscheduler_version() is not None:
        names += ["apscheduler/async"] if quick else ["apscheduler/async", "apscheduler/sync"]
    return names


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 150.0


class _Recorder:
    """The job body shared by both libraries: it only records the time it ran (two C calls);
    lateness against the 1 s grid is worked out afterwards.

    Neither library runs a job before its time (aiotimer never fires early; APScheduler starts a
    job only once the wall clock has reached its run time), so the time past the last grid point
    is the lateness, as long as it stays under 1 s (flagged otherwise: see the report).
    """

    def __init__(self, clock: Callable[[], int], anchor_ns: int) -> None:
        self.anchor_ns = anchor_ns
        self.ran_ns = array("q")
        record = self.ran_ns.append

        def job() -> None:
            record(clock())

        async def async_job() -> None:
            record(clock())

        self.job = job
        self.async_job = async_job

    def lateness(self, first: int, end: int) -> dict[str, Any]:
        """Lateness of runs ``first`` to ``end - 1`` (the measuring window's)."""
        anchor_ns = self.anchor_ns
        s = h.summarize_ns((t - anchor_ns) % NS_PER_S for t in self.ran_ns[first:end])
        return {
            "count": s["count"],
            "p50_ms": s["p50_us"] / 1e3,
            "p99_ms": s["p99_us"] / 1e3,
            "max_ms": s["max_us"] / 1e3,
        }


class _LogCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        kind = (
            "missed"
            if "was missed by" in msg
            else "skipped (max instances)"
            if "maximum number of running instances" in msg
            else record.levelname.lower()
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1


class _AiotimerJobs:
    """10,000 jobs on an aiotimer ``Scheduler`` whose second grid starts at ``origin_ns``."""

    def __init__(self, mode: str) -> None:
        import aiotimer

        self.origin_ns = time.monotonic_ns()
        self.scheduler = aiotimer.Scheduler(grid_origin_ns=self.origin_ns, name="bench")
        self.recorder = _Recorder(time.monotonic_ns, self.origin_ns)
        self.job = self.recorder.job if mode == "sync" else self.recorder.async_job
        self.log_records: dict[str, int] = {}

    def add(self) -> None:
        self.scheduler.add_every_s(1, self.job)

    async def start(self) -> None:
        await self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()


class _EagerFloorJobs:
    """The floor of 10,000 eager coroutine jobs (see the module): a ``call_at`` chain on the 1 s
    grid from ``origin_ns`` that steps each job's coroutine as an eager run must, no more."""

    def __init__(self, mode: str) -> None:
        self.origin_ns = time.monotonic_ns()
        self.recorder = _Recorder(time.monotonic_ns, self.origin_ns)
        self.job = self.recorder.async_job
        self.log_records: dict[str, int] = {}
        self.n = 0
        self._handle: asyncio.TimerHandle | None = None
        self._host: asyncio.Task[None] | None = None

    def add(self) -> None:
        self.n += 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host = self._host = loop.create_task(asyncio.sleep(3600))
        var: contextvars.ContextVar[int] = contextvars.ContextVar("floor", default=0)
        current = asyncio.current_task
        leave, enter = asyncio.tasks._leave_task, asyncio.tasks._enter_task
        copy = contextvars.copy_context
        job = self.job

        def second(k: int) -> None:
            task = current(loop)  # the host is current for the whole wake-up, as aiotimer does
            if task is not None:
                leave(loop, task)
            enter(loop, host)
            try:
                for _ in range(self.n):
                    coro = job()
                    context = copy()
                    context.run(var.set, k)
                    try:  # noqa: SIM105 (suppress() would cost more than the step it measures)
                        context.run(coro.send, None)
                    except StopIteration:
                        pass
            finally:
                leave(loop, host)
                if task is not None:
                    enter(loop, task)
            self._handle = loop.call_at(
                (self.origin_ns + (k + 1) * NS_PER_S) / NS_PER_S, second, k + 1
            )

        self._handle = loop.call_at((self.origin_ns + NS_PER_S) / NS_PER_S, second, 1)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._host is not None:
            self._host.cancel()


class _APSchedulerJobs:
    """10,000 jobs on APScheduler 3's ``AsyncIOScheduler``, each with its own
    ``IntervalTrigger(seconds=1)`` starting at a whole second of the wall clock."""

    def __init__(self, mode: str) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self._trigger = IntervalTrigger
        counter = _LogCounter()
        logger = logging.getLogger("apscheduler")
        logger.handlers[:] = [counter]
        logger.propagate = False
        self.log_records = counter.counts
        anchor_s = int(time.time())
        self._anchor = datetime.datetime.fromtimestamp(anchor_s, tz=datetime.UTC)
        # The same grid on the monotonic clock, for the measuring window.
        self.origin_ns = anchor_s * NS_PER_S - (time.time_ns() - time.monotonic_ns())
        self.recorder = _Recorder(time.time_ns, anchor_s * NS_PER_S)
        self.job = self.recorder.job if mode == "sync" else self.recorder.async_job
        self.scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())

    def add(self) -> None:
        self.scheduler.add_job(self.job, self._trigger(seconds=1, start_date=self._anchor))

    async def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)  # done by a callback on the loop
        await asyncio.sleep(0.01)


async def _run(tag: str, lib: str, mode: str, window_s: int, mem_jobs: int) -> dict[str, Any]:
    jobs_type: type[_AiotimerJobs | _EagerFloorJobs | _APSchedulerJobs] = (
        _AiotimerJobs
        if lib == "aiotimer"
        else _EagerFloorJobs
        if lib == "floor"
        else _APSchedulerJobs
    )
    jobs = jobs_type(mode)
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(N_JOBS):
        jobs.add()
    await jobs.start()
    elapsed = time.perf_counter() - t0
    h.progress(NAME, f"{tag}: {N_JOBS:,} jobs added and started in {elapsed:.2f} s")
    result: dict[str, Any] = {"register_s": elapsed, "register_us_per_job": elapsed / N_JOBS * 1e6}
    fires = jobs.recorder.ran_ns.__len__

    def mark() -> tuple[int, dict[str, int]]:
        return fires(), dict(jobs.log_records)

    try:
        window = await h.measure_window(NAME, tag, jobs.origin_ns, window_s, fires, mark)
        result.update(window.as_dict())
    finally:
        await jobs.stop()
    (first, logs0), (end, logs1) = window.before, window.after
    result["lateness"] = jobs.recorder.lateness(first, end)
    result["log_records"] = {
        k: n - logs0.get(k, 0) for k, n in logs1.items() if n > logs0.get(k, 0)
    }
    if lib == "aiotimer":
        result["tick_source"] = getattr(jobs.scheduler, "precision", "loop")

    # Memory: a second scheduler, built under tracemalloc (which would distort the timings).
    h.progress(NAME, f"{tag}: memory of {mem_jobs:,} jobs (tracemalloc)")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    jobs = jobs_type(mode)
    for _ in range(mem_jobs):
        jobs.add()
    await jobs.start()
    result["bytes_per_job"] = (tracemalloc.get_traced_memory()[0] - before) / mem_jobs
    result["memory_jobs"] = mem_jobs
    tracemalloc.stop()
    await jobs.stop()
    return result


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    lib, mode = variant.split("/")
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    mem_jobs = QUICK_MEMORY_JOBS if quick else N_JOBS
    h.progress(NAME, f"{variant}: {N_JOBS:,} periodic 1 s jobs, {window_s} s window")
    result = h.run_on_loop("asyncio", lambda: _run(variant, lib, mode, window_s, mem_jobs))
    return {"lib": lib, "mode": mode, "loop": "asyncio", "jobs": N_JOBS, **result}


# -- report --------------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    notes: list[str] = []
    rows: list[list[object]] = []
    ok = {k: r for k, r in results.items() if "error" not in r}
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        lat = r["lateness"]
        rows.append(
            [
                f"{variant}[{r['tick_source']}]" if "tick_source" in r else variant,
                r["register_us_per_job"],
                r["bytes_per_job"],
                r["cpu_per_wall_s"],
                r["fires_per_s"],
                r["cpu_s"] / (r["fires_per_s"] * r["window_s"]) * 1e6 if r["fires_per_s"] else None,
                lat["p50_ms"],
                lat["p99_ms"],
                lat["max_ms"],
            ]
        )
        if r["fires_per_s"] < 0.99 * N_JOBS or lat["max_ms"] > 900:
            notes.append(
                f"{variant}: {r['fires_per_s']:,.0f} fires/s for {N_JOBS:,} jobs, max lateness "
                f"{lat['max_ms']:.0f} ms: it cannot keep up, and lateness over 1 s would alias"
            )
        if r.get("log_records"):
            notes.append(f"{variant}: APScheduler log records in the window: {r['log_records']}")
    if "apscheduler/async" not in results:
        notes.append("APScheduler 3 is not installed (pip install '.[bench]'): no baseline")
    ratio_rows: list[list[object]] = []
    targets: list[dict[str, Any]] = []
    base = ok.get("apscheduler/async")
    for variant in ("aiotimer/sync", "aiotimer/async"):
        a = ok.get(variant)
        if a is None or base is None:
            continue
        for label, get in (
            ("CPU s per wall s", lambda r: r["cpu_per_wall_s"]),
            ("p99 lateness ms", lambda r: r["lateness"]["p99_ms"]),
            ("registration us/job", lambda r: r["register_us_per_job"]),
            ("bytes/job (tracemalloc)", lambda r: r["bytes_per_job"]),
        ):
            va, vb = get(a), get(base)
            ratio_rows.append([variant, label, va, vb, va / vb if vb else None])
        less_cpu = base["cpu_per_wall_s"] / a["cpu_per_wall_s"] if a["cpu_per_wall_s"] else None
        targets.append(
            h.target(f"{variant}: CPU, APScheduler / aiotimer", less_cpu, ">=", LESS_CPU_X, "x")
        )
        p99_ms = a["lateness"]["p99_ms"]
        targets.append(
            h.target(f"{variant}: p99 lateness", p99_ms, "<=", P99_LIMIT_MS[variant], "ms")
        )
    if base is not None and base["fires_per_s"] < 0.99 * N_JOBS:
        notes.append(
            f"apscheduler/async ran {base['fires_per_s']:,.0f} of {N_JOBS:,} fires/s at "
            f"{base['cpu_per_wall_s']:.3f} CPU s per wall s: it cannot do this workload here, so "
            "'APScheduler / aiotimer' CPU ratios are lower bounds (its CPU per wall second "
            "cannot grow past one core)"
        )
    floor = ok.get(FLOOR)
    if floor is not None and base is not None:
        notes.append(
            f"{FLOOR}: the eager semantics alone cost {floor['cpu_per_wall_s']:.4f} CPU s per wall "
            f"s (p99 {floor['lateness']['p99_ms']:.1f} ms): APScheduler / floor = "
            f"{base['cpu_per_wall_s'] / floor['cpu_per_wall_s']:.1f}x, the most any eager "
            f"implementation can reach here (aiotimer/async: "
            f"{ok['aiotimer/async']['cpu_per_wall_s'] / floor['cpu_per_wall_s']:.2f}x the floor)"
            if "aiotimer/async" in ok and floor["cpu_per_wall_s"]
            else f"{FLOOR}: {floor['cpu_per_wall_s']:.4f} CPU s per wall s"
        )
    title = (
        f"apscheduler: {N_JOBS:,} periodic 1 s jobs on asyncio, {window_s} s window "
        "(lateness measured in each job; B/job: tracemalloc)"
    )
    headers = [
        "variant",
        "reg us/job",
        "B/job",
        "CPU s/s",
        "fires/s",
        "CPU us/fire",
        "p50 late ms",
        "p99 late ms",
        "max late ms",
    ]
    tables = [h.format_table(title, headers, rows)]
    if ratio_rows:
        tables.append(
            h.format_table(
                "apscheduler ratios: aiotimer / APScheduler 3 (async jobs); < 1: aiotimer is "
                "cheaper or less late",
                ["aiotimer variant", "metric", "aiotimer", "APScheduler", "ratio"],
                ratio_rows,
            )
        )
    plot_paths = plots.bars(
        out / "apscheduler.png",
        f"{N_JOBS:,} periodic 1 s jobs: aiotimer vs APScheduler 3",
        ok,
        [
            ("CPU s per wall s", lambda r: r["cpu_per_wall_s"]),
            ("p99 lateness (ms)", lambda r: r["lateness"]["p99_ms"]),
        ],
        notes,
    )
    data = {"jobs": N_JOBS, "window_s": window_s, "apscheduler_version": _apscheduler_version()}
    return h.Report(tables, data, targets, notes, plot_paths)


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
