"""The service that runs a scheduler's timer processes: ``attach(scheduler, proc)``.

Ground rules:

* A scheduler has at most one hub (the :class:`~aiotimer.Service` named
  ``"aiotimer.process"``), holding every :class:`TimerProcess` attached to it; its stats are a
  :class:`ProcessesStats` in ``scheduler.stats().services["aiotimer.process"]``: each
  worker's typed :class:`WorkerStats`, by process name (``as_dict()``:
  ``{"workers": {process name: [worker stats dict, ...]}}``).
* ``scheduler.start()`` checks every spec whole (a ``TypeError`` naming the timer, before any
  process starts), starts all workers at once and returns when each said it is ready; if one
  cannot start, the others are killed and ``start()`` raises its :class:`WorkerStartError`.
* ``scheduler.stop(grace_s)`` stops every worker concurrently with that grace period (see the
  supervisor's escalation). Timer processes are attached while the scheduler is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import anyio
from anyio.abc import TaskStatus

from ._handle import WorkerStats
from ._inline import InlineRunner
from ._supervisor import ProcessRunner
from ._timer_process import TimerProcess

if TYPE_CHECKING:
    from .._scheduler import Scheduler

__all__ = ["HUB_NAME", "ProcessHub", "ProcessesStats", "attach"]

HUB_NAME: Final = "aiotimer.process"


def attach(scheduler: Scheduler, process: TimerProcess) -> None:
    """Run ``process``'s workers with ``scheduler``: started by its ``start()``, stopped by its
    ``stop()`` (what ``Scheduler.add_process`` does).

    :raises TypeError: ``process`` is not a :class:`TimerProcess`
    :raises ValueError: a timer process of that name is already attached, or ``process`` is
        attached to another scheduler
    :raises RuntimeError: the scheduler is not stopped
    """
    if not isinstance(process, TimerProcess):
        raise TypeError(
            f"scheduler {scheduler.name!r}: add_process() takes a TimerProcess, got "
            f"{type(process).__name__} {process!r}"
        )
    hub = scheduler.services.get(HUB_NAME)
    if hub is None:
        hub = ProcessHub(scheduler)
        scheduler.add_service(hub)
    elif not isinstance(hub, ProcessHub):
        raise ValueError(f"scheduler {scheduler.name!r}: service {HUB_NAME!r} is not a ProcessHub")
    hub.add(process)


@final
class ProcessHub:
    """The :class:`~aiotimer.Service` running the timer processes of one scheduler."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._processes: dict[str, TimerProcess] = {}
        self._runners: list[ProcessRunner | InlineRunner] = []
        self._serving = False

    @property
    def name(self) -> str:
        return HUB_NAME

    @property
    def processes(self) -> dict[str, TimerProcess]:
        return dict(self._processes)

    def __repr__(self) -> str:
        return f"<ProcessHub of {self._scheduler.name!r} processes={list(self._processes)}>"

    def add(self, process: TimerProcess) -> None:
        owner = f"scheduler {self._scheduler.name!r}"
        if self._serving or self._scheduler.running:
            raise RuntimeError(f"{owner}: add timer process {process.name!r} before start()")
        if process.scheduler is not None:
            raise ValueError(
                f"{owner}: timer process {process.name!r} is already attached to scheduler "
                f"{process.scheduler.name!r}"
            )
        if process.name in self._processes:
            raise ValueError(f"{owner}: a timer process named {process.name!r} is already attached")
        self._processes[process.name] = process
        process._scheduler = self._scheduler

    async def serve(self, scheduler: Scheduler, *, task_status: TaskStatus[None]) -> None:
        processes = list(self._processes.values())
        payloads = [(proc, proc._payload()) for proc in processes]  # raises before any start
        failures: list[BaseException] = []
        all_started = anyio.Event()
        waiting = sum(len(proc.workers) for proc in processes)

        def on_first(error: BaseException | None) -> None:
            nonlocal waiting
            if error is not None:
                failures.append(error)
                all_started.set()
                return
            waiting -= 1
            if waiting == 0:
                all_started.set()

        self._runners = []
        for proc, payload in payloads:
            for worker in proc.workers:
                runner: ProcessRunner | InlineRunner = (
                    InlineRunner(worker, proc, payload, scheduler.clock, on_first)
                    if proc.inline
                    else ProcessRunner(worker, proc, payload, on_first)
                )
                worker._attach(runner)
                self._runners.append(runner)
        if waiting == 0:
            all_started.set()
        self._serving = True
        for proc in processes:
            proc._running = True
        try:
            async with anyio.create_task_group() as tg:
                for proc in processes:
                    tg.start_soon(proc._pump.run)
                for runner in self._runners:
                    tg.start_soon(runner.run)
                await all_started.wait()
                if not failures:
                    task_status.started()
                    await anyio.sleep_forever()
                tg.cancel_scope.cancel()
        finally:
            self._serving = False
            for proc in processes:
                proc._running = False
        raise failures[0]

    async def stop(self, grace_s: float) -> None:
        async with anyio.create_task_group() as tg:
            for runner in self._runners:
                tg.start_soon(runner.stop, grace_s)

    def stats(self) -> ProcessesStats:
        return ProcessesStats({name: tuple(proc.stats()) for name, proc in self._processes.items()})


@final
@dataclass(frozen=True, slots=True)
class ProcessesStats:
    """The timer processes' numbers (``scheduler.stats().services["aiotimer.process"]``):
    each process's workers' :class:`WorkerStats` (:meth:`Worker.stats`), by process name, in
    worker index order. This is the one shape exporters read (``aiotimer.prometheus``, the
    CLI's table)."""

    workers: Mapping[str, tuple[WorkerStats, ...]]

    def as_dict(self) -> dict[str, Any]:
        """``{"workers": {process name: [worker stats dict, ...]}}``."""
        return {
            "workers": {
                name: [worker.as_dict() for worker in workers]
                for name, workers in self.workers.items()
            }
        }
