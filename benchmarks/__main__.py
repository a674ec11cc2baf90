"""``python -m benchmarks [WORKLOAD ...] [--quick] [--out DIR]``: aiotimer's benchmark suite.

Workloads (all by default, in this order):

* ``core``: 100,000 periodic 1 s timers vs raw ``loop.call_at`` chains, asyncio and uvloop;
* ``precision``: lateness of a 1 ms timer per tick source vs ``call_at`` and a sleep loop;
* ``apscheduler``: 10,000 periodic 1 s jobs vs APScheduler 3's ``AsyncIOScheduler``;
* ``memory``: memory and registration cost of 1,000,000 timers;
* ``policies``: CPU per fire of each callback kind and policy, next to the fast path;
* ``churn``: 100,000 pending one-shots, 10,000 re-arms/s, vs ``call_later`` + ``cancel()``
  (``python -m benchmarks.churn --minutes N`` is its long memory check);
* ``process``: timer processes (``benchmarks/process.py``, when present);
* ``scrape``: ``/metrics`` and ``/timers`` of an app with 100,000 timers, scraped in a loop,
  next to a 10 ms probe timer's lateness;
* ``cluster``: claim cost of cluster timers on SQLite, PostgreSQL and Redis, 1 and 3 nodes;
* ``instructions``: instructions per fire of the coroutine paths and their floors, counted by
  valgrind's callgrind (repeatable where CPU seconds are noisy; skipped without valgrind).

Each workload runs in a process of its own, bounded in time; its tables go to stdout (in the
order asked for), progress to stderr. The full mode runs one workload at a time; ``--quick``
runs two at a time (``--jobs``) to stay within ~2 minutes on 2 cores, so its numbers are
indicative only; ``--variant-jobs N`` runs N variants of a workload at a time, for the test
suite's smoke tests (most variants wait on the clock; their numbers are then indicative too).
``results.json`` in ``--out`` gathers every workload's results with the machine they ran on;
PNG plots go next to it. ``--quick`` is the CI smoke run. The exit status is non-zero when a
workload failed to run; missed targets are reported, not failures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import _harness as h

WORKLOADS: dict[str, str] = {
    "core": "benchmarks.core",
    "precision": "benchmarks.precision",
    "apscheduler": "benchmarks.apscheduler_cmp",
    "memory": "benchmarks.memory",
    "policies": "benchmarks.policies",
    "churn": "benchmarks.churn",
    "process": "benchmarks.process",
    "scrape": "benchmarks.scrape",
    "cluster": "benchmarks.cluster",
    "instructions": "benchmarks.instructions",
}
TIMEOUT_S = {
    "core": 600.0,
    "precision": 500.0,
    "apscheduler": 600.0,
    "memory": 900.0,
    "policies": 300.0,
    "churn": 1500.0,  # (ten variants of ~95 s: 60 s of warm-up, 30 s measured)
    "process": 600.0,
    "scrape": 600.0,
    "cluster": 600.0,
    "instructions": 1500.0,  # (nine variants under valgrind, one at a time: ~4 min)
}
QUICK_TIMEOUT_S = 90.0
QUICK_TIMEOUT_OVER_S = {"instructions": 180.0}
"""Quick-mode bounds over the default: two variants under valgrind, ~25 s each alone, slower
beside another workload."""
QUICK_JOBS = 2
"""Workloads run at a time in the quick mode (CI on 2 cores); the full mode runs one at a time."""
PROCESS_RUNNER = "import sys\nfrom benchmarks.process import main\nsys.exit(main(sys.argv[1:]))"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="aiotimer's benchmark suite: aiotimer next to its baselines, same run, "
        "same loop.",
    )
    parser.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"workloads to run (default: all): {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for CI (~2 min)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help=f"workloads at a time (default: 1, or {QUICK_JOBS} with --quick)",
    )
    parser.add_argument(
        "--variant-jobs",
        type=int,
        default=1,
        metavar="N",
        help="each workload's variants at a time (default: 1); more is for smoke tests: "
        "they compete for the CPU, so their numbers are indicative only",
    )
    parser.add_argument(
        "--out", type=Path, default=h.DEFAULT_OUT, help="results directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.variant_jobs < 1:
        parser.error(f"--variant-jobs must be >= 1, got {args.variant_jobs}")
    args.workloads = list(dict.fromkeys(args.workloads)) or list(WORKLOADS)
    return args


def _run_workload(
    name: str, label: str, quick: bool, out: Path, timeout_s: float, variant_jobs: int = 1
) -> tuple[dict[str, Any], str]:
    """Run one workload in a child; its results and the tables it printed."""
    h.progress("benchmarks", label)
    args = ["--quick"] if quick else []
    if name == "process":  # another engineer's module: its main(argv) is the interface
        if importlib.util.find_spec(WORKLOADS[name]) is None:
            note = "skipped: benchmarks/process.py is not present in this checkout"
            return {"workload": name, "skipped": note, "ok": True}, f"process: {note}\n"
        error, stdout = h.run_child_captured(["-c", PROCESS_RUNNER, *args], timeout_s)
        return {"workload": name, "error": error, "ok": error is None}, stdout
    result_file = out / f"{name}.json"
    result_file.unlink(missing_ok=True)
    if variant_jobs > 1:  # (the process workload above has a command line of its own)
        args += ["--variant-jobs", str(variant_jobs)]
    error, stdout = h.run_child_captured(
        ["-m", WORKLOADS[name], "--out", str(out), *args], timeout_s
    )
    if not result_file.exists():
        return {"workload": name, "error": error or "wrote no results", "ok": False}, stdout
    data: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    if error is not None:
        data["error"] = error
        data["ok"] = False
    return data, stdout


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    machine = h.machine_info()
    print(h.machine_line(machine), end="\n\n", flush=True)
    jobs = args.jobs if args.jobs is not None else (QUICK_JOBS if args.quick else 1)
    if jobs > 1 and len(args.workloads) > 1:
        print(
            f"note: {jobs} workloads at a time (the quick default): the numbers are indicative; "
            "run without --quick (one at a time) for numbers to quote\n",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    workloads: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for i, name in enumerate(args.workloads, 1):
            timeout_s = (
                QUICK_TIMEOUT_OVER_S.get(name, QUICK_TIMEOUT_S) if args.quick else TIMEOUT_S[name]
            )
            label = f"workload {i}/{len(args.workloads)}: {name} ({mode})"
            futures[name] = pool.submit(
                _run_workload, name, label, args.quick, args.out, timeout_s, args.variant_jobs
            )
        for name, future in futures.items():  # tables in the order asked for
            data, stdout = future.result()
            workloads[name] = data
            print(stdout if stdout.endswith("\n\n") or not stdout else stdout + "\n", end="")
            sys.stdout.flush()
            if data.get("error"):
                h.progress("benchmarks", f"workload {name} failed: {data['error']}")

    targets = [
        {**t, "target": f"{name}: {t['target']}"}
        for name, data in workloads.items()
        for t in data.get("targets", [])
    ]
    if targets:
        print(h.format_targets(targets), end="\n\n")
    elapsed = time.perf_counter() - started
    results = {
        "machine": machine,
        "command": ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])],
        "quick": args.quick,
        "jobs": jobs,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "workloads": workloads,
    }
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    failed = [name for name, data in workloads.items() if not data.get("ok", False)]
    print(f"results: {path} ({elapsed:.0f} s){'; FAILED: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
