"""The dispatcher: the one place that knows how a due timer is run.

Ground rules:

* Sync callbacks run inline on the loop, one after the other, in the order their bucket holds
  them; coroutine callbacks run as tasks (plain tasks of the loop on asyncio, tracked and
  cancelled by the scheduler; tasks of its task group on trio); sync callbacks marked
  ``thread=True`` run in a worker thread through the scheduler's own capacity limiter.
* A periodic timer is re-queued on its grid *before* its callback runs, so the callback may
  cancel, pause or reschedule its own timer (or any other timer of the same batch) safely:
  every change goes through the scheduler, and an entry whose timer moved on is skipped.
* A callback's exception is logged with the timer's name, counted and handed to the
  ``on_error`` hooks; the timer keeps its schedule and nothing else is disturbed.
  ``KeyboardInterrupt``, ``SystemExit`` and cancellation are never swallowed.
* A grid point that passes without a run of its own is *missed*: ``runs + missed`` equals the
  grid points due so far (for ``SKIP`` and ``DELAY``; ``BURST`` replays them instead).
* "Now", for deciding whether a run is late, is re-read after every timed run, so a callback
  that blocks the loop makes the later timers of its own batch late too. (In a batch bigger
  than ``SAMPLE_BUDGET``, between timed runs, it is the time of the last timed run.)

The hot path is :meth:`Dispatcher.fire` for a periodic, inline sync timer without jitter or
timeout (mode ``0``, or ``TAKES_TICK``; the missed policy and error hooks act only on late or
failed runs). It has two loops:

* a *uniform* bucket (see ``_queue``: every live entry such a timer, all of one interval, so
  all re-queue to one tick), on time, runs each timer with a stale check, one store of its
  next tick, one counter and the call itself (plus a ``Tick`` for callbacks that take one),
  and the whole list goes back to the queue at once: about 0.2 µs per fire on a 2-vCPU VM.
  That is the steady state of timers that share an interval.
* any other bucket (mixed intervals or modes, late runs) computes each timer's next tick and
  appends it there (the target bucket is looked up once per run of timers sharing a next
  tick): about 0.3 µs per fire. It marks the bucket it filled uniform when it turns out so.

Timing a run (two clock reads, two histogram increments, maxima, the loop-block check) costs
about 1 µs more there, so a batch times at most ``SAMPLE_BUDGET`` runs one by one and, beyond
that, one run in ``1 + len // SAMPLE_BUDGET`` (rotating), timing the others as groups for the
loop-block watchdog. Counters (runs, missed, errors) are always exact; every timer of a service
with fewer than 256 timers due at once is timed on every run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ._backend import current_backend
from ._clock import NS_PER_MS, NS_PER_S
from ._modes import ASYNC, COROUTINE, INTERNAL, SPECIAL, TAKES_TICK, THREAD
from ._policy import MISSED_BURST, MISSED_SKIP
from ._queue import NOT_QUEUED, TickQueue
from ._spec import ONESHOT, PERIODIC, TimerSpec, check_interval
from ._stats import NO_HISTOGRAM
from ._timer import ACTIVE, FINISHED, Tick, Timer

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["Dispatcher", "current_timer", "late_run", "mode_of"]

logger = logging.getLogger("aiotimer.dispatch")


SAMPLE_BUDGET: Final = 256
"""Runs timed one by one per batch; a bigger batch times one run in ``1 + len // 256``."""

current_timer: contextvars.ContextVar[Timer | None] = contextvars.ContextVar(
    "aiotimer_current_timer", default=None
)
"""The timer whose asynchronous run is going on in this task, if any."""


def mode_of(spec: TimerSpec) -> int:
    """The dispatch mode bits of a spec."""
    mode = TAKES_TICK if spec.takes_tick else 0
    if spec.is_coroutine:
        mode |= COROUTINE
    policy = spec.policy
    if policy.thread and not spec.is_coroutine:
        mode |= THREAD
    # The fast path handles periodic inline runs with any missed policy, error hooks and
    # max_failures (they act only on late or failed runs); these need the general path:
    if spec.kind is not PERIODIC or policy.jitter_ms or policy.timeout_s is not None:
        mode |= SPECIAL
    return mode


