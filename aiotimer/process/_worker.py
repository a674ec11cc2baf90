"""The child side: what runs in a worker process, from its entry point to its exit.

Ground rules:

* :func:`main` is the process target. Before anything else the child ignores SIGINT (Ctrl-C in
  a terminal reaches the whole process group; the parent handles it and stops the workers),
  asks Linux to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``, a belt to the
  pipe's end of file) and takes its title, ``aiotimer: <name> [i]`` (with ``setproctitle``).
* It says ``HELLO`` (blocking, before any loop exists), then unpickles its timers: a callback
  that does not import is reported to the parent as ``FAILED`` with the traceback, and the
  child exits 1, so ``scheduler.start()`` fails with the reason instead of a bare exit code.
* It runs its own event loop (uvloop where installed) and its own :class:`~aiotimer.Scheduler`,
  says ``READY`` once the timers are armed, then sends a heartbeat every ``heartbeat_s`` and its
  stats every ``stats_interval_s``, from tasks of that loop: a callback that blocks the loop
  stops the heartbeats, which is how the parent tells a hung worker.
* It stops on the parent's ``STOP`` (its scheduler gets the parent's grace period, then the last
  stats are sent) or at once when the pipe reaches end of file: it never outlives its parent.
  An end of file while the parent is still alive is not a stop but a failure (the pipe broke):
  the child exits with :data:`EXIT_PIPE_LOST`, and the parent restarts it per its policy.
* Messages to the parent: ``send_to_parent()`` never blocks and refuses a message
  (``SendBufferFull``) once :data:`~aiotimer.process._channel.MAX_BUFFERED` bytes wait for the
  pipe; ``await asend_to_parent()`` waits while more than ``HIGH_WATER`` bytes do. Either way
  the child's memory stays bounded when the parent reads slower than it sends.
* Every log record at or above the forwarded level goes to the parent (``_logs.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import pickle
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Final

import anyio

from .._scheduler import Scheduler
from .._timer import Timer
from ._channel import HIGH_WATER, Channel
from ._context import WorkerInfo, set_process_link
from ._errors import ProtocolError
from ._handlers import Handler, HandlerPump
from ._logs import ForwardHandler
from ._protocol import PROTOCOL_VERSION, USER, Msg, encode, hello_mismatch
from ._spec import ProcessTimer, decode_timers, install

__all__ = ["WorkerConfig", "load_payload", "main"]

logger = logging.getLogger("aiotimer.process.worker")

_PR_SET_PDEATHSIG: Final = 1
EXIT_PROTOCOL: Final = 3
"""Exit code of a child whose pipe went out of step."""
EXIT_PIPE_LOST: Final = 4
"""Exit code of a child whose pipe reached end of file while its parent was still alive."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a child gets from its parent (pickled by multiprocessing with the process)."""

    name: str
    index: int
    parent_pid: int
    check_parent: bool  # spawn: our parent is the supervisor; forkserver: it is the fork server
    payload: bytes  # (timers, handlers), unpickled by the child so import errors are reported
    heartbeat_s: float
    stats_interval_s: float
    log_level: int
    use_uvloop: bool | None


def load_payload(payload: bytes) -> tuple[list[ProcessTimer], list[Handler]]:
    """The timers and parent-message handlers of a worker, from ``TimerProcess._payload()``."""
    wire, handlers = pickle.loads(payload)
    return decode_timers(wire), handlers


