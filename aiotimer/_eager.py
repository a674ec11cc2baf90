"""Eager coroutine runs on asyncio: a run starts at its grid point, in the dispatch of its batch,
and becomes a task only if it suspends (what Python 3.12's eager tasks do, on 3.11 too).

Why: most timer coroutines do a little work and return, or await something that is ready. A
task for each run costs ~5 µs (the Task, a ``call_soon``, a loop iteration); stepping the
coroutine once costs a fraction of that, and a run that completes in that step needs nothing
more.

How: :func:`start_eager` steps the coroutine with ``send(None)`` in a copy of the caller's
context. If it returns, the run is over. If it yields (it awaits a future that is not done), a
Task takes over through :class:`_Resumed`, a small object implementing the coroutine protocol
whose first ``send`` hands the Task what the coroutine yielded (the future it waits for), and
every later ``send``/``throw``/``close`` goes to the coroutine itself. The Task then runs it as
any other: cancellation, context variables, exceptions.

Ground rules (the visible differences from a task run, documented in the README):

* Code before the first suspension runs before the next timer of the batch (synchronously).
* Before its first suspension, the run's current task is the scheduler's *eager host*: a task
  that only waits, made for this, so that anyio and sniffio see a task and nothing the
  coroutine does binds to the scheduler's own task. The dispatcher makes the host current for
  a whole wake-up (:meth:`EagerRunner.enter`: the tick source's task is set aside with
  ``asyncio.tasks._enter_task`` / ``_leave_task``, stable since 3.7), which also saves a
  swap per run (~0.2 µs of the ~1.5 µs an eager run costs); so sync callbacks see the host
  too. What binds to the current task (an anyio cancel scope, ``asyncio.timeout``) must
  therefore be entered after the first ``await``, or the timer registered with
  ``eager=False`` (an anyio cancel scope left in another task fails loudly). Use
  ``timeout_s=`` for a run's timeout: such runs are tasks.
* Only asyncio (and uvloop). On trio runs stay tasks.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import collections.abc
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final, final

from ._timer import Timer, current_timer

__all__ = ["EagerRunner", "RunEnd"]

_NOTHING: Final = object()
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


@final
class _Resumed(collections.abc.Coroutine[Any, Any, Any]):
    """A coroutine stepped once already, handed to a Task: its first ``send`` returns what the
    coroutine yielded in that step; when the coroutine ends, the runner's ``end`` hears how, in
    the Task's last step (synchronously: what comes next for the timer is decided then, as for
    a task run), and the Task leaves the runs' set there (no done callback: one loop callback
    less per run). Each run in flight holds this object and its ``run``, nothing else of ours
    (every object alive across a suspension is work for the garbage collector)."""

    __slots__ = ("_coro", "_first", "_run", "_runner", "_task")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], first: object, runner: EagerRunner, run: Any
    ) -> None:
        self._coro = coro
        self._first = first
        self._runner = runner
        self._run = run
        self._task: asyncio.Future[Any] | None = None  # set once the Task is made

    def send(self, value: Any = None) -> Any:
        first = self._first
        if first is not _NOTHING:
            self._first = _NOTHING
            return first
        try:
            return self._coro.send(value)
        except StopIteration as done:
            self._ended(done.value, None)
            raise
        except Exception as exc:
            self._ended(None, exc)  # reported there: the task itself ends normally
            raise StopIteration from None
        except BaseException as exc:
            self._ended(None, exc)
            raise

    __next__ = send  # (what a C Task calls to step a non-coroutine: one frame, not two)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = _NOTHING  # (cancelled before the Task's first step: the coroutine takes it)
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)  # pragma: no cover (the old signature)
        except StopIteration as done:
            self._ended(done.value, None)
            raise
        except Exception as exc:
            self._ended(None, exc)
            raise StopIteration from None
        except BaseException as exc:
            self._ended(None, exc)
            raise

    def _ended(self, result: object, exc: BaseException | None) -> None:
        task, self._task = self._task, None  # (the Task holds this object: no cycle left)
        runner = self._runner
        runner._tasks.discard(task)
        runner._end(self._run, result, exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        return self  # type: ignore[return-value]  # (an iterator with send and throw)


@final
class EagerRunner:
    """Starts eager runs on one loop, with its eager host; tracks the runs that became tasks in
    ``tasks`` (the dispatcher's: cancelled at stop); ``end`` hears how each of those ended."""

    __slots__ = ("_end", "_host", "_loop", "_tasks")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Future[Any]], end: RunEnd
    ) -> None:
        self._loop = loop
        self._tasks = tasks
        self._end = end
        self._host: asyncio.Task[None] | None = None

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
        return current

    def leave(self, set_aside: asyncio.Task[Any] | None) -> None:
        """Undo :meth:`enter`, which returned ``set_aside``."""
        loop = self._loop
        host = _current_task(loop)  # the host entered (it cannot end or change in between)
        assert host is not None
        _leave_task(loop, host)
        if set_aside is not None:
            _enter_task(loop, set_aside)

    def step(self, coro: Coroutine[Any, Any, Any], timer: Timer) -> tuple[bool, Any, Any]:
        """Step ``coro`` once, in a context of its own where ``current_timer`` is ``timer``,
        with the eager host as the current task (entered here if the caller has not:
        a run started outside a wake-up, e.g. a run that waited for an earlier one's end).

        :returns: ``(True, its result, context)`` if it returned, ``(False, what it yielded,
            context)`` if it suspended (then :meth:`resume` the rest in that context)
        :raises: what the coroutine raised
        """
        host = self._host
        if host is None or _current_task(self._loop) is not host:
            set_aside = self.enter()
            try:
                return self.step(coro, timer)
            finally:
                self.leave(set_aside)
        context = contextvars.copy_context()
        context.run(current_timer.set, timer)
        try:
            yielded = context.run(coro.send, None)
        except StopIteration as done:
            return True, done.value, context
        return False, yielded, context

    def resume(
        self, coro: Coroutine[Any, Any, Any], yielded: object, context: Any, run: Any
    ) -> None:
        """Run the rest of ``coro`` (stepped once by :meth:`step`, which returned ``yielded``
        and ``context``) as a task of the loop in that context; ``end(run, ...)`` hears how it
        ended.
        The task runs the coroutine itself, through :class:`_Resumed`: no wrapper coroutine,
        one frame of ours at each of its steps; it leaves ``tasks`` in its last step."""
        rest = _Resumed(coro, yielded, self, run)
        task = rest._task = self._loop.create_task(rest, context=context)
        self._tasks.add(task)

    def close(self) -> None:
        """The scheduler stopped: end the host."""
        if self._host is not None:
            self._host.cancel()
            self._host = None


async def _wait_forever() -> None:
    await asyncio.get_running_loop().create_future()
