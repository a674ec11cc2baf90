"""Workload ``policies`` (issues 3 and 15): what each policy and callback kind costs per fire,
next to the floors of the coroutine and thread paths, measured in the same run.

Each variant registers N periodic 1 s timers of one kind on a running scheduler (asyncio) and
measures the process's CPU over a window of whole seconds (the same window as ``core``), so the
table reads as "CPU µs per fire" next to the fast path (a sync, no-argument, default-policy
timer). The variants: a callback taking the Tick, ``missed=BURST``, ``max_failures`` with an
``on_error`` hook (they act only on late or failed runs), ``jitter_ms``, a coroutine that
returns without suspending (run eagerly: stepped at its grid point, no task), the same with
``eager=False`` (full mode: a task per run, as before issue 15), a coroutine that suspends once
(``await asyncio.sleep(0)``: a task from its first suspension), a coroutine with ``timeout_s``,
and ``thread=True`` (aiotimer's own pool of ``THREADS`` threads).

The floors do the same work per second without aiotimer: a ``loop.call_at`` chain on the same
1 s grid whose callback, each second, does N times:

* ``loop.create_task`` of the non-suspending coroutine, ``coro.send(None)`` of it (a coroutine
  object and one step), and the eager step of it (what an eager run cannot go below: the same
  in a context of its own with a context variable set, the current task swapped for a host
  task once per second, as aiotimer does once per wake-up); an eager timer also does what any
  timer does (the fast path's work), so the fast path plus the eager step is the least the
  ≤ 1.5 µs target can be met with, printed next to it;
* ``loop.create_task`` of the coroutine that suspends once (same suspension); the same, with the
  task kept in a set until a done callback drops it (asyncio's documented way to start a
  task nobody awaits: the loop holds only a weak reference to it), which is what a scheduler
  must do to cancel its runs at stop; and the floor of
  an *eager* run that suspends (what issue 15 asks a run to be): the eager step (a context of
  its own with a context variable set, one ``send``; the current task swapped for a host
  task once per second, as aiotimer does once per wake-up), then a task for the rest (a
  minimal resumable wrapper, as ``aiotimer._eager``);
* ``loop.run_in_executor`` on a ``ThreadPoolExecutor(THREADS)``, and
  ``anyio.to_thread.run_sync`` with a ``CapacityLimiter(THREADS)`` (in a task each).

A floor's "fire" is one such call. Fewer timers for the costly kinds, so each window stays a
steady state (every fire of the window runs within its second); a floor uses the N of the
aiotimer variant it is the floor of.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
import time
import types
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiotimer

from . import _harness as h

NAME = "policies"
WINDOW_S = 5
QUICK_WINDOW_S = 1
NS_PER_S = 1_000_000_000
ORIGIN_LEAD_NS = 900_000_000
"""The 1 s grid starts this long before the variant's timers are added: the first runs (at the
first grid point at least 1 s after the adds) come 0.1 s after 1 s rather than 1 s after, and
the measuring window (which starts half-way between grid points) 0.9 s sooner."""
WARM_UP_GAP_NS = 1_000_000
"""In the full mode the window starts after the first runs (one-time costs: a run's first
statistics, the pool's threads, the eager host), half a second after them; the quick mode
(1 s window) measures the first runs, to stay short: its numbers are indicative only."""
THREADS = 8
"""The size of ``thread=True``'s pool (the scheduler's ``thread_limit``) and of the floors'."""

COROUTINE = "coroutine"
SUSPENDING = "coroutine, await sleep(0)"
THREAD = "thread=True"
FLOOR_TASK = "floor: create_task(coroutine)"
FLOOR_SEND = "floor: coro.send(None)"
FLOOR_EAGER = "floor: eager step(coroutine)"
FLOOR_TASK_SUSPENDING = "floor: create_task(await sleep(0))"
FLOOR_KEPT_SUSPENDING = "floor: create_task(await sleep(0)), kept"
FLOOR_EAGER_SUSPENDING = "floor: eager step + task(await sleep(0))"
FLOOR_LEAST_SUSPENDING = "floor: eager step + task, tracked and timed"
FLOOR_EXECUTOR = f"floor: run_in_executor, {THREADS} threads"
FLOOR_ANYIO = f"floor: anyio.to_thread, {THREADS} threads"


def _noop() -> None:
    pass


def _noop_tick(tick: aiotimer.Tick) -> None:
    pass


async def _anoop() -> None:
    pass


async def _asleep0() -> None:
    await asyncio.sleep(0)


