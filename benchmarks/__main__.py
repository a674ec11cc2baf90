"""``python -m benchmarks [WORKLOAD ...] [--quick] [--out DIR]``: aiotimer's benchmark suite.

Workloads (all by default, in this order):

* ``core``: 100,000 periodic 1 s timers vs raw ``loop.call_at`` chains, asyncio and uvloop;
* ``precision``: lateness of a 1 ms timer per tick source vs ``call_at`` and a sleep loop;
* ``apscheduler``: 10,000 periodic 1 s jobs vs APScheduler 3's ``AsyncIOScheduler``;
* ``memory``: memory and registration cost of 1,000,000 timers;
* ``process``: timer processes (``benchmarks/process.py``, when present).

Each workload runs in a process of its own, bounded in time; its tables go to stdout, progress
to stderr. ``results.json`` in ``--out`` gathers every workload's results with the machine they
ran on; PNG plots go next to it. ``--quick`` is the CI smoke run (well under a minute). The exit
status is non-zero when a workload failed to run; missed targets are reported, not failures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _harness as h

WORKLOADS: dict[str, str] = {
    "core": "benchmarks.core",
    "precision": "benchmarks.precision",
    "apscheduler": "benchmarks.apscheduler_cmp",
    "memory": "benchmarks.memory",
    "process": "benchmarks.process",
}
TIMEOUT_S = {
    "core": 600.0,
    "precision": 500.0,
    "apscheduler": 600.0,
    "memory": 900.0,
    "process": 600.0,
}
QUICK_TIMEOUT_S = 90.0
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
    parser.add_argument("--quick", action="store_true", help="short runs, for CI (< 1 min)")
    parser.add_argument(
        "--out", type=Path, default=h.DEFAULT_OUT, help="results directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    args.workloads = list(dict.fromkeys(args.workloads)) or list(WORKLOADS)
    return args


def _run_process_workload(quick: bool, timeout_s: float) -> dict[str, Any]:
    """``benchmarks/process.py`` is another engineer's module: run its ``main(argv)``."""
    if importlib.util.find_spec(WORKLOADS["process"]) is None:
        note = "skipped: benchmarks/process.py is not present in this checkout"
        print(f"process: {note}\n")
        return {"workload": "process", "skipped": note, "ok": True}
    error = h.run_child(["-c", PROCESS_RUNNER, *(["--quick"] if quick else [])], timeout_s)
    return {"workload": "process", "error": error, "ok": error is None}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    machine = h.machine_info()
    print(h.machine_line(machine), end="\n\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    workloads: dict[str, Any] = {}
    for i, name in enumerate(args.workloads, 1):
        mode = "quick" if args.quick else "full"
        h.progress("benchmarks", f"workload {i}/{len(args.workloads)}: {name} ({mode})")
        timeout_s = QUICK_TIMEOUT_S if args.quick else TIMEOUT_S[name]
        if name == "process":
            workloads[name] = _run_process_workload(args.quick, timeout_s)
            continue
        result_file = args.out / f"{name}.json"
        result_file.unlink(missing_ok=True)
        quick = ["--quick"] if args.quick else []
        sys.stdout.flush()
        error = h.run_child(["-m", WORKLOADS[name], "--out", str(args.out), *quick], timeout_s)
        if result_file.exists():
            workloads[name] = json.loads(result_file.read_text(encoding="utf-8"))
            if error is not None:
                workloads[name]["error"] = error
        else:
            workloads[name] = {"workload": name, "error": error or "wrote no results", "ok": False}
        if error is not None:
            h.progress("benchmarks", f"workload {name} failed: {error}")

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
