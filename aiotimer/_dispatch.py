"""The dispatcher: the one place that knows how a due timer is run.

Ground rules:

* Sync callbacks run inline on the loop, one after the other, in the order their bucket holds
  them. Coroutine callbacks run eagerly on asyncio (``_eager``: stepped in the dispatch, a
  plain task of the loop only if they suspend, tracked and cancelled at stop); with a timeout,
  ``eager=False`` or on trio they are tasks from the start (of the scheduler's task group on
  trio). Sync callbacks marked ``thread=True`` run in a worker thread of the scheduler's own
  bounded pool (``_thread_pool``; never the loop's default executor; anyio's limiter on trio).
* A periodic timer is re-queued on its grid (by the grid: :meth:`Grid.advance`) *before* its
  callback runs, so the callback may cancel, pause or reschedule its own timer (or any other
  timer of the same batch) safely: every change goes through the scheduler and the grid, and an
  entry whose timer moved on is skipped.
* A callback's exception is logged with the timer's name, counted and handed to the
  ``on_error`` hooks; the timer keeps its schedule and nothing else is disturbed.
  ``KeyboardInterrupt``, ``SystemExit`` and cancellation are never swallowed.
* A grid point that passes without a run of its own is *missed*: ``runs + missed`` equals the
  grid points due so far (for ``SKIP`` and ``DELAY``; ``BURST`` replays them instead).
* "Now", for deciding whether a run is late, is re-read after every timed run, so a callback
  that blocks the loop makes the later timers of its own batch late too. (In a batch bigger
  than ``SAMPLE_BUDGET``, between timed runs, it is the time of the last timed run.)
* It depends on the grids and on narrow callables its scheduler gives it (the clock, the
  histograms, ``finish`` for a timer that ended, ``run_finished`` for the drain), never on the
  scheduler itself.

The hot path is :meth:`Dispatcher.fire` for a periodic, inline sync timer without jitter or
timeout (mode ``0``, or ``TAKES_TICK``; the missed policy and error hooks act only on late or
failed runs). It has two loops:

* a *uniform* bucket (see ``_queue``: every live entry such a timer, all of one interval, so
  all re-queue to one tick), on time, runs through :meth:`_fire_uniform`: a stale check, the
  next tick stored, one counter and the call itself (plus a ``Tick`` for callbacks that take
  one), and the whole list goes back to the grid at once: about 0.2 µs per fire on a 2-vCPU VM.
  That is the steady state of timers that share an interval, and **the one place outside the
  grid that writes a timer's position** (documented in ``_grid.py``). Periodic eager coroutine
  timers may share such a bucket (``LEAN`` in ``_modes``): the loop moves them with the others
  and starts each run itself (:meth:`_lean_eager`: the overlap policy, then the eager step).
* any other bucket (mixed intervals or modes, late runs) runs through :meth:`_fire_mixed`,
  where the grid re-queues each timer and the run goes through the one shared run step.

Timing a run (two clock reads, two histogram increments, maxima, the loop-block check) costs
about 1 µs more, so a batch times at most ``SAMPLE_BUDGET`` runs one by one and, beyond that, one
run in ``1 + len // SAMPLE_BUDGET`` (rotating), timing the others as groups for the loop-block
watchdog. Counters (runs, missed, errors) are always exact; every timer of a service with fewer
than 256 timers due at once is timed on every run.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ._backend import ASYNCIO, Backend
from ._clock import NS_PER_MS, NS_PER_S
from ._eager import COMPLETED, EagerRunner
from ._gate import GatedRun, RunDone, RunGate
from ._modes import (
    ASYNC,
    BURST,
    CALENDAR,
    EAGER,
    FAST,
    GATED,
    INTERNAL,
    SPECIAL,
    TAKES_TICK,
    THREAD,
)
from ._policy import MISSED_BURST, ErrorHook
from ._queue import NOT_QUEUED
from ._spec import CALENDAR as CALENDAR_KIND
from ._spec import ONESHOT, PERIODIC, UNIT_MS, TimerSpec, check_interval
from ._stats import NO_HISTOGRAM, HistogramSlab
from ._thread_pool import ThreadPool, thread_pool
from ._timer import ACTIVE, FINISHED, Tick, Timer, current_timer

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Future

    from ._grid import Grid

__all__ = ["Dispatcher", "current_timer"]

logger = logging.getLogger("aiotimer.dispatch")


SAMPLE_BUDGET: Final = 256
"""Runs timed one by one per batch; a bigger batch times one run in ``1 + len // 256``."""


class _Failed:
    """The result of a run that raised or timed out."""

    __slots__ = ()


_FAILED: Final = _Failed()
_PARKED: Final = 1 << 40
"""Ticks ahead where a timer due during a stop is parked (past any deadline that matters)."""
_TIMED_OUT: Final = _Failed()  # (a thread run past its timeout: failed, and how)