class _Failed:
    """The result of a run that raised or timed out."""

    __slots__ = ()


_FAILED: Final = _Failed()


@final
class Dispatcher:
    """Runs due timers for one :class:`~aiotimer.Scheduler`."""

    __slots__ = (
        "_block_ns",
        "_loop",
        "_phase",
        "_scheduler",
        "_tasks",
        "inflight",
        "limiter",
        "task_group",
    )

    def __init__(self, scheduler: Scheduler, block_ns: int | None) -> None:
        self._scheduler = scheduler
        self._block_ns = block_ns if block_ns is not None else 1 << 62
        self.task_group: TaskGroup | None = None  # set while the scheduler runs
        # On asyncio, asynchronous runs are plain tasks of this loop, tracked here and
        # cancelled by cancel_runs(); on trio they are tasks of the task group.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.limiter: anyio.CapacityLimiter | None = None  # for thread=True runs
        self.inflight = 0  # asynchronous runs in flight
        self._phase = 0  # rotates which runs of a big batch are timed

    def open(self, task_group: TaskGroup, thread_limit: int) -> None:
        """The scheduler started: runs go to ``task_group`` (or plain tasks on asyncio)."""
        self.task_group = task_group
        self.limiter = anyio.CapacityLimiter(thread_limit)
        self._loop = asyncio.get_running_loop() if current_backend() == "asyncio" else None

    async def cancel_runs(self) -> None:
        """Cancel the asynchronous runs still going (after the grace) and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def close(self) -> None:
        """The scheduler stopped. Runs still going (its task was cancelled from outside, no
        grace) are cancelled now; their cleanup runs as the loop gets to them."""
        for task in self._tasks:
            task.cancel()
        self.task_group = None
        self._loop = None

    # -- the hot path ------------------------------------------------------------------------

    def fire(
        self, queue: TickQueue, tick: int, bucket: list[Timer], uniform: int, now_tick: int
    ) -> None:
        """Run every live timer of ``bucket``, due at ``tick``; ``uniform`` is the interval of a
        uniform bucket (see ``_queue``), else 0; ``now_tick`` is the tick now."""
        if uniform and now_tick - tick < uniform:
            done = self._fire_uniform(queue, tick, bucket, uniform)
            if done == len(bucket):
                return
            # It fell a whole interval behind: the rest are late runs, for the general loop.
            bucket = bucket[done:]
            now_tick = (self._scheduler._now_ns() - queue.origin_ns) // queue.tick_ns
        self._fire_mixed(queue, tick, bucket, now_tick)

    def _fire_uniform(self, queue: TickQueue, tick: int, bucket: list[Timer], interval: int) -> int:
        """:meth:`_fire_mixed` for a uniform bucket: every live entry is a fast-mode timer of
        ``interval``, on time, so each run is a stale check, one store, one counter and the
        call, and the list goes back whole to the next tick.

        :returns: the entries taken: all of them, unless the batch fell a whole interval behind
            (the clock is read at each timed run), when the rest are late runs

        Its loop is :meth:`_fire_mixed`'s with what a uniform bucket makes constant taken out:
        a change to one is a change to the other.
        """
        now_ns = self._scheduler._now_ns
        scheduled_ns, ticks, ticks_raw = self._grid_point(queue, tick)
        next_tick = tick + interval
        late_ns = queue.origin_ns + next_tick * queue.tick_ns  # runs from then on are late
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
                    timer._due_tick = next_tick
                    timer._runs += 1
                    try:
                        if timer._mode:
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
            taken += 1
            timer = timed
            if timer._due_tick != tick:
                stale += 1
                continue
            timer._due_tick = next_tick
            timer._runs += 1
            t_prev = self._timed_run(timer, t_prev, scheduled_ns, ticks, ticks_raw, 0)
            last_timed = timer
            if t_prev >= late_ns:
                break
        taken = min(taken, size)  # (the last islice may have come up short)
        queue.requeue(next_tick, bucket if taken == size else bucket[:taken], interval, stale)
        return taken

    def _fire_mixed(self, queue: TickQueue, tick: int, bucket: list[Timer], now_tick: int) -> None:
        """Run every live timer of ``bucket``, whatever their modes and intervals, late or not;
        mark the bucket they go back to uniform if it turns out so."""
        now_ns = self._scheduler._now_ns
        origin_ns = queue.origin_ns
        tick_ns = queue.tick_ns
        takes_tick = TAKES_TICK
        scheduled_ns, ticks, ticks_raw = self._grid_point(queue, tick)
        every, untimed = self._chunks(len(bucket))
        entries = iter(bucket)
        lag = now_tick - tick  # ticks late (re-read after each timed run)
        last_tick = NOT_QUEUED
        append = bucket.append  # replaced before first use
        targets = 0  # times the next tick changed along the bucket
        late = False
        stale = 0
        general = 0  # entries handed to the general path (they re-queue themselves)
        last_timed: Timer | None = None
        t_prev = now_ns()
        while True:
            if untimed:
                for timer in islice(entries, untimed):
                    if timer._due_tick != tick:
                        stale += 1  # cancelled, paused or moved since it was queued here
                        continue
                    mode = timer._mode
                    if mode > takes_tick:
                        self._fire_general(queue, timer, tick + lag)
                        general += 1
                        t_prev = now_ns()
                        lag = (t_prev - origin_ns) // tick_ns - tick  # it may have held the loop
                        continue
                    interval = timer._interval
                    if lag < interval:
                        next_tick = tick + interval
                        missed = 0
                    else:
                        next_tick, missed = late_run(timer, tick, tick + lag)
                        late = True
                    timer._due_tick = next_tick  # (no jitter: _grid_tick is _due_tick)
                    if next_tick != last_tick:
                        last_tick = next_tick
                        append = queue.bucket_for(next_tick).append
                        targets += 1
                    append(timer)
                    timer._runs += 1
                    try:
                        if mode:
                            param = timer.spec.param
                            timer._call(Tick(ticks, ticks_raw, scheduled_ns, missed, param, timer))
                        else:
                            timer._call()
                    except Exception as exc:
                        self._failed(timer, exc)
                t_prev = self._group_done(last_timed, untimed, t_prev)
            untimed = every - 1
            timed = next(entries, None)  # the timed run of this chunk
            if timed is None:
                break
            timer = timed
            if timer._due_tick != tick:
                stale += 1
                continue
            mode = timer._mode
            if mode > takes_tick:
                self._fire_general(queue, timer, tick + lag)
                general += 1
                t_prev = now_ns()
                lag = (t_prev - origin_ns) // tick_ns - tick
                continue
            interval = timer._interval
            if lag < interval:
                next_tick = tick + interval
                missed = 0
            else:
                next_tick, missed = late_run(timer, tick, tick + lag)
                late = True
            timer._due_tick = next_tick
            if next_tick != last_tick:
                last_tick = next_tick
                append = queue.bucket_for(next_tick).append
                targets += 1
            append(timer)
            timer._runs += 1
            t_prev = self._timed_run(timer, t_prev, scheduled_ns, ticks, ticks_raw, missed)
            lag = (t_prev - origin_ns) // tick_ns - tick  # a run may have held the loop
            last_timed = timer
        requeued = len(bucket) - stale - general
        queue.added(requeued)
        if stale:
            queue.settle(stale)
        if targets == 1 and not (general or late):  # all to one tick: one interval, fast modes
            queue.mark_uniform(last_tick, last_tick - tick, requeued)

    def _grid_point(self, queue: TickQueue, tick: int) -> tuple[int, int, int]:
        """``(scheduled_ns, ticks, ticks_raw)`` of grid point ``tick`` of ``queue``."""
        scheduled_ns = queue.origin_ns + tick * queue.tick_ns
        since_start_ns = scheduled_ns - self._scheduler._start_ns
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
        now_ns = self._scheduler._now_ns()
        if now_ns - since_ns >= self._block_ns:
            self._group_blocked(last_timed, count, now_ns - since_ns)
        return now_ns

    def _timed_run(
        self, timer: Timer, t0: int, scheduled_ns: int, ticks: int, ticks_raw: int, missed: int
    ) -> int:
        """Run a fast-mode ``timer`` (re-queued already) started at ``t0``, and time it: its
        statistics and the loop-block watchdog. Returns the clock after the run."""
        try:
            if timer._mode:
                timer._call(Tick(ticks, ticks_raw, scheduled_ns, missed, timer.spec.param, timer))
            else:
                timer._call()
        except Exception as exc:
            self._failed(timer, exc)
        t1 = self._scheduler._now_ns()
        self._record(timer, t0 - scheduled_ns, t1 - t0, t0)
        if t1 - t0 >= self._block_ns:
            self._blocked(timer, t1 - t0)
        return t1

    # -- everything else ---------------------------------------------------------------------

    def _fire_general(self, queue: TickQueue, timer: Timer, now_tick: int) -> None:
        mode = timer._mode
        if mode & INTERNAL:
            timer._due_tick = NOT_QUEUED
            timer._state = FINISHED
            timer._call()
            return
        spec = timer.spec
        policy = spec.policy
        grid = timer._grid_tick
        missed = 0
        if spec.kind is PERIODIC:
            if now_tick - grid < timer._interval:
                next_grid = grid + timer._interval
            else:
                next_grid, missed = late_run(timer, grid, now_tick)
            self._scheduler._queue_grid(timer, next_grid)
        else:
            timer._due_tick = NOT_QUEUED  # re-queued or finished once the run returns
        if mode & ASYNC and timer._running >= policy.overlap.limit:
            trouble = timer.trouble()
            if policy.overlap.mode == "queue" and trouble.queued_run is None:
                trouble.queued_run = (grid, missed)
            else:
                trouble.overlaps += 1
            return
        self._start_run(queue, timer, grid, missed)

    def _start_run(self, queue: TickQueue, timer: Timer, grid: int, missed: int) -> None:
        mode = timer._mode
        scheduler = self._scheduler
        scheduled_ns = queue.origin_ns + grid * queue.tick_ns
        timer._runs += 1
        arg: tuple[Tick, ...] = ()
        if mode & TAKES_TICK:
            since_start_ns = scheduled_ns - scheduler._start_ns
            arg = (
                Tick(
                    since_start_ns // NS_PER_S,
                    since_start_ns // NS_PER_MS,
                    scheduled_ns,
                    missed,
                    timer.spec.param,
                    timer,
                ),
            )
        if mode & ASYNC:
            timer._running += 1
            self.inflight += 1
            run = self._run_async(timer, grid, scheduled_ns, arg)
            loop = self._loop
            if loop is not None:  # asyncio: a plain task (anyio's start_soon costs ~8x more)
                task = loop.create_task(run)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                assert self.task_group is not None
                self.task_group.start_soon(lambda: run)
            return
        t0 = scheduler._now_ns()
        try:
            result = timer._call(*arg)
        except Exception as exc:
            self._failed(timer, exc)
            result = _FAILED
        duration_ns = scheduler._now_ns() - t0
        self._record(timer, t0 - scheduled_ns, duration_ns, t0)
        if duration_ns >= self._block_ns:
            self._blocked(timer, duration_ns)
        timeout_ns = timer.spec.policy.timeout_ns
        if timeout_ns is not None and duration_ns > timeout_ns:
            self._overran(timer, duration_ns)
            result = _FAILED
        self._after_run(timer, grid, result)

    async def _run_async(
        self, timer: Timer, grid: int, scheduled_ns: int, arg: tuple[Tick, ...]
    ) -> None:
        scheduler = self._scheduler
        current_timer.set(timer)
        timeout_ns = timer.spec.policy.timeout_ns
        t0 = scheduler._now_ns()
        result: object = _FAILED
        watchdog: Timer | None = None
        try:
            if timer._mode & THREAD:
                overran: list[bool] = []
                if timeout_ns is not None:

                    def report() -> None:
                        overran.append(True)
                        self._overran(timer, timeout_ns, still_running=True)

                    watchdog = scheduler._call_later_internal(timeout_ns, report)
                with scheduler.clock.hold():
                    result = await anyio.to_thread.run_sync(
                        timer._call, *arg, limiter=self.limiter, abandon_on_cancel=True
                    )
                duration_ns = scheduler._now_ns() - t0
                if timeout_ns is not None and duration_ns > timeout_ns:
                    result = _FAILED  # a run past its timeout counts as failed
                    if not overran:
                        self._overran(timer, duration_ns)
            elif timeout_ns is None:
                coro: Awaitable[Any] = timer._call(*arg)
                result = await coro
            else:
                with anyio.CancelScope() as scope:
                    watchdog = scheduler._call_later_internal(timeout_ns, scope.cancel)
                    coro = timer._call(*arg)
                    result = await coro
                if scope.cancelled_caught:
                    result = _FAILED
                    self._timed_out(timer)
        except Exception as exc:
            self._failed(timer, exc)
            result = _FAILED
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._record(timer, t0 - scheduled_ns, scheduler._now_ns() - t0, t0)
            timer._running -= 1
            self.inflight -= 1
            scheduler._run_finished()
        self._after_run(timer, grid, result)
        trouble = timer._trouble
        if trouble is not None and trouble.queued_run is not None:
            queued, trouble.queued_run = trouble.queued_run, None
            if timer._state is ACTIVE:
                self._start_run(timer._queue, timer, *queued)

    def _record(self, timer: Timer, lateness_ns: int, duration_ns: int, started_ns: int) -> None:
        """The stats of a run off the hot path (the same numbers :meth:`fire` keeps inline)."""
        slab = self._scheduler._hist
        hist = timer._hist
        if hist == NO_HISTOGRAM:  # allocated at the first timed run: timers that never run
            hist = timer._hist = slab.allocate()  # (cancelled per-call one-shots) cost nothing
        slab.record_run(hist, lateness_ns, duration_ns, started_ns)

    def _after_run(self, timer: Timer, grid: int, result: object) -> None:
        """Settle a non-periodic timer once its run returned ``result``."""
        kind = timer.spec.kind
        if kind is PERIODIC or timer._state is not ACTIVE:
            return  # periodic timers were re-queued before the run; ended ones stay ended
        if timer._due_tick != NOT_QUEUED:
            return  # rescheduled during the run: that wins
        scheduler = self._scheduler
        if kind is ONESHOT:
            scheduler._finish(timer)
            return
        # RETURNS_INTERVAL: None keeps the interval, 0 stops, n > 0 is the next interval.
        interval = timer._interval
        if result is None or result is _FAILED:
            pass  # a failed run keeps the schedule; the error was reported
        elif result == 0 and type(result) is int:
            scheduler._finish(timer)
            return
        else:
            try:
                whole = check_interval(timer.name, "returned interval", result, timer.spec.unit)
            except (TypeError, ValueError) as exc:
                self._failed(timer, exc)
            else:
                interval = whole * timer.spec.unit.tick_ns // timer._queue.tick_ns
        timer._interval = interval
        scheduler._requeue_after(timer, grid)

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
        for hook in (policy.on_error, self._scheduler._on_error):
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


def late_run(timer: Timer, grid: int, now_tick: int) -> tuple[int, int]:
    """``(next grid point, missed)`` for a periodic run for ``grid`` that happens at
    ``now_tick``, one interval or more late: the timer's :class:`~aiotimer.Missed` policy."""
    interval = timer._interval
    passed = (now_tick - grid) // interval  # grid points that passed after `grid`
    policy = timer.spec.policy
    if policy.missed is MISSED_SKIP:  # merge them into this run
        missed = passed
        next_grid = grid + (passed + 1) * interval
    elif policy.missed is MISSED_BURST:  # replay them, but at most max_catchup
        missed = max(0, passed - policy.max_catchup)
        next_grid = grid + (missed + 1) * interval
    else:  # MISSED_DELAY: restart the grid from this late run
        missed = passed
        next_grid = now_tick + interval
    if missed:
        timer.trouble().missed += missed
    return next_grid, missed
