"""Inline workers: a timer process's workers as schedulers on the parent's loop and clock.

Ground rules: an inline worker runs exactly what a worker process would (the spec after the
same pickle round trip, installed by the same code) on its own :class:`~aiotimer.Scheduler`,
but on the parent's loop and the parent scheduler's clock, so a test drives it with a
:class:`~aiotimer.testing.VirtualClock`. Messages are copied through the real encoder and
decoder, both ways, and delivered by tasks (never synchronously inside the sender's call), as
they would be across a pipe. There is no process: no heartbeat, no crash, no restart.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from .._clock import Clock
from .._scheduler import Scheduler
from .._stats import SchedulerStats
from .._timer import Timer
from ._context import WorkerInfo, bind, unbind
from ._errors import WorkerStartError
from ._handle import Worker, WorkerState
from ._handlers import Handler, HandlerPump
from ._protocol import FrameDecoder, Msg, encode
from ._spec import install
from ._worker import load_payload

if TYPE_CHECKING:
    from ._timer_process import TimerProcess

__all__ = ["InlineRunner"]


def _across_the_pipe(obj: Any) -> Any:
    """What the other side of a pipe would receive for ``obj`` (``TypeError`` if it does not
    pickle)."""
    decoder = FrameDecoder()
    decoder.feed(encode(Msg.USER, obj))
    frame = decoder.next_frame()
    assert frame is not None
    return frame[1]


@final
class InlineRunner:
    """Runs one :class:`Worker` as a scheduler on the parent's loop."""

    mode = "inline"

    def __init__(
        self,
        worker: Worker,
        proc: TimerProcess,
        payload: bytes,
        clock: Clock,
        on_first: Callable[[BaseException | None], None],
    ) -> None:
        self._worker = worker
        self._proc = proc
        self._payload = payload
        self._clock = clock
        self._on_first = on_first
        self._scheduler: Scheduler | None = None
        self._handlers: list[Handler] = []
        self._pump = HandlerPump(f"inline worker {proc.name!r}[{worker.index}]")
        self._stopped: anyio.Event | None = None
        self.info = WorkerInfo(proc.name, worker.index, os.getpid())

    # -- the WorkerLink protocol (the worker's side) -----------------------------------------

    def send_to_parent(self, obj: Any) -> None:
        self._proc._deliver(self.info, _across_the_pipe(obj), defer=True)

    async def asend_to_parent(self, obj: Any) -> None:
        self.send_to_parent(obj)  # no pipe to fill: delivered by a task, as a pipe would
        await anyio.lowlevel.checkpoint()

    # -- the Runner protocol (the parent's side) ----------------------------------------------

    def send(self, obj: Any) -> None:
        self._pump.dispatch(self._handlers, (_across_the_pipe(obj),), defer=True)

    async def drain(self) -> None:
        return None

    def heartbeat_age_s(self) -> float | None:
        return None

    def child_stats(self) -> tuple[SchedulerStats | None, float | None]:
        if self._scheduler is None:
            return None, None
        return self._scheduler.stats(), 0.0

    # -- life ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` or cancellation; report the start to ``on_first``."""
        worker = self._worker
        worker.state = WorkerState.STARTING
        self._stopped = anyio.Event()
        try:
            timers, self._handlers = load_payload(self._payload)
            scheduler = self._scheduler = Scheduler(
                clock=self._clock, name=str(self.info), on_error=self._report_error
            )
            install(scheduler, timers)
        except Exception as exc:
            worker.state = WorkerState.FAILED
            reason = f"{type(exc).__name__}: {exc}"
            self._on_first(WorkerStartError(worker.name, worker.index, reason))
            return
        token = bind(self)  # tasks started below (the scheduler's, the pump) inherit it
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump.run)
                await tg.start(scheduler.serve)
                worker._ready()
                self._on_first(None)
                await self._stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            unbind(token)
            worker.state = WorkerState.STOPPED

    async def stop(self, grace_s: float) -> None:
        self._worker.state = WorkerState.STOPPING
        if self._scheduler is not None:
            await self._scheduler.stop(grace_s)
        if self._stopped is not None:
            self._stopped.set()

    def _report_error(self, timer: Timer, exc: BaseException) -> None:
        self._worker.callback_errors += 1
        self._worker.last_error = {
            "timer": timer.name,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