def main(sock: socket.socket, config: WorkerConfig) -> None:
    """The worker process's entry point (``multiprocessing.Process`` target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(config)
    _set_title(f"aiotimer: {config.name} [{config.index}]")
    info = WorkerInfo(config.name, config.index, os.getpid())
    try:
        sock.sendall(
            encode(Msg.HELLO, {"version": PROTOCOL_VERSION, "pid": info.pid, "worker": str(info)})
        )
        timers, handlers = load_payload(config.payload)
    except OSError:
        sys.exit(0)  # the parent is already gone
    except BaseException as exc:
        _send_failed(sock, "its timers could not be loaded", exc)
        sys.exit(1)
    use_uvloop = config.use_uvloop
    if use_uvloop is None:
        use_uvloop = importlib.util.find_spec("uvloop") is not None
    child = _Child(sock, config, info, timers, handlers)
    exitcode = anyio.run(child.serve, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
    sys.exit(exitcode)


def _die_with_parent(config: WorkerConfig) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the pipe's end of file remains
            pass
    if config.check_parent and os.getppid() != config.parent_pid:
        os._exit(0)  # the parent died before prctl could watch it


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (the parent: the pipe's end of file says it may not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (the pid was reused)
        return False
    return True


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def _send_failed(sock: socket.socket, what: str, exc: BaseException) -> None:
    with contextlib.suppress(OSError):  # the parent is gone
        sock.sendall(
            encode(
                Msg.FAILED,
                {
                    "error": f"{what}: {type(exc).__name__}: {exc}",
                    "traceback": "".join(traceback.format_exception(exc)),
                },
            )
        )


class _Child:
    """The worker's life on its own loop."""

    def __init__(
        self,
        sock: socket.socket,
        config: WorkerConfig,
        info: WorkerInfo,
        timers: list[ProcessTimer],
        handlers: list[Handler],
    ) -> None:
        self.config = config
        self.info = info
        self.handlers = handlers
        self.exitcode = 0
        self.grace_s = 0.0
        self.channel = Channel(sock, self._on_frame, self._on_protocol_error, "the parent")
        self.scheduler = Scheduler(name=str(info), on_error=self._report_error)
        install(self.scheduler, timers)
        self.pump = HandlerPump(f"worker {info}")
        self.stop_requested: anyio.Event | None = None

    # -- the WorkerLink protocol (what current_worker() and send_to_parent() use) -------------

    def send_to_parent(self, obj: Any) -> None:
        self.channel.send_bounded(encode(USER, obj))

    async def asend_to_parent(self, obj: Any) -> None:
        data = encode(USER, obj)  # raises before waiting
        await self.channel.drain(HIGH_WATER)
        self.channel.send_threadsafe(data)

    # -- life ---------------------------------------------------------------------------------

    async def serve(self) -> int:
        self.stop_requested = anyio.Event()
        set_process_link(self)
        forward = ForwardHandler(self._forward_log, self.config.log_level)
        root = logging.getLogger()
        saved_handlers, saved_level = root.handlers[:], root.level
        root.handlers[:] = [forward]
        root.setLevel(self.config.log_level)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read)
                tg.start_soon(self.pump.run)
                await tg.start(self.scheduler.serve)
                self.channel.send(Msg.READY)
                self.channel.send(Msg.STATS, self.scheduler.stats())
                tg.start_soon(self._heartbeats)
                tg.start_soon(self._stats)
                await self.stop_requested.wait()
                await self.scheduler.stop(self.grace_s)
                if self.channel.open:
                    self.channel.send(Msg.STATS, self.scheduler.stats())
                tg.cancel_scope.cancel()
            self.channel.flush_blocking(timeout_s=1.0)
        finally:
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            self.channel.close()
        return self.exitcode

    async def _read(self) -> None:
        await self.channel.run()
        if not self.channel.eof:
            return
        if _alive(self.config.parent_pid):
            logger.error(
                "worker %s: the pipe to the parent (pid %d) reached end of file while the "
                "parent is alive: exiting with code %d to be restarted",
                self.info,
                self.config.parent_pid,
                EXIT_PIPE_LOST,
            )
            self.exitcode = EXIT_PIPE_LOST
        self._stop(0.0)  # the parent is gone, or cannot hear us: stop now, no grace

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.config.heartbeat_s)
            self.channel.send(Msg.HEARTBEAT)

    async def _stats(self) -> None:
        while True:
            await anyio.sleep(self.config.stats_interval_s)
            self.channel.send(Msg.STATS, self.scheduler.stats())

    def _stop(self, grace_s: float) -> None:
        assert self.stop_requested is not None
        if not self.stop_requested.is_set():
            self.grace_s = grace_s
            self.stop_requested.set()

    # -- frames from the parent ------------------------------------------------------------------

    def _on_frame(self, kind: Msg, obj: Any) -> None:
        if kind is USER:
            self.pump.dispatch(self.handlers, (obj,), defer=False)
        elif kind is Msg.STOP:
            self._stop(float(obj["grace_s"]))
        elif kind is Msg.HELLO:
            mismatch = hello_mismatch(obj, "the parent", "this worker")
            if mismatch is not None:
                self._on_protocol_error(mismatch)
        else:
            self._on_protocol_error(
                ProtocolError(f"unexpected {kind.name} frame from the parent", resync=True)
            )

    def _on_protocol_error(self, exc: ProtocolError) -> None:
        logger.error("worker %s: %s", self.info, exc)
        if not exc.resync:
            self.exitcode = EXIT_PROTOCOL
            self._stop(0.0)

    # -- reports to the parent -----------------------------------------------------------------

    def _report_error(self, timer: Timer, exc: BaseException) -> None:
        self.channel.send(
            Msg.ERROR,
            {
                "timer": timer.name,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )

    def _forward_log(self, record: dict[str, Any]) -> None:
        # Bounded like send_to_parent: a log flood the parent cannot keep up with loses records
        # (SendBufferFull, swallowed by the handler) instead of the child's memory.
        self.channel.send_bounded(encode(Msg.LOG, record))
