"""Benchmark of dedicated timer processes: start, pipe round trip, crash detection and restart.

Measures, and prints as a table with the issue's targets:

* worker start to first tick, with the default context (on Linux a fork server, which the first
  start boots and later starts find warm) and with ``spawn``: from ``scheduler.start()`` to the
  first run of a 1 ms timer in the worker (``time.monotonic_ns`` is one clock for all processes
  of a host), each next to its floor (``benchmarks.spawn_floor``: a child that reports at once,
  and one that first starts an event loop, spawned or forked by a warm server);
* the pipe round trip of a small message, parent -> worker -> parent, with sync handlers on
  both sides, and for reference the same ping-pong between two blocking sockets with no event
  loop and no framing (the floor of the machine);
* SIGKILL of a worker to its detection by the parent (``on_crash``), and to the restarted
  worker's first tick (default context), next to its floor: the detection, then a forked
  child's loop.

Run it as ``python -m benchmarks.process [--quick]``; ``--quick`` finishes in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

import aiotimer
from aiotimer.process import RestartPolicy, TimerProcess, WorkerCrashed, WorkerInfo, attach

from . import process_callbacks  # what the workers run (and import)


def _blocking_echo(sock: socket.socket) -> None:
    while data := sock.recv(256):
        sock.sendall(data)


# -- measurements -----------------------------------------------------------------------------


class _Firsts:
    """Collects the workers' first ticks: ``{pid: monotonic_ns}``."""

    def __init__(self) -> None:
        self.at: dict[int, int] = {}
        self.changed = anyio.Event()

    def __call__(self, info: WorkerInfo, obj: Any) -> None:
        if obj[0] == "first":
            self.at[obj[1]] = obj[2]
            self.changed.set()
            self.changed = anyio.Event()

    async def wait(self, pid: int | None) -> int:
        """The first tick of worker ``pid``."""
        with anyio.fail_after(30):
            while pid is None or pid not in self.at:
                await self.changed.wait()
        return self.at[pid]

    async def wait_other(self, old_pid: int) -> int:
        """The first tick of a worker other than ``old_pid`` (its replacement)."""
        with anyio.fail_after(30):
            while not (self.at.keys() - {old_pid}):
                await self.changed.wait()
        return max(t for pid, t in self.at.items() if pid != old_pid)


async def start_to_first_tick(context: str | None, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds from ``start()`` to ready, and to the first tick, per run (``context``
    ``None``: the default)."""
    ready_ms, tick_ms = [], []
    for _ in range(runs):
        proc = TimerProcess("bench-start", context=context)  # type: ignore[arg-type]
        proc.add_every_ms(1, process_callbacks.first_tick)
        firsts = _Firsts()
        proc.on_message(firsts)
        scheduler = aiotimer.Scheduler()
        attach(scheduler, proc)
        t0 = time.monotonic_ns()
        await scheduler.start()
        ready_ms.append((time.monotonic_ns() - t0) / 1e6)
        tick_ms.append((await firsts.wait(proc.workers[0].pid) - t0) / 1e6)
        await scheduler.stop()
    return ready_ms, tick_ms


def start_floors(runs: int, method: str) -> dict[str, float]:
    """The machine's floors under a worker's start with ``method`` (``benchmarks.spawn_floor``),
    run as a program of its own with no main module: a child re-imports its parent's main
    module, and this one's imports would count."""
    code = "from benchmarks.spawn_floor import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", code, str(runs), method],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    )
    floor: dict[str, float] = json.loads(out.stdout)
    return floor


async def round_trip(n: int) -> list[float]:
    """Microseconds per parent -> worker -> parent round trip of a small message."""
    proc = TimerProcess("bench-rtt")
    proc.on_parent_message(process_callbacks.echo)
    worker = proc.workers[0]
    warm_up = 200  # round trips not counted
    samples: list[float] = []
    done = anyio.Event()

    def pong(info: WorkerInfo, sent_ns: int) -> None:
        samples.append((time.perf_counter_ns() - sent_ns) / 1e3)
        if len(samples) == n + warm_up:
            done.set()
        else:
            worker.send_nowait(time.perf_counter_ns())

    proc.on_message(pong)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    await scheduler.start()
    worker.send_nowait(time.perf_counter_ns())
    with anyio.fail_after(60):
        await done.wait()
    await scheduler.stop()
    return samples[warm_up:]


def blocking_floor(n: int) -> list[float]:
    """The same ping-pong between two blocking sockets, no loop, no framing: the floor."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = socket.socketpair()
    child = ctx.Process(target=_blocking_echo, args=(theirs,))
    child.start()
    theirs.close()
    samples = []
    try:
        for i in range(n + 200):
            t0 = time.perf_counter_ns()
            ours.sendall(b"x" * 24)
            ours.recv(256)
            if i >= 200:
                samples.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        ours.close()
        child.join(5)
    return samples


async def kill_to_restart(runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds from SIGKILL to detection, and to the restarted worker's first tick."""
    detected: list[int] = []
    changed = anyio.Event()

    def on_crash(exc: WorkerCrashed) -> None:
        nonlocal changed
        detected.append(time.monotonic_ns())
        changed.set()
        changed = anyio.Event()

    proc = TimerProcess(
        "bench-kill", on_crash=on_crash, restart=RestartPolicy(max_restarts=1000, backoff_s=0)
    )
    proc.add_every_ms(1, process_callbacks.first_tick)
    firsts = _Firsts()
    proc.on_message(firsts)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    await scheduler.start()
    worker = proc.workers[0]
    detect_ms, restart_ms = [], []
    for _ in range(runs):
        pid = worker.pid
        assert pid is not None
        await firsts.wait(pid)
        firsts.at = {pid: firsts.at[pid]}  # forget the workers killed before
        n = len(detected)
        t0 = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(30):
            while len(detected) == n:
                await changed.wait()
        detect_ms.append((detected[-1] - t0) / 1e6)
        restart_ms.append((await firsts.wait_other(pid) - t0) / 1e6)
    await scheduler.stop()
    return detect_ms, restart_ms


