"""Workload ``instructions``: CPU instructions per fire of the coroutine paths and of their floors,
counted by valgrind's callgrind: issue 15's ratios without the noise of a shared host.

Why: ``policies`` measures CPU seconds per fire. On a shared 2-core VM those read up to 1.6x
apart from one run to the next, more than the differences issue 15's targets are about. An
instruction count is the same from one run to the next (within ~0.3%, with
``PYTHONHASHSEED=0``), so a ratio of counts settles what a ratio of seconds cannot, and a
change's effect shows in one run. A count is not a time: cache misses and stalls are not in it
(the garbage collector's instructions are; its cache misses are not), so it complements
``policies`` and does not replace it.

How: each variant runs in an interpreter of its own under ``valgrind --tool=callgrind
--dump-before=getppid`` (:func:`probe`). It sets the variant up, runs ``WARM`` batches, calls
``os.getppid()`` (callgrind writes the counts so far and starts again from zero), runs
``STEPS`` batches and calls ``os.getppid()`` again: the second dump holds those batches exactly
(no start-up, no imports), and is divided by their fires. A batch:

* aiotimer's variants: N periodic 1 s timers of ``policies``'s variant on a
  :class:`~aiotimer.testing.VirtualClock`, asyncio; a batch is ``clock.advance(1)`` and three
  passes of the loop (the runs that suspended end, their tasks' callbacks run);
* the floors: the body of ``policies``'s floor for N fires, from a loop callback, then the same
  three passes (and the floor's loop callback, where aiotimer's batch has its clock's).

The ratio table pairs each aiotimer variant with its floors, as ``policies`` does; the target
row is issue 15's suspend-once ratio, in instructions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from . import _harness as h
from . import policies as p

NAME = "instructions"
TIMERS = (2_000, 200)
"""Timers (fires per batch) in the full and the quick mode."""
WARM = (2, 1)
"""Batches before the counted ones: every timer's first run (a histogram allocated, the
eager host made) is not counted."""
STEPS = (5, 2)
"""Batches counted."""
PASSES = 3
"""Passes of the loop after each batch."""

AIOTIMER_VARIANTS = ("fast path", p.COROUTINE, p.SUSPENDING)
FLOOR_VARIANTS = (
    p.FLOOR_SEND,
    p.FLOOR_EAGER,
    p.FLOOR_TASK,
    p.FLOOR_TASK_SUSPENDING,
    p.FLOOR_KEPT_SUSPENDING,
    p.FLOOR_EAGER_SUSPENDING,
    p.FLOOR_LEAST_SUSPENDING,
)
QUICK_VARIANTS = (p.SUSPENDING, p.FLOOR_TASK_SUSPENDING)
"""The quick mode counts the one target's pair: each variant costs ~10 s of start-up under
valgrind."""
PAIRS: tuple[tuple[str, str, float | None], ...] = (
    (p.COROUTINE, p.FLOOR_SEND, None),
    (p.COROUTINE, p.FLOOR_EAGER, None),
    (p.COROUTINE, p.FLOOR_TASK, None),
    (p.SUSPENDING, p.FLOOR_TASK_SUSPENDING, p.SUSPEND_ONCE_LIMIT),
    (p.SUSPENDING, p.FLOOR_KEPT_SUSPENDING, None),
    (p.SUSPENDING, p.FLOOR_EAGER_SUSPENDING, None),
    (p.SUSPENDING, p.FLOOR_LEAST_SUSPENDING, None),
)
PROBE = "import sys\nfrom benchmarks.instructions import probe\nprobe(sys.argv[1:])"
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


def _valgrind() -> str | None:
    return shutil.which("valgrind")


def variants(quick: bool) -> list[str]:
    if _valgrind() is None:
        return []
    return list(QUICK_VARIANTS if quick else (*AIOTIMER_VARIANTS, *FLOOR_VARIANTS))


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 150.0 if quick else 300.0


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    """Count ``variant`` under callgrind (in a child: see the module)."""
    valgrind = _valgrind()
    if valgrind is None:  # (variants() lists none then)
        raise RuntimeError("valgrind is not installed")
    i = 1 if quick else 0
    n, warm, steps = TIMERS[i], WARM[i], STEPS[i]
    h.progress(NAME, f"{variant}: {n:,} fires per batch, {steps} batches, under callgrind")
    with tempfile.TemporaryDirectory(prefix="aiotimer-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            *(valgrind, "--tool=callgrind", "--dump-before=getppid"),
            f"--callgrind-out-file={out}",
            *(sys.executable, "-c", PROBE, variant, str(n), str(warm), str(steps)),
        ]
        proc = subprocess.run(
            command,
            env={**h.child_env(), "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            timeout=variant_timeout_s(variant, quick) - 10,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"the probe under valgrind failed: {proc.stderr[-2000:]}")
        counted = Path(f"{out}.2")  # (.1: start-up and warm-up; .2: the counted batches)
        if not counted.exists():
            raise RuntimeError(f"callgrind wrote no second dump: {proc.stderr[-2000:]}")
        match = _TOTALS.search(counted.read_text(encoding="utf-8"))
        if match is None:
            raise RuntimeError(f"no totals in {counted.name}")
    probe_out = json.loads(proc.stdout.strip().splitlines()[-1])
    fires = probe_out["fires"]
    instructions = int(match.group(1))
    return {
        "floor": variant in p.FLOORS,
        "timers": n,
        "batches": steps,
        "fires": fires,
        "instructions": instructions,
        "per_fire": instructions / fires if fires else None,
    }


def probe(argv: list[str]) -> None:
    """The script under valgrind: ``VARIANT N WARM STEPS`` (see the module); prints
    ``{"fires": ...}``, the fires of the counted batches."""
    variant, n, warm, steps = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    run = _probe_floor if variant in p.FLOORS else _probe_aiotimer
    fires = h.run_on_loop("asyncio", lambda: run(variant, n, warm, steps))
    print(json.dumps({"fires": fires}))


async def _passes() -> None:
    for _ in range(PASSES):
        await asyncio.sleep(0)


async def _probe_aiotimer(variant: str, n: int, warm: int, steps: int) -> int:
    import aiotimer
    from aiotimer.testing import VirtualClock

    clock = VirtualClock()
    scheduler = aiotimer.Scheduler(clock=clock, name="bench-instructions")
    await scheduler.start()
    try:
        fires = p.add_timers(scheduler, variant, n)
        for _ in range(warm):
            await clock.advance(1)
            await _passes()
        before = fires()
        os.getppid()  # (callgrind: dump, start counting from zero)
        for _ in range(steps):
            await clock.advance(1)
            await _passes()
        os.getppid()
        return fires() - before
    finally:
        await scheduler.stop()


async def _probe_floor(variant: str, n: int, warm: int, steps: int) -> int:
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        body: p.Body = await p.FLOORS[variant][2](loop, stack)

        async def batch() -> None:
            done = loop.create_future()

            def second() -> None:
                body(n)
                done.set_result(None)

            loop.call_soon(second)
            await done
            await _passes()

        for _ in range(warm):
            await batch()
        os.getppid()
        for _ in range(steps):
            await batch()
        os.getppid()
    return n * steps


def report(results: dict[str, dict[str, Any]], quick: bool, out: Path) -> h.Report:
    notes: list[str] = []
    if _valgrind() is None:
        notes.append("valgrind is not installed: nothing counted (apt-get install valgrind)")
    rows: list[list[object]] = []
    for variant, r in results.items():
        if "error" in r:
            notes.append(f"{variant}: {r['error']}")
            continue
        rows.append([variant, r["timers"], r["batches"], r["per_fire"]])
    tables = []
    if rows:
        tables.append(
            h.format_table(
                "instructions: per fire, counted by callgrind (asyncio; aiotimer on a virtual "
                "clock, the floors from a loop callback)",
                ["variant", "fires/batch", "batches", "instructions/fire"],
                rows,
            )
        )
    ratio_rows: list[list[object]] = []
    targets: list[dict[str, Any]] = []
    for variant, floor, limit in PAIRS:
        if variant not in results or floor not in results:
            continue
        ours, base = results[variant].get("per_fire"), results[floor].get("per_fire")
        ratio = ours / base if ours and base else None
        ratio_rows.append([variant, ours, floor.removeprefix("floor: "), base, ratio])
        if limit is not None:
            targets.append(
                h.target(f"{variant} / {floor}, in instructions", ratio, "<=", limit, "x")
            )
    if ratio_rows:
        tables.append(
            h.format_table(
                "instructions ratios: aiotimer / floor, same run",
                ["aiotimer variant", "instr/fire", "floor", "floor instr/fire", "ratio"],
                ratio_rows,
            )
        )
    counts = {v: r.get("per_fire") for v, r in results.items() if "error" not in r}
    fast, least = counts.get("fast path"), counts.get(p.FLOOR_LEAST_SUSPENDING)
    task = counts.get(p.FLOOR_TASK_SUSPENDING)
    bound = p.suspend_once_bound(fast, least, task)
    if fast is not None and least is not None and task:
        notes.append(p.suspend_once_note(fast, least, task, "instructions"))
    data = {
        "valgrind": _valgrind_version(),
        "python": sys.version.split()[0],
        "suspend_once_bound_ratio": bound,
    }
    return h.Report(tables, data, targets, notes)


def _valgrind_version() -> str | None:
    valgrind = _valgrind()
    if valgrind is None:
        return None
    proc = subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
