"""Shared benchmark machinery: machine info, loops, CPU/RSS meters, percentiles, tables, JSON,
and the runner that gives every workload and every variant a process of its own.

Ground rules:

* Nothing printed is hard-coded: every number comes from the run that prints it.
* A workload module (``benchmarks.core``...) defines ``NAME``, ``variants(quick)``,
  ``run_variant(name, quick)`` (runs in a child process, returns JSON-ready data) and
  ``report(results, quick, out)`` (runs in the workload process: tables, targets, plots).
  :func:`workload_main` turns those into ``python -m benchmarks.<module> [--quick] [--out DIR]``.
* Each variant runs in a fresh interpreter, so memory and CPU numbers of one cannot bleed into
  another, and each is bounded in time: a hung variant is killed and reported, not waited for.
* Tables go to stdout, progress to stderr, results to ``<out>/<workload>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

__all__ = [
    "DEFAULT_OUT",
    "Report",
    "Window",
    "available_loops",
    "cpu_s",
    "fmt",
    "format_table",
    "machine_info",
    "machine_line",
    "measure_window",
    "percentile",
    "progress",
    "rss_bytes",
    "run_on_loop",
    "sleep_until",
    "summarize_ns",
    "target",
    "workload_main",
]

T = TypeVar("T")
NS_PER_S = 1_000_000_000
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_OUT = PACKAGE_DIR / "results"


# -- progress ----------------------------------------------------------------------------------


def progress(workload: str, message: str) -> None:
    """One progress line on stderr (stdout is kept for the tables); one write per line, so
    lines from concurrent workloads do not interleave."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {workload}: {message}\n")
    sys.stderr.flush()


# -- the machine ---------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, OS, Python and the versions of every library a workload uses."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": {
            name: _version(name)
            for name in ("aiotimer", "anyio", "uvloop", "trio", "apscheduler", "matplotlib")
        },
        "git": _git_commit(),
        "load_average": _loadavg(),
    }


def machine_line(info: dict[str, Any]) -> str:
    v = info["versions"]
    return (
        f"machine: {info['cpu_model']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['os']}, {info['python_implementation']} {info['python']}, "
        f"uvloop {v['uvloop'] or 'absent'}, anyio {v['anyio']}, aiotimer {v['aiotimer']} "
        f"@ {info['git'] or '?'}; load average {_load(info)} at start"
    )


def _load(info: dict[str, Any]) -> str:
    load = info.get("load_average")
    return "/".join(f"{x:.2f}" for x in load) if load else "?"


# -- event loops ---------------------------------------------------------------------------------


def available_loops() -> list[str]:
    """``asyncio``, and ``uvloop`` where it is installed."""
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass
    else:
        loops.append("uvloop")
    return loops


def run_on_loop(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh loop of the named kind (``asyncio`` or ``uvloop``)."""
    factory: Callable[[], asyncio.AbstractEventLoop]
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    elif loop == "asyncio":
        factory = asyncio.new_event_loop
    else:
        raise ValueError(f"unknown loop {loop!r}; expected one of {available_loops()}")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


# -- meters --------------------------------------------------------------------------------------


def cpu_s() -> float:
    """CPU seconds (user + system) used by this process so far, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc/self/statm``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def sleep_until(deadline_ns: int) -> None:
    """Sleep on the running asyncio loop until ``time.monotonic_ns()`` reaches ``deadline_ns``."""
    await asyncio.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / NS_PER_S))


@dataclass
class Window:
    """What :func:`measure_window` measured; ``before``/``after`` are the marks at its ends."""

    wall_s: float
    cpu_s: float
    fires: int
    before: Any = None
    after: Any = None

    def as_dict(self) -> dict[str, float]:
        return {
            "window_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "cpu_per_wall_s": self.cpu_s / self.wall_s,
            "fires_per_s": self.fires / self.wall_s,
        }


