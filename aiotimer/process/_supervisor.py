"""The parent side of one worker process: start it, watch it, restart it, stop it.

Ground rules:

* Processes are started with an explicit multiprocessing context (``spawn`` or ``forkserver``,
  never ``fork``). A ``spawn`` child is started from the event loop's thread: Linux delivers
  the child's parent-death signal when the *thread* that forked it ends, so starting it from a
  pool thread would kill it when that thread retires. (A ``forkserver`` child's parent is the
  fork server, which exits with us, so it is started from a thread: the first start waits for
  the fork server to boot.)
* A dead child is noticed at once: a task waits for its sentinel to become readable (no
  polling). A child that sends nothing (heartbeats included) for ``heartbeat_timeout_s``, or is
  not ready ``start_timeout_s`` after its start, or garbles its pipe, is killed (SIGKILL), which
  the sentinel then reports. After a death the pipe is read to its end, so a child's last
  frames (final stats, the traceback of a failed start) are never lost.
* A death the parent did not ask for is a :class:`WorkerCrashed`: logged, counted, handed to
  ``on_crash``, and restarted per the :class:`RestartPolicy`. The first start is different: a
  worker that dies before its first ``READY`` fails ``scheduler.start()`` instead.
* ``stop(grace_s)`` sends ``STOP``; a child still alive ``grace_s`` (plus a second to exit)
  later gets SIGTERM, and ``term_timeout_s`` after that SIGKILL. Cancellation kills at once.
  Children alive at interpreter exit are killed (they are not daemonic, so that user callbacks
  may start processes of their own).
"""

from __future__ import annotations

import atexit
import collections
import logging
import multiprocessing.util  # noqa: F401  (its exit hook joins children: ours runs first)
import os
import socket
import time
import weakref
from collections.abc import Callable
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.to_thread

from .._stats import SchedulerStats
from ._channel import HIGH_WATER, Channel
from ._errors import ProtocolError, WorkerCrashed, WorkerStartError, describe_exit
from ._handle import Worker, WorkerState
from ._logs import reemit
from ._protocol import PROTOCOL_VERSION, Msg, hello_mismatch
from ._start import start_context, start_forked
from ._worker import WorkerConfig
from ._worker import main as worker_main

if TYPE_CHECKING:
    from ._timer_process import TimerProcess

__all__ = ["ProcessRunner"]

logger = logging.getLogger("aiotimer.process.supervisor")

_EXIT_MARGIN_S: Final = 1.0
"""Time a stopped child gets, beyond the grace period, to send its last stats and exit."""
_EOF_GRACE_S: Final = 1.0
"""Time a child that closed its pipe gets to exit before it is killed."""
_REAP_TIMEOUT_S: Final = 5.0
_USER: Final = Msg.USER

_live: weakref.WeakSet[BaseProcess] = weakref.WeakSet()


def _kill_leftovers() -> None:
    """At interpreter exit: kill the workers nobody stopped (multiprocessing would join them)."""
    for process in list(_live):
        if process.exitcode is None:
            process.kill()
            process.join(1.0)


atexit.register(_kill_leftovers)


async def wait_exit(process: BaseProcess) -> None:
    """Return once ``process`` has ended and been reaped: woken by its sentinel, no polling."""
    await anyio.wait_readable(process.sentinel)
    # The sentinel turns readable when the child's files close, a moment before its exit
    # status can be collected.
    delay_s = 0.0001
    while process.exitcode is None:
        await anyio.sleep(delay_s)
        delay_s = min(2 * delay_s, 0.01)