@final
class Dispatcher:
    """Runs due timers for one scheduler.

    :param now_ns: the scheduler's clock
    :param hold: the clock's ``hold`` (thread work in progress)
    :param slab: the scheduler's histograms
    :param ms_grid: the millisecond grid (run timeouts are one-shots there)
    :param on_error: the scheduler's error hook
    :param block_ns: the loop-block watchdog's threshold (``None``: off)
    :param thread_limit: the size of the thread pool
    :param finish: ``finish(timer)`` ends a timer whose run was its last (the registry)
    :param run_finished: called when an asynchronous run ends (the drain)
    """

    __slots__ = (
        "_backend",
        "_block_ns",
        "_clock_back",
        "_eager",
        "_finish",
        "_gated",
        "_hold",
        "_ms",
        "_now_ns",
        "_on_error",
        "_phase",
        "_run_finished",
        "_slab",
        "_start_ns",
        "_task_group",
        "_tasks",
        "_thread_limit",
        "_threads",
        "gate",
        "inflight",
        "limiter",
        "stopping",
        "threads",
        "wakeup",
    )

    def __init__(
        self,
        *,
        now_ns: Callable[[], int],
        hold: Callable[[], AbstractContextManager[None]],
        slab: HistogramSlab,
        ms_grid: Grid,
        on_error: ErrorHook | None,
        block_ns: int | None,
        thread_limit: int,
        finish: Callable[[Timer], None],
        run_finished: Callable[[], None],
    ) -> None:
        self._now_ns = now_ns
        self._hold = hold
        self._slab = slab
        self._ms = ms_grid
        self._on_error = on_error
        self._block_ns = block_ns if block_ns is not None else 1 << 62
        self._thread_limit = thread_limit
        self._finish = finish
        self._run_finished = run_finished
        self._backend: Backend = ASYNCIO
        self._task_group: TaskGroup | None = None  # set while the scheduler runs
        # runs' tasks on asyncio: cancelled at a hard stop (thread runs: the pool's, abandoned)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._threads: ThreadPool | None = None  # thread=True runs on asyncio
        self._eager: EagerRunner | None = None  # eager coroutine runs, on asyncio
        self.limiter: anyio.CapacityLimiter | None = None  # thread=True runs on trio
        self._start_ns = 0
        self._clock_back = False  # a clock that went back was reported
        self.inflight = 0  # asynchronous runs in flight
        self.threads: dict[Timer, int] = {}  # thread runs in flight, by timer
        self.gate: RunGate | None = None  # decides the runs of cluster timers
        self._gated: list[GatedRun] = []  # this batch's runs for the gate
        self._phase = 0  # rotates which runs of a big batch are timed
        self.wakeup = 0  # the tick source's wake-ups with work (see begin_wakeup)
        self.stopping = False  # the scheduler stops: only its own one-shots run (timeouts)

    def open(self, task_group: TaskGroup, backend: Backend, start_ns: int) -> None:
        """The scheduler started at ``start_ns``: runs go to ``task_group`` (or plain tasks)."""
        self._task_group = task_group
        self._backend = backend
        self._start_ns = start_ns
        self.stopping = False
        self._threads = None
        if backend is ASYNCIO:
            import asyncio

            loop = asyncio.get_running_loop()
            self._eager = EagerRunner(loop, self._tasks, self._rest_ended)
            self._threads = thread_pool(loop, self._thread_limit)
        if self._threads is None:
            self.limiter = anyio.CapacityLimiter(self._thread_limit)

    async def cancel_runs(self) -> None:
        """Cancel the asynchronous runs still going (after the grace) and wait for them; thread
        runs cannot be killed: those still running are reported by timer."""
        if self.threads:
            logger.warning(
                "stopping with thread runs still going after the grace period (they finish on "
                "their own, their results are dropped): %s",
                ", ".join(f"{t.name!r} x{n}" for t, n in self.threads.items()),
            )
        if self._threads is not None:
            self._threads.abandon()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            import asyncio

            await asyncio.wait(tasks)

    def close(self) -> None:
        """The scheduler stopped. Runs still going (its task was cancelled from outside, no
        grace) are cancelled now; their cleanup runs as the loop gets to them."""
        for task in self._tasks:
            task.cancel()
        if self._eager is not None:
            self._eager.close()
            self._eager = None
        self._task_group = None
        if self._threads is not None:
            self._threads.close()
            self._threads = None
        self.limiter = None

    # -- the hot path ------------------------------------------------------------------------

    def begin_wakeup(self) -> asyncio.Task[Any] | None:
        """A wake-up's dispatch begins (its :meth:`fire` calls follow): counted, and on asyncio
        the eager host becomes the current task (see ``_eager``) until :meth:`end_wakeup`, given
        what this returned, which must follow whatever happens in between."""
        self.wakeup += 1
        return self._eager.enter() if self._eager is not None else None

    def end_wakeup(self, set_aside: asyncio.Task[Any] | None) -> None:
        """The wake-up's dispatch is over (see :meth:`begin_wakeup`)."""
        if self._eager is not None:
            self._eager.leave(set_aside)

    def fire(self, grid: Grid, tick: int, bucket: list[Timer], uniform: int, now_tick: int) -> None:
        """Run every live timer of ``bucket``, due at ``tick`` of ``grid``; ``uniform`` is the
        interval of a uniform bucket (see ``_queue``), else 0; ``now_tick`` is the tick now."""
        if self.stopping:
            self._fire_stopping(grid, tick, bucket)
            return
        if uniform and now_tick - tick < uniform:
            done = self._fire_uniform(grid, tick, bucket, uniform)
            if done == len(bucket):
                return
            bucket = bucket[done:]  # it fell a whole interval behind: the rest are late runs
        self._fire_mixed(grid, tick, bucket)

    def _fire_uniform(self, grid: Grid, tick: int, bucket: list[Timer], interval: int) -> int:
        """Run a uniform bucket: every live entry is a fast-mode timer of ``interval``, on time,
        so each run is a stale check, its next tick stored, one counter and the call, and the
        list goes back whole to the next tick (the one place outside the grid that writes a
        timer's position: what the grid would compute, ``tick + interval``, in one store).

        :returns: the entries taken: all of them, unless the batch fell a whole interval behind
            (the clock is read at each timed run), when the rest are late runs
        """
        now_ns = self._now_ns
        scheduled_ns, ticks, ticks_raw = self._point(grid, tick)
        next_tick = tick + interval
        late_ns = grid.ns_of(next_tick)  # runs from then on are late
        size = len(bucket)
        every, untimed = self._chunks(size)
        entries = iter(bucket)
        taken = 0
        stale = 0
        last_timed: Timer | None = None
        t_prev = now_ns()
        while True:
            if untimed:
                for timer in islice(entries, untimed):
                    if timer._due_tick != tick:
                        stale += 1  # cancelled, paused or moved since it was queued here
                        continue
                    timer._grid_tick = timer._due_tick = next_tick
                    timer._runs += 1
                    try:
                        if timer._mode:
                            if timer._mode & EAGER:  # (it reports its own errors)
                                self._lean_eager(
                                    grid, timer, tick, scheduled_ns, ticks, ticks_raw, False
                                )
                                continue
                            param = timer.spec.param
                            timer._call(Tick(ticks, ticks_raw, scheduled_ns, 0, param, timer))
                        else:
                            timer._call()
                    except Exception as exc:
                        self._failed(timer, exc)
                taken += untimed
                t_prev = self._group_done(last_timed, untimed, t_prev)
            untimed = every - 1
            timed = next(entries, None)  # the timed run of this chunk
            if timed is None:
                break
            timer = timed
            taken += 1
            if timer._due_tick != tick:
                stale += 1
                continue
            timer._grid_tick = timer._due_tick = next_tick
            timer._runs += 1
            if timer._mode & EAGER:
                self._lean_eager(grid, timer, tick, scheduled_ns, ticks, ticks_raw, True)
                t_prev = now_ns()
            else:
                t_prev = self._timed_run(timer, t_prev, scheduled_ns, ticks, ticks_raw, 0)
            last_timed = timer
            if t_prev >= late_ns:
                break
        taken = min(taken, size)  # (the last islice may have come up short)
        grid.requeue_bucket(next_tick, bucket if taken == size else bucket[:taken], interval, stale)
        return taken

    def _lean_eager(
        self,
        grid: Grid,
        timer: Timer,
        tick: int,
        scheduled_ns: int,
        ticks: int,
        ticks_raw: int,
        timed: bool,
    ) -> None:
        """An eager coroutine timer of a uniform bucket, due at grid point ``tick`` (at
        ``scheduled_ns``; ``ticks``, ``ticks_raw`` since the start): the lean loop moved it to
        its next point and counted the run. The overlap policy first, if earlier runs still go
        (then the count is taken back); else what :meth:`_start_run` does for an eager run,
        without its general tests (a periodic eager timer has no calendar, gate or timeout)."""
        running = timer._running
        if running and running >= timer.spec.policy.overlap.limit:
            timer._runs -= 1  # no run now: a skip (an overlap), or a run that waits
            self._wait_or_skip(grid, timer, tick, 0, self._now_ns())
            return
        if self._eager is None:  # (trio: the run is a task)
            self._start_run(grid, timer, tick, 0, None, timed, True)
            return
        timer._running = running + 1
        self.inflight += 1
        if timer._mode & BURST:
            timer.trouble().started_in = self.wakeup  # (a burst's next run waits for it)
        arg: tuple[Tick, ...] = ()
        if timer._mode & TAKES_TICK:
            arg = (Tick(ticks, ticks_raw, scheduled_ns, 0, timer.spec.param, timer),)
        self._start_eager(grid, timer, tick, scheduled_ns, arg, timed)

    def _fire_mixed(self, grid: Grid, tick: int, bucket: list[Timer]) -> None:
        """Run every live timer of ``bucket``, whatever their modes and intervals, late or not;
        the grid re-queues each one before its run."""
        now_ns = self._now_ns
        scheduled_ns, ticks, ticks_raw = self._point(grid, tick)
        every, countdown = self._chunks(len(bucket))
        stale = 0
        untimed = 0
        last_timed: Timer | None = None
        t_prev = now_ns()
        for timer in bucket:
            if timer._due_tick != tick:
                stale += 1  # cancelled, paused or moved since it was queued here
                continue
            if timer._mode > FAST:  # (an eager run that completes is timed like an inline one)
                if countdown:
                    countdown -= 1
                    self._dispatch(grid, timer, t_prev, False)
                else:
                    countdown = every - 1
                    self._dispatch(grid, timer, t_prev, True)
                t_prev = now_ns()  # it may have held the loop
                continue
            missed = grid.advance(timer, tick, t_prev)
            if missed:
                timer.trouble().missed += missed
            timer._runs += 1
            if countdown:
                countdown -= 1
                untimed += 1
                self._call(timer, scheduled_ns, ticks, ticks_raw, missed)
                continue
            countdown = every - 1
            if untimed:
                t_prev = self._group_done(last_timed, untimed, t_prev)
                untimed = 0
            t_prev = self._timed_run(timer, t_prev, scheduled_ns, ticks, ticks_raw, missed)
            last_timed = timer
        if stale:
            grid.queue.settle(stale)

    def _fire_stopping(self, grid: Grid, tick: int, bucket: list[Timer]) -> None:
        """While the scheduler stops, a due bucket runs only the scheduler's own one-shots (a
        draining run's timeout); the others start no run and are parked far out (the stop
        resets every timer's position, and they are armed afresh at the next start)."""
        stale = 0
        for timer in bucket:
            if timer._due_tick != tick:
                stale += 1
            elif timer._mode & INTERNAL:
                grid.hold(timer)
                timer._state = FINISHED
                timer._call()
            else:
                grid.put(timer, tick + _PARKED)
        if stale:
            grid.queue.settle(stale)

    def _point(self, grid: Grid, tick: int) -> tuple[int, int, int]:
        """``(scheduled_ns, ticks, ticks_raw)`` of grid point ``tick`` of ``grid``."""
        scheduled_ns = grid.ns_of(tick)
        since_start_ns = scheduled_ns - self._start_ns
        return scheduled_ns, since_start_ns // NS_PER_S, since_start_ns // NS_PER_MS

    def _chunks(self, size: int) -> tuple[int, int]:
        """How a batch of ``size`` entries is timed: ``(every, untimed)``.

        Every run of a batch of up to SAMPLE_BUDGET timers is timed; a bigger batch goes in
        chunks of ``every`` entries, the last of each timed and the others timed as a group
        (for the loop-block watchdog); the first chunk has ``untimed`` entries before its timed
        one, a phase that rotates from batch to batch so each timer is timed in turn.
        """
        every = 1 + size // SAMPLE_BUDGET
        if every == 1:
            return 1, 0
        self._phase += 1
        return every, self._phase % every

    def _group_done(self, last_timed: Timer | None, count: int, since_ns: int) -> int:
        """``count`` untimed runs since ``since_ns`` ended: report them if they held the loop
        too long; the clock now."""
        now_ns = self._now_ns()
        if now_ns - since_ns >= self._block_ns:
            self._group_blocked(last_timed, count, now_ns - since_ns)
        return now_ns

    def _call(
        self, timer: Timer, scheduled_ns: int, ticks: int, ticks_raw: int, missed: int
    ) -> None:
        """Call a fast-mode timer's callback (re-queued already); errors are reported."""
        try:
            if timer._mode:
                timer._call(Tick(ticks, ticks_raw, scheduled_ns, missed, timer.spec.param, timer))
            else:
                timer._call()
        except Exception as exc:
            self._failed(timer, exc)

    def _timed_run(
        self, timer: Timer, t0: int, scheduled_ns: int, ticks: int, ticks_raw: int, missed: int
    ) -> int:
        """:meth:`_call` started at ``t0``, timed: its statistics and the loop-block watchdog.
        Returns the clock after the run."""
        self._call(timer, scheduled_ns, ticks, ticks_raw, missed)
        t1 = self._now_ns()
        self._record(timer, t0 - scheduled_ns, t1 - t0, t0)
        if t1 - t0 >= self._block_ns:
            self._blocked(timer, t1 - t0)
        return t1

    # -- everything else ---------------------------------------------------------------------

    def _dispatch(self, grid: Grid, timer: Timer, now_ns: int, timed: bool = True) -> None:
        """A due timer of a slow mode (coroutine, thread, one-shot, jitter, timeout...);
        ``timed=False``: a big batch's untimed run (an eager run that completes is not timed,
        see the module's notes on sampling)."""
        mode = timer._mode
        if mode & INTERNAL:
            grid.hold(timer)
            timer._state = FINISHED
            timer._call()
            return
        grid_tick = timer._grid_tick
        missed = 0
        kind = timer.spec.kind
        if kind is PERIODIC or kind is CALENDAR_KIND:
            missed = grid.advance(timer, grid_tick, now_ns)
            if missed:
                timer.trouble().missed += missed
        else:
            grid.hold(timer)  # re-queued or ended once the run returns
        if mode & GATED:  # a cluster timer: the gate decides, for the whole batch at once
            run = GatedRun(
                timer, grid_tick, grid.ns_of(grid_tick), missed, self._start_gated, self._skip
            )
            self._gated.append(run)
            return
        if mode & ASYNC and timer._running >= timer.spec.policy.overlap.limit:
            self._wait_or_skip(grid, timer, grid_tick, missed, now_ns)
            return
        self._start_run(grid, timer, grid_tick, missed, None, timed)

    def _wait_or_skip(
        self, grid: Grid, timer: Timer, grid_tick: int, missed: int, now: int
    ) -> None:
        """A run is due while earlier runs of the timer still go. Under BURST, the runs of one
        burst (points that came due together after a stall: late by an interval or more, or due
        in the wake-up that started the run before) run one after the other: this one waits.
        Else ``Overlap.QUEUE`` keeps one run waiting, or the run is skipped and counted as an
        overlap."""
        trouble = timer.trouble()
        policy = timer.spec.policy
        if policy.missed is MISSED_BURST and (
            trouble.pending
            or trouble.started_in == self.wakeup
            or grid.tick_of(now) - grid_tick >= timer._interval
        ):
            if len(trouble.pending) <= policy.max_catchup:
                trouble.pending.append((grid_tick, missed))
                return
        elif policy.overlap.mode == "queue" and trouble.queued_run is None:
            trouble.queued_run = (grid_tick, missed)
            return
        trouble.overlaps += 1

    def flush_gated(self) -> None:
        """Offer the batch's gated runs to the gate (the scheduler calls it after each batch
        of wake-up work)."""
        runs, self._gated = self._gated, []
        gate = self.gate
        try:
            if gate is None:
                raise RuntimeError("no run gate is installed (no Cluster service attached)")
            gate.offer(runs)
        except Exception:
            logger.exception("the run gate failed; %d cluster run(s) skipped here", len(runs))
            for run in runs:
                if not run._decided:
                    run.skip()

    def _start_gated(self, run: GatedRun, on_done: RunDone | None) -> bool:
        """The gate's verdict: run it here, now. A cluster run due while the timer's earlier
        run still goes here is an overlap (counted; neither queued nor replayed)."""
        timer = run.timer
        if timer._state is not ACTIVE or self.stopping:  # (a stop starts no run)
            return False
        grid = timer._grid
        if timer._mode & ASYNC and timer._running >= timer.spec.policy.overlap.limit:
            timer.trouble().overlaps += 1
            return False
        self._start_run(grid, timer, run.instant_ms, run.missed, on_done)
        return True

    def _skip(self, run: GatedRun) -> None:
        """The gate's verdict: not here (a calendar one-shot then ends all the same)."""
        timer = run.timer
        self._settle(timer._grid, timer, run.instant_ms, None)

    def _start_run(
        self,
        grid: Grid,
        timer: Timer,
        grid_tick: int,
        missed: int,
        on_done: RunDone | None = None,
        timed: bool = True,
        counted: bool = False,
    ) -> None:
        """Start a run of ``timer`` for ``grid_tick`` (``counted``: its run was counted by the
        caller, the lean loop)."""
        mode = timer._mode
        scheduled_ns = grid.ns_of(grid_tick)
        if not counted:
            timer._runs += 1
        arg: tuple[Tick, ...] = ()
        if mode & TAKES_TICK:
            since_start_ns = scheduled_ns - self._start_ns
            param = timer.spec.param
            wall = grid.wall_of(timer, grid_tick) if mode & (CALENDAR | GATED) else None
            arg = (
                Tick(
                    since_start_ns // NS_PER_S,
                    since_start_ns // NS_PER_MS,
                    scheduled_ns,
                    missed,
                    param,
                    timer,
                    wall,
                ),
            )
        if mode & ASYNC:
            timer._running += 1
            self.inflight += 1
            if mode & BURST:
                timer.trouble().started_in = self.wakeup  # (a burst's next run waits for it)
            if mode & EAGER and on_done is None and self._eager is not None:
                self._start_eager(grid, timer, grid_tick, scheduled_ns, arg, timed)
                return
            if (
                mode & THREAD
                and on_done is None
                and self._threads is not None
                and timer.spec.policy.timeout_ns is None
            ):
                self._start_thread(grid, timer, grid_tick, scheduled_ns, arg)
                return
            assert self._task_group is not None
            run = self._run_async(grid, timer, grid_tick, scheduled_ns, arg, on_done)
            self._backend.start_run(run, self._task_group, self._tasks)
            return
        outcome = "ok"
        t0 = self._now_ns()
        try:
            result = timer._call(*arg)
        except Exception as exc:
            self._failed(timer, exc)
            result = _FAILED
            outcome = "error"
        duration_ns = self._now_ns() - t0
        self._record(timer, t0 - scheduled_ns, duration_ns, t0)
        if duration_ns >= self._block_ns:
            self._blocked(timer, duration_ns)
        timeout_ns = timer.spec.policy.timeout_ns
        if timeout_ns is not None and duration_ns > timeout_ns:
            self._overran(timer, duration_ns)
            result = _FAILED
            outcome = "timeout"
        if on_done is not None:
            _report_done(on_done, timer, outcome, duration_ns)
        self._settle(grid, timer, grid_tick, result)

    def _start_eager(
        self,
        grid: Grid,
        timer: Timer,
        grid_tick: int,
        scheduled_ns: int,
        arg: tuple[Tick, ...],
        timed: bool,
    ) -> None:
        """An eager coroutine run (see ``_eager``): its coroutine is stepped here; one that
        returns is settled at once, one that suspends goes on in a task (:meth:`_rest_ended` at its
        end)."""
        eager = self._eager
        assert eager is not None
        t0 = self._now_ns() if timed else 0  # (an untimed run's start is never read)
        try:
            out = eager.step(timer._call(*arg), timer)
        except Exception as exc:
            self._failed(timer, exc)
            out = _FAILED
        if out is COMPLETED or out is _FAILED:
            self._async_ended(timer, scheduled_ns, t0, timed)
            if timer._mode & SPECIAL:  # (else periodic: re-queued before the run)
                result = eager.result() if out is COMPLETED else _FAILED
                self._settle(grid, timer, grid_tick, result)
            if timer._trouble is not None:  # (else no run waits)
                self._next_waiting(grid, timer)
            return
        eager.resume(out, (grid, timer, grid_tick, scheduled_ns, t0, timed))

    def _rest_ended(
        self,
        run: tuple[Grid, Timer, int, int, int, bool],
        result: object,
        exc: BaseException | None,
    ) -> None:
        """The rest of an eager run that suspended ended, in its task's last step (see
        ``_eager``): as the end of :meth:`_run_async` (timed if its start was: the batch's
        sample, see the module's notes). ``run`` is what :meth:`_start_eager` gave."""
        grid, timer, grid_tick, scheduled_ns, t0, timed = run
        self._async_ended(timer, scheduled_ns, t0, timed)
        if exc is not None:
            if not isinstance(exc, Exception):  # cancelled (a hard stop), or leaving the loop
                if timer.spec.kind is ONESHOT and timer._state is ACTIVE:
                    self._finish(timer)  # a one-shot's run happened all the same
                return
            self._failed(timer, exc)
            result = _FAILED
        if timer._mode & SPECIAL:  # (else periodic: re-queued before the run)
            self._settle(grid, timer, grid_tick, result)
        if timer._trouble is not None:  # (else no run waits)
            self._next_waiting(grid, timer)

    def _async_ended(self, timer: Timer, scheduled_ns: int, t0: int, timed: bool = True) -> None:
        """An asynchronous run that started at ``t0`` ended: its stats (if ``timed``) and the
        counts (and the drain hears of it: only a stop waits for the runs in flight)."""
        if timed:
            self._record(timer, t0 - scheduled_ns, self._now_ns() - t0, t0)
        timer._running -= 1
        self.inflight -= 1
        if self.stopping:
            self._run_finished()

    async def _run_async(
        self,
        grid: Grid,
        timer: Timer,
        grid_tick: int,
        scheduled_ns: int,
        arg: tuple[Tick, ...],
        on_done: RunDone | None = None,
    ) -> None:
        current_timer.set(timer)
        timeout_ns = timer.spec.policy.timeout_ns
        outcome = "ok"
        t0 = self._now_ns()
        result: object = _FAILED
        watchdog: Timer | None = None
        try:
            if timer._mode & THREAD:
                result = await self._run_thread(timer, arg, timeout_ns, t0)
                if result is _TIMED_OUT:
                    result, outcome = _FAILED, "timeout"
            elif timeout_ns is None:
                coro: Awaitable[Any] = timer._call(*arg)
                result = await coro
            else:
                with anyio.CancelScope() as scope:
                    watchdog = self._later(timeout_ns, scope.cancel)
                    coro = timer._call(*arg)
                    result = await coro
                if scope.cancelled_caught:
                    result, outcome = _FAILED, "timeout"
                    self._timed_out(timer)
        except Exception as exc:
            self._failed(timer, exc)
            result, outcome = _FAILED, "error"
        except BaseException:  # cancelled (a hard stop): a one-shot's run happened all the same
            if timer.spec.kind is ONESHOT and timer._state is ACTIVE:
                self._finish(timer)
            if on_done is not None:
                on_done("cancelled", self._now_ns() - t0)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._async_ended(timer, scheduled_ns, t0)
        if on_done is not None:
            _report_done(on_done, timer, outcome, self._now_ns() - t0)
        self._settle(grid, timer, grid_tick, result)
        self._next_waiting(grid, timer)

    async def _run_thread(
        self, timer: Timer, arg: tuple[Tick, ...], timeout_ns: int | None, t0: int
    ) -> object:
        """Run a sync callback in a worker thread; past its timeout it is reported (a thread
        cannot be killed) and its run counts as failed."""
        overran: list[bool] = []
        watchdog: Timer | None = None
        if timeout_ns is not None:

            def report() -> None:
                overran.append(True)
                self._overran(timer, timeout_ns, still_running=True)

            watchdog = self._later(timeout_ns, report)
        self._thread_started(timer)
        try:
            with self._hold():
                if self._threads is not None:
                    import asyncio

                    context = contextvars.copy_context()  # as anyio does: the run sees ours
                    result = await asyncio.get_running_loop().run_in_executor(
                        self._threads.executor, context.run, timer._call, *arg
                    )
                else:
                    result = await anyio.to_thread.run_sync(
                        timer._call, *arg, limiter=self.limiter, abandon_on_cancel=True
                    )
        finally:
            self._thread_ended(timer)
            if watchdog is not None:
                watchdog.cancel()
        duration_ns = self._now_ns() - t0
        if timeout_ns is not None and duration_ns > timeout_ns:
            if not overran:
                self._overran(timer, duration_ns)
            return _TIMED_OUT  # a run past its timeout counts as failed
        return result

    def _start_thread(
        self, grid: Grid, timer: Timer, grid_tick: int, scheduled_ns: int, arg: tuple[Tick, ...]
    ) -> None:
        """A thread run without a timeout, on asyncio: no task, the pool hands its end back to
        :meth:`_thread_done`, which does what the end of :meth:`_run_async` does. A hard stop
        abandons it (the thread finishes on its own, its result dropped)."""
        threads = self._threads
        assert threads is not None
        self._thread_started(timer)
        hold = self._hold()
        hold.__enter__()
        context = contextvars.copy_context()  # as anyio does: the run sees ours
        context.run(current_timer.set, timer)
        t0 = self._now_ns()
        ended = partial(self._thread_done, grid, timer, grid_tick, scheduled_ns, t0, hold)
        threads.submit(ended, context.run, timer._call, *arg)

    def _thread_done(
        self,
        grid: Grid,
        timer: Timer,
        grid_tick: int,
        scheduled_ns: int,
        t0: int,
        hold: AbstractContextManager[object],
        future: Future[Any] | None,
    ) -> None:
        """The thread run of :meth:`_start_thread` ended (``future``), or a hard stop abandoned
        it (``None``)."""
        hold.__exit__(None, None, None)
        self._thread_ended(timer)
        self._async_ended(timer, scheduled_ns, t0)
        if future is None or future.cancelled():  # a hard stop: a one-shot's run happened anyway
            if timer.spec.kind is ONESHOT and timer._state is ACTIVE:
                self._finish(timer)
            return
        exc = future.exception()
        result: object = _FAILED
        if exc is None:
            result = future.result()
        else:
            self._failed(timer, exc)
        self._settle(grid, timer, grid_tick, result)
        self._next_waiting(grid, timer)

    def _thread_started(self, timer: Timer) -> None:
        self.threads[timer] = self.threads.get(timer, 0) + 1

    def _thread_ended(self, timer: Timer) -> None:
        left = self.threads[timer] - 1
        if left:
            self.threads[timer] = left
        else:
            del self.threads[timer]

    def _next_waiting(self, grid: Grid, timer: Timer) -> None:
        """A run ended: start a run that waited for it (a BURST catch-up, then a queued one)."""
        trouble = timer._trouble
        if trouble is None or timer._state is not ACTIVE:
            return
        if trouble.pending:
            self._start_run(grid, timer, *trouble.pending.pop(0))
        elif trouble.queued_run is not None:
            queued, trouble.queued_run = trouble.queued_run, None
            self._start_run(grid, timer, *queued)

    def _later(self, delay_ns: int, fn: Callable[[], object]) -> Timer:
        """Run ``fn()`` once after ``delay_ns`` (rounded up to whole ms) on the ms grid and the
        scheduler's clock: how run timeouts follow virtual time in tests. Cancel to drop it."""
        return internal_oneshot(self._ms, self._now_ns(), delay_ns, fn)

    def _record(self, timer: Timer, lateness_ns: int, duration_ns: int, started_ns: int) -> None:
        """The stats of a timed run. A clock that went back (a misbehaving custom clock) makes a
        negative duration: clamped to 0 and reported once."""
        if duration_ns < 0 or lateness_ns < 0:
            if not self._clock_back:
                self._clock_back = True
                logger.warning(
                    "the clock went back during a run of timer %r (%d ns): durations and "
                    "lateness are clamped to 0 (reported once)",
                    timer.name,
                    min(duration_ns, lateness_ns),
                )
            duration_ns = max(0, duration_ns)
            lateness_ns = max(0, lateness_ns)
        slab = self._slab
        hist = timer._hist
        if hist == NO_HISTOGRAM:  # allocated at the first timed run: timers that never run
            hist = timer._hist = slab.allocate()  # (cancelled per-call one-shots) cost nothing
        slab.record_run(hist, lateness_ns, duration_ns, started_ns)

    def _settle(self, grid: Grid, timer: Timer, grid_tick: int, result: object) -> None:
        """Settle a non-periodic timer once its run returned ``result``."""
        kind = timer.spec.kind
        if kind is PERIODIC or timer._state is not ACTIVE:
            return  # periodic timers were re-queued before the run; ended ones stay ended
        if timer._due_tick != NOT_QUEUED:
            return  # rescheduled during the run, or a calendar timer queued for its next instant
        if kind is ONESHOT or kind is CALENDAR_KIND:
            self._finish(timer)  # (a calendar timer held by its grid has no instant left)
            return
        # RETURNS_INTERVAL: None keeps the interval, 0 stops, n > 0 is the next interval.
        if result is None or result is _FAILED:
            pass  # a failed run keeps the schedule; the error was reported
        elif result == 0 and type(result) is int:
            self._finish(timer)
            return
        else:
            unit = timer.spec.unit
            try:
                whole = check_interval(timer.name, "returned interval", result, unit)
            except (TypeError, ValueError) as exc:
                self._failed(timer, exc)
            else:
                timer._interval = whole * unit.tick_ns // grid.tick_ns
        missed = grid.advance(timer, grid_tick, self._now_ns())
        if missed:
            timer.trouble().missed += missed

    # -- reporting ---------------------------------------------------------------------------

    def _failed(self, timer: Timer, exc: BaseException) -> None:
        timer.trouble().errors += 1
        logger.error("timer %r failed: %s: %s", timer.name, type(exc).__name__, exc, exc_info=exc)
        self._count_failure(timer, exc)

    def _timed_out(self, timer: Timer) -> None:
        timer.trouble().timeouts += 1
        exc = TimeoutError(
            f"timer {timer.name!r}: run cancelled after timeout_s={timer.spec.policy.timeout_s}"
        )
        logger.warning("%s", exc)
        self._count_failure(timer, exc)

    def _overran(self, timer: Timer, elapsed_ns: int, *, still_running: bool = False) -> None:
        """A sync run went past its timeout (it cannot be killed, only reported)."""
        timer.trouble().timeouts += 1
        what = "is still running" if still_running else "ran"
        exc = TimeoutError(
            f"timer {timer.name!r}: run {what} after {elapsed_ns / 1e6:.1f} ms, past its "
            f"timeout_s={timer.spec.policy.timeout_s}"
        )
        logger.warning("%s", exc)
        self._count_failure(timer, exc)

    def _count_failure(self, timer: Timer, exc: BaseException) -> None:
        # Consecutive: the previous failure was the previous run (no bookkeeping per success).
        trouble = timer.trouble()
        in_row = trouble.failed_run == timer._runs - 1
        trouble.failures_in_row = trouble.failures_in_row + 1 if in_row else 1
        trouble.failed_run = timer._runs
        policy = timer.spec.policy
        for hook in (policy.on_error, self._on_error):
            if hook is not None:
                try:
                    hook(timer, exc)
                except Exception:
                    logger.exception("on_error hook %r failed for timer %r", hook, timer.name)
        limit = policy.max_failures
        if limit is not None and trouble.failures_in_row >= limit and timer.cancel():
            logger.error(
                "timer %r cancelled after %d consecutive failures (max_failures=%d)",
                timer.name,
                trouble.failures_in_row,
                limit,
            )

    def _group_blocked(self, after: Timer | None, runs: int, duration_ns: int) -> None:
        """Untimed runs of a big batch held the loop too long together (see :meth:`fire`)."""
        where = f"after timer {after.name!r}" if after is not None else "at the start of a batch"
        logger.warning(
            "sync callbacks run %s (at most %d of them) blocked the event loop for %.1f ms "
            "together",
            where,
            runs,
            duration_ns / 1e6,
        )

    def _blocked(self, timer: Timer, duration_ns: int) -> None:
        timer.trouble().loop_blocks += 1
        logger.warning(
            "timer %r blocked the event loop for %.1f ms (sync callback; consider thread=True "
            "or an async def)",
            timer.name,
            duration_ns / 1e6,
        )


def _report_done(on_done: RunDone, timer: Timer, outcome: str, duration_ns: int) -> None:
    """Tell ``on_done`` how the run ended: ``"ok"``, ``"error"`` or ``"timeout"``."""
    try:
        on_done(outcome, duration_ns)
    except Exception:
        logger.exception("the run gate's on_done failed for timer %r", timer.name)


def _internal() -> None:
    """Stands for the callable of an internal one-shot (each brings its own)."""


INTERNAL_SPEC: Final = TimerSpec(_internal, 1, UNIT_MS, ONESHOT, name="aiotimer.internal")
"""The spec every internal one-shot (run timeouts) shares."""


def internal_oneshot(grid: Grid, now_ns: int, delay_ns: int, fn: Callable[[], object]) -> Timer:
    """A one-shot of the scheduler's own (no registry, no stats) running ``fn()`` after
    ``delay_ns`` rounded up to whole ticks of ``grid``."""
    delay = max(1, -(-delay_ns // grid.tick_ns))
    timer = Timer(INTERNAL_SPEC, INTERNAL_SPEC.label, grid, delay, INTERNAL)
    timer._call = fn
    timer._state = ACTIVE
    grid.arm(timer, now_ns)
    return timer