async def measure_window(
    workload: str,
    tag: str,
    origin_ns: int,
    window_s: int,
    fires: Callable[[], int],
    mark: Callable[[], Any] | None = None,
) -> Window:
    """CPU and fires over ``window_s`` whole seconds of a 1 s grid anchored at ``origin_ns``.

    The window starts half-way between two grid points, at least one second after
    ``origin_ns`` and after now, and ends ``window_s`` seconds later at the same phase, so it
    holds one dispatch per second whatever the dispatch costs. ``fires()`` (a counter) and
    ``mark()`` (any snapshot, e.g. of lateness statistics) are read at both ends, outside the
    CPU window: they may be costly.
    """
    now_ns = time.monotonic_ns()
    k = max(1, -(-(now_ns - origin_ns) // NS_PER_S))
    start_ns = origin_ns + k * NS_PER_S + NS_PER_S // 2
    await sleep_until(start_ns)
    before = mark() if mark is not None else None
    fires0 = fires()
    w0, c0 = time.monotonic_ns(), cpu_s()
    for s in range(1, window_s + 1):
        await sleep_until(w0 + s * NS_PER_S)  # from w0: both ends at the same phase
        progress(workload, f"{tag}: measuring {s}/{window_s} s")
    w1, c1 = time.monotonic_ns(), cpu_s()
    fires1 = fires()
    after = mark() if mark is not None else None
    return Window((w1 - w0) / NS_PER_S, c1 - c0, fires1 - fires0, before, after)


# -- statistics ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of already sorted values; NaN when empty."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    return sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))]


def summarize_ns(samples_ns: Iterable[int]) -> dict[str, Any]:
    """p50/p99/p99.9/max/min (in µs) and early count (< 0) of lateness samples in ns."""
    values = sorted(samples_ns)
    n = len(values)
    out: dict[str, Any] = {"count": n, "early": sum(1 for v in values if v < 0)}
    for key, q in (("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)):
        out[key] = percentile(values, q) / 1e3
    out["max_us"] = values[-1] / 1e3 if n else math.nan
    out["min_us"] = values[0] / 1e3 if n else math.nan
    # 101 points of the CDF, enough to redraw it without the raw samples.
    out["cdf_us"] = [percentile(values, i / 100) / 1e3 for i in range(101)] if n else []
    return out


# -- formatting ----------------------------------------------------------------------------------


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: numbers with ``digits`` significant digits, ``-`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (value == int(value) and abs(value) >= 10**digits):
        return f"{int(value):,}"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: text columns left-aligned, numbers right-aligned."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(not isinstance(row[i], str) or row[i] == "-" for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "-" * sum(w + 2 for w in widths)
    return "\n".join([title, line(headers), rule[:-2], *(line(r) for r in cells)])


def target(name: str, measured: float | None, op: str, limit: float, unit: str) -> dict[str, Any]:
    """A target check: ``measured op limit`` (``op`` is ``<=`` or ``>=``)."""
    if measured is None or math.isnan(measured):
        met: bool | None = None
    elif op == "<=":
        met = measured <= limit
    elif op == ">=":
        met = measured >= limit
    else:
        raise ValueError(f"op must be '<=' or '>=', got {op!r}")
    return {
        "target": name,
        "measured": measured,
        "op": op,
        "limit": limit,
        "unit": unit,
        "met": met,
    }


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            t["target"],
            f"{fmt(t['measured'])} {t['unit']}",
            f"{t['op']} {fmt(t['limit'])} {t['unit']}",
            {True: "met", False: "MISSED", None: "n/a"}[t["met"]],
        ]
        for t in targets
    ]
    return format_table("targets", ["target", "measured", "limit", "result"], rows)


# -- workloads -----------------------------------------------------------------------------------


@dataclass
class Report:
    """What a workload's ``report()`` returns: printed and written to ``<out>/<name>.json``."""

    tables: list[str]
    data: dict[str, Any]
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


def _loadavg() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def child_env() -> dict[str, str]:
    """The environment for child interpreters: this checkout first on the import path."""
    env = dict(os.environ)
    parts = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def run_child(args: Sequence[str], timeout_s: float) -> str | None:
    """Run ``python args...`` bounded by ``timeout_s`` (killed past it); the error, if any."""
    return run_child_captured(args, timeout_s, capture=False)[0]


def run_child_captured(
    args: Sequence[str], timeout_s: float, *, capture: bool = True
) -> tuple[str | None, str]:
    """:func:`run_child`, returning ``(error, stdout)`` with stdout captured (stderr is not)."""
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            env=child_env(),
            timeout=timeout_s,
            check=False,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return f"timed out after {timeout_s:.0f} s (killed)", out
    error = f"exited with code {proc.returncode}" if proc.returncode else None
    return error, proc.stdout or ""


class Workload(Protocol):
    """What a workload module defines (``benchmarks.core`` and its siblings)."""

    NAME: str
    __doc__: str | None

    def variants(self, quick: bool) -> list[str]: ...
    def variant_timeout_s(self, variant: str, quick: bool) -> float: ...
    def run_variant(self, variant: str, quick: bool) -> dict[str, Any]: ...
    def report(self, results: dict[str, dict[str, Any]], quick: bool, out: Path) -> Report: ...


def workload_main(argv: Sequence[str] | None, workload: ModuleType) -> int:
    """The command line of one workload module (``main`` calls it with the module itself,
    whose ``NAME``, ``variants``, ``variant_timeout_s``, ``run_variant`` and ``report`` it
    uses; see :class:`Workload`).

    Parent mode runs every variant in a child (``--variant NAME --result FILE``), then reports.
    Returns 0 when every variant ran (missed targets are reported, not failures), else 1.
    """
    spec: Workload = workload
    name = spec.NAME
    # Its importable name, also when it runs as __main__ (python -m): children import it so.
    module = workload.__spec__.name if workload.__spec__ is not None else workload.__name__
    description = (spec.__doc__ or name).splitlines()[0]
    variants, run_variant = spec.variants, spec.run_variant
    report, variant_timeout_s = spec.report, spec.variant_timeout_s
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--quick", action="store_true", help="short run, for CI smoke tests")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--variant-jobs",
        type=int,
        default=1,
        metavar="N",
        help="variants at a time (default: 1); more is for smoke tests: they compete for the "
        "CPU, so their numbers are indicative only",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant_jobs < 1:
        parser.error(f"--variant-jobs must be >= 1, got {args.variant_jobs}")

    if args.variant is not None:  # child mode
        data = run_variant(args.variant, args.quick)
        data.setdefault("variant", args.variant)
        if args.result is None:
            print(json.dumps(data, indent=1))
        else:
            args.result.write_text(json.dumps(data), encoding="utf-8")
        return 0

    started = time.perf_counter()
    load_start = _loadavg()
    names = variants(args.quick)
    results: dict[str, dict[str, Any]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix=f"aiotimer-bench-{name}-") as tmp:

        def run(i: int, variant: str) -> str | None:
            progress(name, f"variant {i}/{len(names)}: {variant}")
            quick = ["--quick"] if args.quick else []
            result_file = str(Path(tmp) / f"{i}.json")
            return run_child(
                ["-m", module, "--variant", variant, "--result", result_file, *quick],
                variant_timeout_s(variant, args.quick),
            )

        with ThreadPoolExecutor(max_workers=args.variant_jobs) as pool:
            errors = list(pool.map(run, range(1, len(names) + 1), names))
        for i, (variant, error) in enumerate(zip(names, errors, strict=True), 1):
            result_file = Path(tmp) / f"{i}.json"
            if error is None and result_file.exists():
                results[variant] = json.loads(result_file.read_text(encoding="utf-8"))
            else:
                failed = True
                error = error or "wrote no result"
                progress(name, f"variant {variant} failed: {error}")
                results[variant] = {"variant": variant, "error": error}

    args.out.mkdir(parents=True, exist_ok=True)
    rep = report(results, args.quick, args.out)
    load_end = _loadavg()
    if load_start is not None and load_end is not None:
        rep.notes.append(
            f"1-minute load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the "
            f"end ({os.cpu_count()} cores): a load above ~1 means other processes competed for "
            "the CPU, which inflates lateness (CPU seconds are per process and hold up better)"
        )
    for table in rep.tables:
        print(table, end="\n\n")
    if rep.targets:
        print(format_targets(rep.targets), end="\n\n")
    for note in rep.notes:
        print(f"note: {note}")
    for plot in rep.plots:
        print(f"plot: {plot}")
    sys.stdout.flush()
    data = {
        "workload": name,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 2),
        "load_average": {"start": load_start, "end": load_end},
        **rep.data,
        "variants": results if not rep.data.get("variants") else rep.data["variants"],
        "targets": rep.targets,
        "notes": rep.notes,
        "plots": rep.plots,
        "tables": rep.tables,
        "ok": not failed,
    }
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    progress(name, f"done in {data['seconds']:.1f} s")
    return 1 if failed else 0