# -- the table --------------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def compile_bytecode() -> str:
    """Compile aiotimer and these benchmarks to bytecode, as ``pip install`` does, and say so.

    A spawned worker imports aiotimer afresh; from an editable install under
    ``PYTHONDONTWRITEBYTECODE=1`` (this project's CI machines) it would compile every module
    again at each start (~75 ms on a small VM), which is not what a deployed worker pays.
    """
    import compileall  # here: a worker re-imports this module, and need not import this

    for package in (aiotimer, sys.modules[__name__]):
        folder = os.path.dirname(package.__file__ or "")
        compileall.compile_dir(folder, quiet=1)
    return "bytecode: aiotimer and benchmarks compiled first (pip install does the same)"


async def _run(quick: bool, out: Callable[[str], object]) -> None:
    runs = 3 if quick else 7
    rtt_n = 2000 if quick else 20000
    rows: list[tuple[str, str, str]] = []
    note = compile_bytecode()

    def row(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))

    # What no worker can beat on this machine: a child that reports at once, and one that
    # first starts its loop; forked by a warm server, and spawned.
    fs_floor = await anyio.to_thread.run_sync(start_floors, runs, "forkserver")
    default = TimerProcess("bench-default").context
    _, cold = await start_to_first_tick(None, 1)
    row(f"default ({default}): first start, boots the server", f"{cold[0]:.0f} ms")
    _, tick = await start_to_first_tick(None, runs)
    fs_loop = fs_floor.get("forkserver_loop")
    row(
        f"default ({default}) warm: start to first tick, median",
        f"{statistics.median(tick):.1f} ms",
        "<= 40 ms",
    )
    if fs_loop is not None:
        fs_bare = fs_floor["forkserver_bare"]
        row("  floor: forked by a warm server, bare, median", f"{fs_bare:.1f} ms")
        row("  floor: forked by a warm server + loop, median", f"{fs_loop:.1f} ms")
    # Spawn costs 2 to 3 times more when the host is busy: each worker start is measured right
    # after its floor, so that both see the same load.
    ready, tick, floors = [], [], []
    for _ in range(runs):
        floors.append(await anyio.to_thread.run_sync(start_floors, 1, "spawn"))
        one_ready, one_tick = await start_to_first_tick("spawn", 1)
        ready += one_ready
        tick += one_tick
    bare = statistics.median(f["bare"] for f in floors)
    loop = statistics.median(f["loop"] for f in floors)
    row("spawn: start() to ready, median", f"{statistics.median(ready):.0f} ms")
    row(
        "spawn: start to first tick, median",
        f"{statistics.median(tick):.0f} ms",
        f"<= floor + 40 = {loop + 40:.0f} ms",
    )
    row("  floor: spawn, bare interpreter, median", f"{bare:.0f} ms")
    row("  floor: spawn + asyncio/uvloop loop, median", f"{loop:.0f} ms")

    rtt = await round_trip(rtt_n)
    row(f"round trip ({rtt_n} msgs): p50", f"{_p(rtt, 0.5):.0f} us", "<= 50 us")
    row("round trip: p99", f"{_p(rtt, 0.99):.0f} us")
    floor = await anyio.to_thread.run_sync(blocking_floor, rtt_n)
    row("  floor: blocking sockets, p50 / p99", f"{_p(floor, 0.5):.0f} / {_p(floor, 0.99):.0f} us")

    detect, restart = await kill_to_restart(runs)
    row(
        "SIGKILL to detection: median / max",
        f"{statistics.median(detect):.1f} / {max(detect):.1f} ms",
        "<= 20 ms",
    )
    row(
        f"SIGKILL to restarted first tick ({default}), median / max",
        f"{statistics.median(restart):.0f} / {max(restart):.0f} ms",
        "<= 60 ms",
    )
    if fs_loop is not None and default == "forkserver":
        row(
            "  floor: detection + forked by a warm server + loop",
            f"{statistics.median(detect) + fs_loop:.1f} ms",
        )

    width = max(len(r[0]) for r in rows)
    mode = "quick" if quick else "full"
    out(f"aiotimer.process ({mode}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    out(note)
    out(f"{'measure':<{width}}  {'value':>14}  target")
    for name, value, target in rows:
        out(f"{name:<{width}}  {value:>14}  {target}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; ``--quick`` for a short run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.process", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs (a few seconds)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        options: dict[str, Any] = {}
    else:
        options = {"use_uvloop": True}
    anyio.run(_run, args.quick, print, backend="asyncio", backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