@final
class ProcessRunner:
    """Runs one :class:`Worker` as a supervised child process."""

    def __init__(
        self,
        worker: Worker,
        proc: TimerProcess,
        payload: bytes,
        on_first: Callable[[BaseException | None], None],
    ) -> None:
        self.mode = proc.context
        self._worker = worker
        self._proc = proc
        self._payload = payload
        self._options = proc._start_options()
        self._on_first = on_first
        self._first = True  # no READY yet from the first process
        self._label = f"worker {proc.name!r}[{worker.index}]"
        self._ctx: SpawnContext | ForkServerContext = start_context(proc)
        self._stopping = False
        self._stop_requested: anyio.Event | None = None
        self._process: BaseProcess | None = None
        self._channel: Channel | None = None
        self._ready: anyio.Event | None = None
        self._exited: anyio.Event | None = None
        self._last_seen = 0.0
        self._killing = False
        self._kill_reason = ""
        self._failure: dict[str, Any] | None = None
        self._child_stats: SchedulerStats | None = None
        self._info = worker.info  # the running process's, handed to message handlers
        self._stats_at: float | None = None

    # -- the Runner protocol ---------------------------------------------------------------

    def send(self, obj: Any) -> None:
        channel = self._channel
        if channel is None or not channel.open:
            raise RuntimeError(f"{self._label} cannot take messages: its pipe is closed")
        channel.send(_USER, obj)

    async def drain(self) -> None:
        channel = self._channel
        if channel is not None:
            await channel.drain(HIGH_WATER)

    def heartbeat_age_s(self) -> float | None:
        if self._process is None or self._worker.state is not WorkerState.RUNNING:
            return None
        return time.monotonic() - self._last_seen

    def child_stats(self) -> tuple[SchedulerStats | None, float | None]:
        age = None if self._stats_at is None else time.monotonic() - self._stats_at
        return self._child_stats, age

    # -- supervision -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the worker, and restart it after each crash, until stopped, given up on, or
        cancelled. Reports the first start's outcome to ``on_first``; never raises."""
        worker = self._worker
        policy = self._proc.restart
        self._stop_requested = anyio.Event()
        recent: collections.deque[float] = collections.deque()  # restart times in the window
        try:
            while not self._stopping:
                crash = await self._run_once()
                if crash is None:
                    break
                if self._first:
                    self._first = False
                    worker.state = WorkerState.FAILED
                    self._on_first(WorkerStartError(worker.name, worker.index, self._why(crash)))
                    return
                self._crashed(crash)
                if not policy.restarts_after(crash.exitcode):
                    worker.state = WorkerState.FAILED if crash.exitcode else WorkerState.STOPPED
                    return
                now = time.monotonic()
                while recent and now - recent[0] > policy.window_s:
                    recent.popleft()
                if len(recent) >= policy.max_restarts:
                    logger.error(
                        "%s: giving up after %d restarts within %g s",
                        self._label,
                        len(recent),
                        policy.window_s,
                    )
                    worker.state = WorkerState.FAILED
                    return
                delay_s = policy.delay_s(len(recent))
                recent.append(now)
                worker.state = WorkerState.RESTARTING
                if delay_s:
                    with anyio.move_on_after(delay_s):
                        await self._stop_requested.wait()
                if self._stop_requested.is_set():  # stop() came during the backoff
                    break
                worker.restarts += 1
                logger.info("%s: restarting (restart %d)", self._label, worker.restarts)
            worker.state = WorkerState.STOPPED
        except Exception as exc:  # a bug here must not take the parent's scheduler down
            logger.critical("%s: supervisor failed; worker abandoned", self._label, exc_info=exc)
            worker.state = WorkerState.FAILED
        finally:
            if self._first:
                self._first = False
                self._on_first(
                    WorkerStartError(worker.name, worker.index, "stopped before it was ready")
                )

    async def _run_once(self) -> WorkerCrashed | None:
        """One process, from start to reaped; its crash, or ``None`` if it was asked to stop."""
        worker = self._worker
        worker.state = WorkerState.STARTING
        self._killing = False
        self._kill_reason = ""
        self._failure = None
        self._ready = anyio.Event()
        exited = self._exited = anyio.Event()
        process, channel = await self._spawn()
        if process is None or channel is None:
            exited.set()
            return (
                None
                if self._stopping
                else WorkerCrashed(worker.name, worker.index, None, None, self._kill_reason)
            )
        try:
            if self._stopping:  # stop() came while it was being started
                self._kill(process, "was stopped while starting")
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, channel, process)
                tg.start_soon(self._watch, process)
                await wait_exit(process)
                tg.cancel_scope.cancel()
            channel.read_available()  # its last words: final stats, a failed start's traceback
        finally:
            if process.exitcode is None:  # cancelled: never leave it behind
                process.kill()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_REAP_TIMEOUT_S):
                    await wait_exit(process)
            channel.close()
            self._channel = None
            self._process = None
            _live.discard(process)
            exited.set()
        exitcode = process.exitcode
        pid = process.pid
        if exitcode is not None:  # else unreaped after SIGKILL (a D-state child): keep it
            process.close()
        if self._stopping:
            return None
        return WorkerCrashed(worker.name, worker.index, pid, exitcode, self._kill_reason)

    async def _spawn(self) -> tuple[BaseProcess | None, Channel | None]:
        worker = self._worker
        proc = self._proc
        options = self._options
        config = WorkerConfig(
            name=proc.name,
            index=worker.index,
            parent_pid=os.getpid(),
            check_parent=proc.context == "spawn",
            payload=self._payload,
            heartbeat_s=options["heartbeat_s"],
            stats_interval_s=options["stats_interval_s"],
            log_level=options["log_level"],
            use_uvloop=options["use_uvloop"],
        )
        parent_sock, child_sock = socket.socketpair()
        process = self._ctx.Process(
            target=worker_main,
            args=(child_sock, config),
            name=f"aiotimer: {proc.name} [{worker.index}]",
        )
        try:
            if proc.context == "forkserver":
                await anyio.to_thread.run_sync(start_forked, process)
            else:
                process.start()
        except Exception as exc:
            parent_sock.close()
            self._kill_reason = f"could not be started ({type(exc).__name__}: {exc})"
            logger.error("%s %s", self._label, self._kill_reason)
            return None, None
        except BaseException:  # cancelled while the fork server was starting it
            parent_sock.close()
            if process.pid is not None:
                process.kill()
                _live.add(process)  # reaped at exit at the latest
            raise
        finally:
            child_sock.close()
        _live.add(process)
        self._process = process
        worker.pid = process.pid
        self._info = worker.info
        channel = self._channel = Channel(
            parent_sock, self._on_frame, self._on_protocol_error, self._label
        )
        channel.send(Msg.HELLO, {"version": PROTOCOL_VERSION, "pid": os.getpid()})
        self._last_seen = time.monotonic()
        return process, channel

    async def _read(self, channel: Channel, process: BaseProcess) -> None:
        await channel.run()  # a stream out of step was reported (and killed) by on_error
        if channel.eof:  # it closed its end, so it is exiting: make sure it does
            await anyio.sleep(_EOF_GRACE_S)
            self._kill(process, "closed its pipe but did not exit")

    async def _watch(self, process: BaseProcess) -> None:
        """The handshake's deadline, then the heartbeat watchdog."""
        proc = self._proc
        assert self._ready is not None
        with anyio.move_on_after(proc.start_timeout_s):
            await self._ready.wait()
        if not self._ready.is_set():
            self._kill(process, f"was not ready {proc.start_timeout_s:g} s after its start")
            return
        timeout_s = proc.heartbeat_timeout_s
        while True:
            delay_s = self._last_seen + timeout_s - time.monotonic()
            if delay_s <= 0 and not self._stopping:  # stopping: stop() escalates by itself
                self._kill(
                    process,
                    f"sent no heartbeat for {timeout_s:g} s (is a callback blocking its loop?)",
                )
                return
            await anyio.sleep(max(delay_s, timeout_s / 10))

    def _kill(self, process: BaseProcess, reason: str) -> None:
        if self._killing or process.exitcode is not None:
            return
        self._killing = True
        self._kill_reason = reason
        logger.warning("%s (pid %s) %s: killing it", self._label, process.pid, reason)
        process.kill()

    def _crashed(self, crash: WorkerCrashed) -> None:
        worker = self._worker
        worker.crashes += 1
        worker.last_crash = str(crash)
        logger.error("%s", crash)
        hook = self._proc.on_crash
        if hook is not None:
            try:
                hook(crash)
            except Exception:
                logger.exception("%s: on_crash hook %r failed", self._label, hook)

    def _why(self, crash: WorkerCrashed) -> str:
        if self._failure is not None:
            return f"{self._failure['error']}\n{self._failure['traceback']}"
        what = self._kill_reason or "ended before it was ready"
        if crash.pid is None:
            return what
        return f"{what}: it {describe_exit(crash.exitcode)} (pid {crash.pid})"

    # -- frames from the child ---------------------------------------------------------------

    def _on_frame(self, kind: Msg, obj: Any) -> None:
        self._last_seen = time.monotonic()  # any frame is a sign of life
        if kind is _USER:  # first: the one kind that comes in floods
            self._proc._deliver(self._info, obj)
            return
        if kind is Msg.HEARTBEAT:
            return
        worker = self._worker
        if kind is Msg.STATS:
            if not isinstance(obj, SchedulerStats):
                self._on_protocol_error(
                    ProtocolError(f"STATS frame carries a {type(obj).__name__}", resync=True)
                )
                return
            self._child_stats = obj
            self._stats_at = self._last_seen
        elif kind is Msg.LOG:
            reemit(obj, self._info)
        elif kind is Msg.ERROR:
            worker.callback_errors += 1
            worker.last_error = obj
        elif kind is Msg.READY:
            self._on_ready()
        elif kind is Msg.HELLO:
            mismatch = hello_mismatch(obj, "the worker", "the parent")
            if mismatch is not None:
                self._on_protocol_error(mismatch)
        elif kind is Msg.FAILED:
            self._failure = obj
            logger.error("%s could not start: %s", self._label, obj.get("error"))
        else:
            self._on_protocol_error(
                ProtocolError(f"unexpected {kind.name} frame from a worker", resync=True)
            )

    def _on_ready(self) -> None:
        assert self._ready is not None
        process = self._process
        if not self._stopping:
            self._worker._ready(process.pid if process is not None else None)
        self._ready.set()
        logger.info("%s ready (pid %s)", self._label, self._worker.pid)
        if self._first:
            self._first = False
            self._on_first(None)

    def _on_protocol_error(self, exc: ProtocolError) -> None:
        self._worker.protocol_errors += 1
        logger.error("%s (pid %s): %s", self._label, self._worker.pid, exc)
        if not exc.resync and self._process is not None:
            self._kill(self._process, f"broke the protocol ({exc})")

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self, grace_s: float) -> None:
        """Ask the worker to stop; escalate to SIGTERM, then SIGKILL. No restart after this."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        process, channel, exited = self._process, self._channel, self._exited
        if process is None or exited is None or exited.is_set():
            return
        self._worker.state = WorkerState.STOPPING
        if channel is not None and channel.open:
            channel.send(Msg.STOP, {"grace_s": grace_s})
        with anyio.move_on_after(grace_s + _EXIT_MARGIN_S):
            await exited.wait()
        if exited.is_set():
            return
        logger.warning(
            "%s (pid %s) still running %g s after stop: SIGTERM",
            self._label,
            process.pid,
            grace_s + _EXIT_MARGIN_S,
        )
        process.terminate()
        with anyio.move_on_after(self._proc.term_timeout_s):
            await exited.wait()
        if exited.is_set():
            return
        logger.warning("%s (pid %s) ignored SIGTERM: SIGKILL", self._label, process.pid)
        process.kill()
        with anyio.move_on_after(_REAP_TIMEOUT_S):
            await exited.wait()