def _on_error(timer: aiotimer.Timer, exc: BaseException) -> None:
    pass


COROUTINE_N = (10_000, 2_000)
SUSPENDING_N = (5_000, 1_000)
THREAD_N = (500, 100)

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
    COROUTINE: (*COROUTINE_N, lambda s: s.add_every_s(1, _anoop)),
    "coroutine, eager=False": (*COROUTINE_N, lambda s: s.add_every_s(1, _anoop, eager=False)),
    SUSPENDING: (*SUSPENDING_N, lambda s: s.add_every_s(1, _asleep0)),
    "coroutine+timeout_s": (2_000, 500, lambda s: s.add_every_s(1, _anoop, timeout_s=0.5)),
    THREAD: (*THREAD_N, lambda s: s.add_every_s(1, _noop, thread=True)),
}
FULL_ONLY = frozenset({"coroutine, eager=False"})
"""Variants left out of the quick mode (it stays short; what they show is not a target)."""

Body = Callable[[int], None]
"""A floor's work for one second: ``body(n)`` does n fires."""


async def _floor_task(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    create = loop.create_task

    def body(n: int) -> None:
        for _ in range(n):
            create(_anoop())

    return body


async def _floor_send(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    def body(n: int) -> None:
        for _ in range(n):
            coro = _anoop()
            try:  # noqa: SIM105 (suppress() would cost more than the step it measures)
                coro.send(None)
            except StopIteration:
                pass

    return body


async def _floor_task_suspending(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    create = loop.create_task

    def body(n: int) -> None:
        for _ in range(n):
            create(_asleep0())

    return body


async def _floor_kept_suspending(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    create = loop.create_task
    tasks: set[asyncio.Task[None]] = set()
    stack.push_async_callback(_wait_all, tasks)

    def body(n: int) -> None:
        for _ in range(n):
            task = create(_asleep0())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return body


_FIRST: Any = object()


class _Rest(collections.abc.Coroutine[Any, Any, Any]):
    """The least a Task needs to go on with a coroutine stepped once already: its first
    ``send`` returns what the coroutine yielded (a bare yield's ``None`` was a request for the
    one pass of the loop that step is: the coroutine goes on), the others go to the
    coroutine."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: object) -> None:
        self._coro = coro
        self._first = first

    def send(self, value: Any) -> Any:
        first = self._first
        if first is not _FIRST:
            self._first = _FIRST
            if first is not None:
                return first
            # (a bare yield asked for one pass of the loop: the Task's first step is that pass)
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = _FIRST
        return self._coro.throw(typ)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __await__(self) -> Any:
        return self


def _hosted(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack, steps: Body) -> Body:
    """``steps`` run with a host task current around them, swapped in once per second as
    aiotimer does once per wake-up (an eager run's current task before its first suspension)."""
    import asyncio.tasks

    host = loop.create_task(asyncio.sleep(3600))
    stack.callback(host.cancel)
    current = asyncio.current_task
    leave, enter = asyncio.tasks._leave_task, asyncio.tasks._enter_task

    def body(n: int) -> None:
        task = current(loop)
        if task is not None:
            leave(loop, task)
        enter(loop, host)
        try:
            steps(n)
        finally:
            leave(loop, host)
            if task is not None:
                enter(loop, task)

    return body


_floor_var: contextvars.ContextVar[int] = contextvars.ContextVar("floor", default=0)


async def _floor_eager(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    copy, var = contextvars.copy_context, _floor_var

    def steps(n: int) -> None:
        for _ in range(n):
            coro = _anoop()
            context = copy()
            context.run(var.set, 1)
            try:  # noqa: SIM105 (suppress() would cost more than the step it measures)
                context.run(coro.send, None)
            except StopIteration:
                pass

    return _hosted(loop, stack, steps)


async def _floor_eager_suspending(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    copy, var = contextvars.copy_context, _floor_var
    create = loop.create_task

    def steps(n: int) -> None:
        for _ in range(n):
            coro = _asleep0()
            context = copy()
            context.run(var.set, 1)
            try:
                yielded = context.run(coro.send, None)
            except StopIteration:
                continue
            create(_Rest(coro, yielded), context=context)

    return _hosted(loop, stack, steps)


@types.coroutine
def _through(coro: Any) -> Generator[Any, Any, Any]:
    """A coroutine's steps, through a generator (one a task's coroutine may ``await`` after it
    suspended: a coroutine object awaited already may not be awaited again)."""
    return (yield from coro)


@types.coroutine
def _forward(first: object, steps: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """:class:`_Rest` as a generator: a stop for the pre-step, ``first`` to the task, then
    ``steps`` (delegated to in C); what the task throws in before then goes to them."""
    out = None
    while True:
        try:
            yield out
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:
            first = None
            try:
                out = steps.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        if first is None:
            return (yield from steps)
        out, first = first, None


async def _floor_least_suspending(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    """The eager floor with the least of what a scheduler must keep of a run that became a
    task: the task kept in a set (what a stop cancels) until its last step, which counts the
    run and its duration (two clock reads); its coroutine stepped once before the task has it,
    into the ``try`` that does that, so a task cancelled before its first step ends as a run
    too. The cheapest way of each found (``instructions`` counts): a native coroutine (the
    task steps it in C, its end makes no ``StopIteration``) over :func:`_forward`; no driver,
    timer or policy (what any timer's dispatch costs is the fast path's)."""
    copy, var = contextvars.copy_context, _floor_var
    create = loop.create_task
    now = time.monotonic_ns
    current = (  # (current_task(loop) without a Python frame, as aiotimer._eager)
        asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
        if sys.version_info < (3, 12)
        else asyncio.current_task
    )
    tasks: set[asyncio.Task[Any]] = set()
    stack.push_async_callback(_wait_all, tasks)
    stats = [0, 0]  # runs ended, their total duration (ns)

    async def rest(resumed: Awaitable[Any], t0: int) -> Any:
        try:
            return await resumed
        finally:
            tasks.discard(current(loop))
            stats[0] += 1
            stats[1] += now() - t0

    def steps(n: int) -> None:
        for _ in range(n):
            t0 = now()
            coro = _through(_asleep0())
            context = copy()
            context.run(var.set, 1)
            try:
                yielded = context.run(coro.send, None)
            except StopIteration:
                stats[0] += 1
                stats[1] += now() - t0
                continue
            task_coro = rest(_forward(yielded, coro), t0)
            task_coro.send(None)  # (the pre-step)
            tasks.add(create(task_coro, context=context))

    return _hosted(loop, stack, steps)


async def _floor_executor(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    pool = stack.enter_context(ThreadPoolExecutor(THREADS))
    run = loop.run_in_executor

    def body(n: int) -> None:
        for _ in range(n):
            run(pool, _noop)

    return body


async def _floor_anyio(loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> Body:
    import anyio
    import anyio.to_thread

    limiter = anyio.CapacityLimiter(THREADS)
    run_sync = anyio.to_thread.run_sync
    create = loop.create_task
    tasks: set[asyncio.Task[None]] = set()  # a task only weakly referenced may be collected
    stack.push_async_callback(_wait_all, tasks)

    def body(n: int) -> None:
        for _ in range(n):
            task = create(run_sync(_noop, limiter=limiter))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return body


async def _wait_all(tasks: set[asyncio.Task[None]]) -> None:
    if tasks:
        await asyncio.wait(tasks)


# floor -> (timers, quick timers, its per-second body)
FLOORS: dict[
    str,
    tuple[int, int, Callable[[asyncio.AbstractEventLoop, AsyncExitStack], Any]],
] = {
    FLOOR_TASK: (*COROUTINE_N, _floor_task),
    FLOOR_SEND: (*COROUTINE_N, _floor_send),
    FLOOR_EAGER: (*COROUTINE_N, _floor_eager),
    FLOOR_TASK_SUSPENDING: (*SUSPENDING_N, _floor_task_suspending),
    FLOOR_KEPT_SUSPENDING: (*SUSPENDING_N, _floor_kept_suspending),
    FLOOR_EAGER_SUSPENDING: (*SUSPENDING_N, _floor_eager_suspending),
    FLOOR_LEAST_SUSPENDING: (*SUSPENDING_N, _floor_least_suspending),
    FLOOR_EXECUTOR: (*THREAD_N, _floor_executor),
    FLOOR_ANYIO: (*THREAD_N, _floor_anyio),
}

SUSPEND_ONCE_LIMIT = 1.2
"""Issue 15: a coroutine that suspends once, over ``create_task`` of it."""

# (aiotimer variant, its floor, target ratio or None): the ratio table's rows
PAIRS: tuple[tuple[str, str, float | None], ...] = (
    (COROUTINE, FLOOR_TASK, None),
    (COROUTINE, FLOOR_SEND, None),
    (COROUTINE, FLOOR_EAGER, None),
    (SUSPENDING, FLOOR_TASK_SUSPENDING, SUSPEND_ONCE_LIMIT),
    (SUSPENDING, FLOOR_KEPT_SUSPENDING, None),
    (SUSPENDING, FLOOR_EAGER_SUSPENDING, None),
    (SUSPENDING, FLOOR_LEAST_SUSPENDING, None),
    (THREAD, FLOOR_EXECUTOR, 1.5),
    (THREAD, FLOOR_ANYIO, None),
)
COROUTINE_US_LIMIT = 1.5
"""Issue 15: a coroutine callback that returns without suspending, CPU µs per fire."""


def variants(quick: bool) -> list[str]:
    names = [v for v in VARIANTS if not (quick and v in FULL_ONLY)]
    return names + list(FLOORS)


def variant_timeout_s(variant: str, quick: bool) -> float:
    return 60.0 if quick else 120.0


def _sizes(variant: str, quick: bool) -> int:
    full_n, quick_n, _ = VARIANTS[variant] if variant in VARIANTS else FLOORS[variant]
    return quick_n if quick else full_n


async def _measure(variant: str, quick: bool) -> dict[str, Any]:
    n = _sizes(variant, quick)
    origin_ns = time.monotonic_ns() - ORIGIN_LEAD_NS
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    if variant in FLOORS:
        window = await _measure_floor(variant, n, origin_ns, window_s, not quick)
    else:
        window = await _measure_aiotimer(variant, n, origin_ns, window_s, not quick)
    result: dict[str, Any] = dict(window.as_dict())
    result["timers"] = n
    result["floor"] = variant in FLOORS
    result["cpu_us_per_fire"] = window.cpu_s / window.fires * 1e6 if window.fires else None
    return result


async def _measure_aiotimer(
    variant: str, n: int, origin_ns: int, window_s: int, warm_up: bool
) -> h.Window:
    scheduler = aiotimer.Scheduler(
        grid_origin_ns=origin_ns, name="bench-policies", thread_limit=THREADS
    )
    await scheduler.start()
    try:
        fires = add_timers(scheduler, variant, n)
        if warm_up:  # every timer's first run: the first grid point 1 s after the last add
            await h.sleep_until(_first_point_ns(origin_ns) + WARM_UP_GAP_NS)
        return await h.measure_window(NAME, variant, origin_ns, window_s, fires)
    finally:
        await scheduler.stop()


def add_timers(scheduler: aiotimer.Scheduler, variant: str, n: int) -> Callable[[], int]:
    """Add ``n`` timers of ``variant`` to ``scheduler``; returns what counts their runs."""
    add = VARIANTS[variant][2]
    for _ in range(n):
        add(scheduler)

    def fires() -> int:
        return sum(t.runs for t in scheduler.timers.values())

    return fires


async def _measure_floor(
    variant: str, n: int, origin_ns: int, window_s: int, warm_up: bool
) -> h.Window:
    """A ``call_at`` chain on the grid anchored at ``origin_ns`` (asyncio's ``loop.time()`` is
    ``time.monotonic()``), its first call at the first grid point at least 1 s from now, as
    aiotimer's first runs."""
    loop = asyncio.get_running_loop()
    fired = 0
    async with AsyncExitStack() as stack:
        body: Body = await FLOORS[variant][2](loop, stack)
        first_ns = _first_point_ns(origin_ns)
        first = (first_ns - origin_ns) // NS_PER_S

        stopped = False

        def second(k: int) -> None:
            nonlocal fired
            if stopped:
                return
            body(n)
            fired += n
            loop.call_at((origin_ns + (k + 1) * NS_PER_S) / NS_PER_S, second, k + 1)

        loop.call_at(first_ns / NS_PER_S, second, first)
        try:
            if warm_up:
                await h.sleep_until(first_ns + WARM_UP_GAP_NS)
            return await h.measure_window(NAME, variant, origin_ns, window_s, lambda: fired)
        finally:
            stopped = True
            await asyncio.sleep(0.05)  # the last second's tasks end before the pools close


def _first_point_ns(origin_ns: int) -> int:
    """The first point of the 1 s grid at ``origin_ns`` at least 1 s from now: where the
    timers added until now first run (and the floors' chain starts)."""
    return origin_ns - (origin_ns - time.monotonic_ns() - NS_PER_S) // NS_PER_S * NS_PER_S


def run_variant(variant: str, quick: bool) -> dict[str, Any]:
    kind = "a call_at chain on the same grid" if variant in FLOORS else "periodic 1 s timers"
    h.progress(NAME, f"{variant}: {kind} on asyncio")
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
        if r.get("floor"):
            continue
        us = r["cpu_us_per_fire"]
        extra = us - base_us if isinstance(base_us, float) and isinstance(us, float) else None
        rows.append([variant, r["timers"], r["fires_per_s"], us, extra])
        if r["fires_per_s"] < 0.99 * r["timers"]:
            notes.append(f"{variant}: {r['fires_per_s']:,.0f} fires/s for {r['timers']:,} timers")
    tables = [
        h.format_table(
            "policies: CPU per fire of periodic 1 s timers, by kind and policy (asyncio)",
            ["variant", "timers", "fires/s", "CPU us/fire", "extra us vs fast path"],
            rows,
        )
    ]
    floor_rows, targets = _floors(results)
    if floor_rows:
        tables.append(
            h.format_table(
                "policies floors: the same work per second without aiotimer (a call_at chain "
                "on the same grid), same run; ratio = aiotimer / floor",
                ["aiotimer variant", "us/fire", "floor", "floor us/fire", "ratio"],
                floor_rows,
            )
        )
    bound = _eager_bound(results)
    if bound is not None:
        notes.append(
            f"the least an eager coroutine timer can cost on this host: the fast path "
            f"{_us(results, 'fast path'):.3g} + the eager step {_us(results, FLOOR_EAGER):.3g} = "
            f"{bound:.3g} us per fire: the <= {COROUTINE_US_LIMIT} us target is "
            f"{'within reach' if bound <= COROUTINE_US_LIMIT else 'out of reach'} here"
        )
    fast, least = _us(results, "fast path"), _us(results, FLOOR_LEAST_SUSPENDING)
    task = _us(results, FLOOR_TASK_SUSPENDING)
    suspending_bound = suspend_once_bound(fast, least, task)
    if suspending_bound is not None:
        notes.append(suspend_once_note(fast, least, task, "us"))
    data = {
        "window_s": QUICK_WINDOW_S if quick else WINDOW_S,
        "threads": THREADS,
        "eager_bound_us": bound,
        "suspend_once_bound_ratio": suspending_bound,
    }
    return h.Report(tables, data, targets, notes)


def _eager_bound(results: dict[str, dict[str, Any]]) -> float | None:
    """The fast path plus the eager step: the least an eager timer's run can cost."""
    fast, step = _us(results, "fast path"), _us(results, FLOOR_EAGER)
    return fast + step if fast is not None and step is not None else None


def suspend_once_bound(fast: float | None, least: float | None, task: float | None) -> float | None:
    """The least an eager timer's run that suspends once can cost, over ``create_task`` of the
    same coroutine: the fast path (what any timer's dispatch costs) plus the tracked and timed
    floor (what any such run costs), over that floor."""
    if fast is None or least is None or not task:
        return None
    return (fast + least) / task


def suspend_once_note(fast: float, least: float, task: float, unit: str) -> str:
    """The note that prints :func:`suspend_once_bound` next to its target."""
    bound = (fast + least) / task

    def n(x: float) -> str:
        return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"

    return (
        f"the least an eager coroutine timer that suspends once can cost on this host: the "
        f"fast path {n(fast)} + {FLOOR_LEAST_SUSPENDING.removeprefix('floor: ')} {n(least)} "
        f"= {n(fast + least)} {unit} per fire, {bound:.3g}x create_task(await sleep(0)) "
        f"({n(task)}): the <= {SUSPEND_ONCE_LIMIT}x target is "
        f"{'within reach' if bound <= SUSPEND_ONCE_LIMIT else 'out of reach'} here"
    )


def _us(results: dict[str, dict[str, Any]], variant: str) -> float | None:
    us = results.get(variant, {}).get("cpu_us_per_fire")
    return us if isinstance(us, float) else None


def _floors(results: dict[str, dict[str, Any]]) -> tuple[list[list[object]], list[dict[str, Any]]]:
    rows: list[list[object]] = []
    targets = [
        h.target(
            f"{COROUTINE} (no suspension): CPU per fire",
            _us(results, COROUTINE),
            "<=",
            COROUTINE_US_LIMIT,
            "us",
        )
    ]
    for variant, floor, limit in PAIRS:
        us, floor_us = _us(results, variant), _us(results, floor)
        ratio = us / floor_us if us is not None and floor_us else None
        rows.append([variant, us, floor.removeprefix("floor: "), floor_us, ratio])
        if limit is not None:
            targets.append(h.target(f"{variant} / {floor}", ratio, "<=", limit, "x"))
    return rows, targets


def main(argv: list[str] | None = None) -> int:
    return h.workload_main(argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
