"""Eager coroutine runs on asyncio: a run starts at its grid point, in the dispatch of its batch,
and becomes a task only if it suspends (what Python 3.12's eager tasks do, on 3.11 too).

Why: most timer coroutines do a little work and return, or await something that is ready. A
task for each run costs ~5 µs (the Task, a ``call_soon``, a loop iteration); stepping the
coroutine once costs a fraction of that, and a run that completes in that step needs nothing
more.

How: :meth:`EagerRunner.step` sends the coroutine to the runner's *driver* (a generator that
``yield from``-s each coroutine it is sent) in a copy of the caller's context. If the coroutine
returns, the run is over. If it yields (it awaits a future that is not done), the driver is
that coroutine's from then on, and a Task takes over: its coroutine (:func:`_rest`) awaits
:func:`_resumed`, a generator that hands the Task what the coroutine yielded (the future it
waits for), then passes every later ``send``/``throw``/``close`` to the coroutine, through its
driver. The Task then runs it as any other: cancellation, context variables, exceptions.

The driver's trade (callgrind, 2,000 periodic coroutine timers on virtual time, instructions
per fire, with the flag and mode-bit changes of the same commit): a run that returns without
suspending 15,070 -> 11,250 (no ``StopIteration`` to catch, no ``Context.run`` to set the
variable); a run that suspends once (``asyncio.sleep(0)``) 63,480 -> 69,000 (a new driver
for the runner, and one more generator frame per resume of the task), then 59,400 once the
Task's first step resumes a coroutine that made a bare yield (see :func:`_resumed`)
instead of handing the ``None`` back for a second pass of the loop, then 54,250 once a driver
whose coroutine returned in its task is kept for the next run that suspends (the runner's
spare drivers: no new generator per such run, less for the garbage collector to follow), then
52,600 once the Task's coroutine is a native one over a generator (:func:`_rest`) rather than
an object with a Python ``send``: the Task steps it in C, and its end makes no
``StopIteration`` (a driver handed over that returns its coroutine's result itself, with no
spare drivers, measured 54,900: a new driver per such run costs more than it saves).

Ground rules (the visible differences from a task run, documented in the README):

* Code before the first suspension runs before the next timer of the batch (synchronously).
* Before its first suspension, the run's current task is the scheduler's *eager host*: a task
  that only waits, made for this, so that anyio and sniffio see a task and nothing the
  coroutine does binds to the scheduler's own task. The dispatcher makes the host current for
  a whole wake-up (:meth:`EagerRunner.enter`: the tick source's task is set aside with
  ``asyncio.tasks._enter_task`` / ``_leave_task``, stable since 3.7), which also saves a
  swap per run; so sync callbacks see the host too. What binds to the current task (an
  anyio cancel scope, ``asyncio.timeout``) must therefore be entered after the first
  ``await``, or the timer registered with ``eager=False`` (an anyio cancel scope left in
  another task fails loudly). Use ``timeout_s=`` for a run's timeout: such runs are tasks.
* Only asyncio (and uvloop). On trio runs stay tasks.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import contextvars
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Final, final

from ._timer import Timer, current_timer

__all__ = ["COMPLETED", "EagerRunner", "RunEnd"]

COMPLETED: Final = object()
"""What :meth:`EagerRunner.step` returns for a run that completed (its result: ``result()``)."""
SPARE_DRIVERS: Final = 8192
"""Drivers of runs that suspended and then returned, kept for the next runs that suspend (the
runs in flight at once, as many as that: ~300 bytes each)."""
_copy_context = contextvars.copy_context
_set_timer = current_timer.set  # (one bound method for every driver: a spare one holds none)
_leave_task = asyncio.tasks._leave_task
_enter_task = asyncio.tasks._enter_task
# current_task(loop) without a Python frame: 3.12 made asyncio's a C function; on 3.11 it is
# Python, over the C dict of current tasks it reads.
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
    if sys.version_info < (3, 12)
    else asyncio.current_task
)


RunEnd = Callable[[Any, object, BaseException | None], None]
"""``end(run, result, exc)``: the rest of the eager run ``run`` (what
:meth:`EagerRunner.resume` was given) ended, returning ``result`` (``exc`` is ``None``) or
raising ``exc``. An ``Exception`` is the run's failure, reported by ``end``: the task itself
then ends normally (as a task run's wrapper catches it); a ``BaseException`` (cancellation,
``KeyboardInterrupt``...) goes on out of the task."""


async def _rest(resumed: Awaitable[Any], runner: EagerRunner, run: Any) -> Any:
    """The coroutine of the task of an eager run that suspended: it awaits the rest of the run
    (``resumed``: see :func:`_resumed`) and tells the runner how it ended, in the task's last
    step (synchronously: what comes next for the timer is decided then, as for a task run; no
    done callback, one loop callback less per run).

    A native coroutine: the task steps it in C (no Python ``send`` per step, no
    ``StopIteration`` made when it returns). :meth:`EagerRunner.resume` steps it once before
    the task has it, to the first stop of ``resumed``, inside this ``try``: from the task's
    first step on, whatever it throws in reaches the run (a task cancelled before its first
    step, which a native coroutine not yet started would end without running a line of it,
    still ends as a run, and its coroutine hears of it)."""
    try:
        result = await resumed
    except GeneratorExit:  # (closed, as its task is collected unfinished: no end to tell)
        raise
    except Exception as exc:
        runner._ended(run, None, exc)  # reported there: the task itself ends normally
        return None
    except BaseException as exc:  # cancelled, or leaving the loop
        runner._ended(run, None, exc)
        raise
    runner._ended(run, result, None)
    return result


@types.coroutine
def _resumed(
    first: object, driver: Generator[Any, Any, Any], runner: EagerRunner
) -> Generator[Any, Any, Any]:
    """The rest of a coroutine that suspended in its eager step, having yielded ``first``
    there; ``driver`` is the driver it suspended in (see :func:`_drive`). It first stops with
    nothing (for :meth:`EagerRunner.resume`'s pre-step), then yields ``first`` to the task (the
    future the coroutine waits for: the task waits for it in turn), then steps the driver with
    what the task sends or throws in, and hands the task what the coroutine yields, until the
    coroutine returns (:data:`COMPLETED`): the driver is then kept for the next run that
    suspends, and its result returned.

    A bare yield (``first`` is ``None``, as in ``asyncio.sleep(0)``) asked for one pass of the
    loop: the task's first step is that pass, so the coroutine goes on at once there (handing
    the ``None`` to the task would cost it a second pass and step). What the task throws in
    before the coroutine has gone on (cancelled) goes to the coroutine, which may take it."""
    out = None  # (the pre-step's stop)
    while True:
        try:
            value = yield out
        except GeneratorExit:  # (closed with its task: the coroutine with it)
            driver.close()
            raise
        except BaseException as exc:  # thrown in by the task: to the coroutine
            first = None
            out = driver.throw(exc)
        else:
            if first is not None:
                out, first = first, None
                continue
            out = driver.send(value)
        if out is COMPLETED:  # the coroutine returned: its result is in the runner's box
            result = runner.result()
            spare = runner._spare  # (the driver is ready for another coroutine: kept)
            if len(spare) < SPARE_DRIVERS:
                spare.append(driver)
            return result


def _drive(box: list[Any]) -> Generator[Any, Any, None]:
    """A driver: steps each coroutine it is sent, in the caller's context, with
    ``current_timer`` set to ``box[1]`` (taken), until the coroutine returns (its result goes in
    ``box[0]``, :data:`COMPLETED` out) or suspends (what it yielded goes out, and the driver is
    that coroutine's from then on: it goes to the Task with it, see :func:`_resumed`).

    Why: through ``yield from``, a coroutine's steps are C calls, and one that returns raises
    no ``StopIteration`` for Python code to catch (an exception object, a traceback entry and
    an ``except``: a good part of a direct ``send``); setting the variable here, in the context
    the driver runs in, saves a ``Context.run`` per run. A coroutine that raises ends its
    driver (the runner makes another).

    ``box`` is the runner's, shared by its drivers: a value is read at once, before anything
    else runs, or not at all (the timer by the driver, as it starts a coroutine; the result by
    whoever sent the coroutine the step in which it returned, if it needs it: a periodic run's
    result stays in the box until the next run returns)."""
    coro = yield
    while True:
        _set_timer(box[1])
        box[1] = None
        box[0] = yield from coro
        del coro  # (a spare driver holds no coroutine that ended)
        coro = yield COMPLETED


types.coroutine(_drive)  # (in place: a generator that may ``yield from`` a coroutine)


def _new_driver(box: list[Any]) -> Generator[Any, Any, None]:
    driver = _drive(box)
    next(driver)  # (to its first ``yield``: ready for a coroutine)
    return driver


@final
class EagerRunner:
    """Starts eager runs on one loop, with its eager host; tracks the runs that became tasks in
    ``tasks`` (the dispatcher's: cancelled at stop); ``end`` hears how each of those ended."""

    __slots__ = (
        "_box",
        "_context",
        "_driver",
        "_end",
        "_entered",
        "_host",
        "_loop",
        "_send",
        "_spare",
        "_suspended",
        "_tasks",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Future[Any]], end: RunEnd
    ) -> None:
        self._loop = loop
        self._tasks = tasks
        self._end = end
        self._host: asyncio.Task[None] | None = None
        self._entered = False  # the host is the current task (between enter and leave)
        self._box: list[Any] = [None, None]  # the drivers' [result, timer] (see _drive)
        self._driver = _new_driver(self._box)
        self._send = self._driver.send
        self._spare: list[Generator[Any, Any, None]] = []
        # the coroutine that suspended in the last step: its driver and context, for resume()
        self._suspended: Generator[Any, Any, None] | None = None
        self._context: contextvars.Context | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        """Make the eager host the current task, until :meth:`leave`: the dispatcher does it for
        a whole wake-up (one swap, not one per eager run), so callbacks that run in the dispatch,
        sync ones too, see the host as their current task.

        :returns: the task set aside (the tick source's), to give to :meth:`leave`
        """
        loop = self._loop
        host = self._host
        if host is None or host.done():  # made on first use (again if something ended it)
            host = self._host = loop.create_task(_wait_forever(), name="aiotimer eager host")
        current = _current_task(loop)
        if current is not None:
            _leave_task(loop, current)
        _enter_task(loop, host)
        self._entered = True
        return current

    def leave(self, set_aside: asyncio.Task[Any] | None) -> None:
        """Undo :meth:`enter`, which returned ``set_aside``."""
        loop = self._loop
        host = _current_task(loop)  # the host entered (it cannot end or change in between)
        assert host is not None
        _leave_task(loop, host)
        self._entered = False
        if set_aside is not None:
            _enter_task(loop, set_aside)

    def step(self, coro: Coroutine[Any, Any, Any], timer: Timer) -> object:
        """Step ``coro`` once, in a context of its own where ``current_timer`` is ``timer``,
        with the eager host as the current task (entered here if the caller has not:
        a run started outside a wake-up, e.g. a run that waited for an earlier one's end).

        :returns: :data:`COMPLETED` if it returned (its result: :meth:`result`, before the
            next step), else what it yielded: it suspended, and :meth:`resume` must follow
        :raises: what the coroutine raised
        """
        if not self._entered:
            set_aside = self.enter()
            try:
                return self.step(coro, timer)
            finally:
                self.leave(set_aside)
        driver = self._driver
        context = _copy_context()
        self._box[1] = timer  # (the driver sets current_timer to it, in the context)
        try:
            out = context.run(self._send, coro)
        except BaseException:
            self._box[1] = None  # (if the driver did not start: not a coroutine)
            if driver is self._driver:
                self._renew()  # (the driver ended with the coroutine)
            raise
        if out is not COMPLETED:  # suspended: the driver is the coroutine's now
            self._suspended = driver
            self._context = context
            self._renew()
        return out

    def _renew(self) -> None:
        """A new driver: the last one ended, or goes on with a coroutine that suspended. A spare
        one if there is one: a driver whose coroutine (a run that suspended) returned in its
        task, kept for this (one generator less to make, and for the garbage collector to
        follow, per run that suspends; at most :data:`SPARE_DRIVERS`)."""
        spare = self._spare
        self._driver = spare.pop() if spare else _new_driver(self._box)
        self._send = self._driver.send

    def result(self) -> Any:
        """The result of the coroutine that returned in the last step of a driver, taken."""
        box = self._box
        result, box[0] = box[0], None
        return result

    def resume(self, yielded: object, run: Any) -> None:
        """Run the rest of the coroutine that suspended in the last :meth:`step` (which returned
        ``yielded``) as a task of the loop, in its context; ``end(run, ...)`` hears how it ended.
        The task's coroutine is :func:`_rest`, stepped here once (the pre-step); the task leaves
        ``tasks`` in its last step."""
        driver, context = self._suspended, self._context
        assert driver is not None, "resume() without a step that suspended"
        self._suspended = self._context = None
        rest = _rest(_resumed(yielded, driver, self), self, run)
        rest.send(None)  # (the pre-step: see _rest)
        self._tasks.add(self._loop.create_task(rest, context=context))

    def _ended(self, run: Any, result: object, exc: BaseException | None) -> None:
        """The rest of ``run`` ended, in its task's last step (see :func:`_rest`)."""
        self._tasks.discard(_current_task(self._loop))  # (that task)
        self._end(run, result, exc)

    def close(self) -> None:
        """The scheduler stopped: end the host."""
        self._spare.clear()
        if self._host is not None:
            self._host.cancel()
            self._host = None


async def _wait_forever() -> None:
    await asyncio.get_running_loop().create_future()
