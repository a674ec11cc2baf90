"""One end of a worker's pipe, read and written without ever blocking the event loop.

Ground rules:

* The socket is non-blocking. Reading never goes through ``multiprocessing.Connection.recv``
  (uvloop breaks it on messages split across reads): on asyncio (and uvloop) a reader callback
  (``loop.add_reader``) does one ``recv`` per readiness into a :class:`FrameDecoder` and hands
  each whole frame to ``on_frame`` right there, with no task switch (the round trip benchmark
  depends on it); on trio a task does the same after ``wait_readable``.
* ``on_frame`` runs on the loop and must not block or raise (what it raises is logged).
  Protocol errors go to ``on_error``; after one that cannot be resynchronised nothing more is
  read and :meth:`Channel.run` returns, as it does at end of file.
* A frame that starts and does not finish is not waited for forever: when its bytes stop
  short for :func:`frame_deadline_s` (1 s, plus 1 s per 16 MiB of the frame), the stream is
  out of step (``ProtocolError(resync=False)``, "truncated frame"), whatever the heartbeats
  say.
* Writes go straight to the socket; what does not fit is buffered and flushed when the socket is
  writable again (:meth:`Channel.drain` waits for that). :meth:`send_threadsafe` is for other
  threads. :meth:`send_bounded` refuses (``SendBufferFull``) a message when the buffer already
  holds ``limit`` bytes, counting what other threads handed over and the loop has not written
  yet, so a sender faster than its reader cannot grow it without bound. Writing to a closed
  peer drops the data: the owner learns of the end from the read side (end of file) or the
  process sentinel, not from a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final, final

import anyio

from .._backend import current_backend
from ._errors import ProtocolError, SendBufferFull
from ._protocol import FrameDecoder, Msg, encode

__all__ = ["Channel"]

logger = logging.getLogger("aiotimer.process.channel")

_READ_SIZE: Final = 256 * 1024
HIGH_WATER: Final = 1024 * 1024
"""Buffered bytes above which :meth:`Channel.drain` makes a sender wait."""
MAX_BUFFERED: Final = 16 * 1024 * 1024
"""Buffered bytes from which :meth:`Channel.send_bounded` refuses a message."""
FRAME_DEADLINE_S: Final = 1.0
_FRAME_RATE: Final = 16 * 1024 * 1024  # bytes a second a frame in progress gets on top


def frame_deadline_s(frame_bytes: int | None) -> float:
    """How long a frame of ``frame_bytes`` (``None``: its header is not in yet) may take to
    arrive whole, from its first byte."""
    return FRAME_DEADLINE_S + (frame_bytes or 0) / _FRAME_RATE


@final
class Channel:
    """Framed messages over one end of a socketpair.

    :param sock: the socket; the channel makes it non-blocking and closes it in :meth:`close`
    :param on_frame: ``on_frame(kind, obj)`` for each frame, on the loop
    :param on_error: ``on_error(exc)`` for each :class:`ProtocolError`, on the loop
    :param label: names the other end in logs
    """

    __slots__ = (
        "_call_soon_threadsafe",
        "_closed",
        "_decoder",
        "_done",
        "_drained",
        "_handed_lock",
        "_handed_over",
        "_loop",
        "_loop_thread",
        "_on_error",
        "_on_frame",
        "_partial",
        "_partial_since",
        "_rbuf",
        "_wbuf",
        "_write_wanted",
        "_writer_armed",
        "broken",
        "eof",
        "label",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        on_frame: Callable[[Msg, Any], None],
        on_error: Callable[[ProtocolError], None],
        label: str,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.label = label
        self._on_frame = on_frame
        self._on_error = on_error
        self._decoder = FrameDecoder()
        # recv() of n bytes allocates n bytes first: 256 KiB would be an mmap per read.
        self._rbuf = memoryview(bytearray(_READ_SIZE))
        self._wbuf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._call_soon_threadsafe: Callable[[Callable[[], object]], object] | None = None
        self._done: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._write_wanted: anyio.Event | None = None
        self._writer_armed = False
        self._handed_over = 0  # bytes other threads passed to the loop, not yet written
        self._handed_lock = threading.Lock()
        self._partial_since: float | None = None  # when the frame in progress began
        self._partial: anyio.Event | None = None  # set when one begins (the deadline's task)
        self._closed = False
        self.eof = False
        self.broken: ProtocolError | None = None

    def __repr__(self) -> str:
        return f"<Channel to {self.label} fd={self.sock.fileno()} buffered={len(self._wbuf)}>"

    @property
    def open(self) -> bool:
        """Neither closed, nor at end of file, nor out of step."""
        return not (self._closed or self.eof or self.broken is not None)

    # -- writing ---------------------------------------------------------------------------

    def send(self, kind: Msg, obj: Any = None) -> None:
        """Send one frame (from the loop's thread).

        :raises TypeError: ``obj`` does not pickle
        """
        self.send_raw(encode(kind, obj))

    def send_raw(self, data: bytes) -> None:
        """Send already encoded bytes (from the loop's thread)."""
        if self._closed:
            return
        if self._wbuf:
            self._wbuf += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the peer is gone: the reader or the sentinel will tell
            return
        if sent < len(data):
            self._wbuf += data[sent:]
            self._arm_writer()

    def send_threadsafe(self, data: bytes) -> None:
        """Send encoded bytes from any thread: directly on the loop's thread, else through the
        loop (dropped if the loop is gone)."""
        call = self._call_soon_threadsafe
        if call is None or threading.get_ident() == self._loop_thread:
            self.send_raw(data)
            return
        with self._handed_lock:
            self._handed_over += len(data)

        def write() -> None:
            with self._handed_lock:
                self._handed_over -= len(data)
            self.send_raw(data)

        try:
            call(write)
        except RuntimeError:  # the loop is closed: the worker is going away
            with self._handed_lock:
                self._handed_over -= len(data)

    def send_bounded(self, data: bytes, limit: int = MAX_BUFFERED) -> None:
        """:meth:`send_threadsafe`, unless ``limit`` bytes or more would then wait for the
        socket (a message alone in an empty buffer is always taken, whatever its size).

        :raises SendBufferFull: nothing was sent
        """
        waiting = len(self._wbuf) + self._handed_over
        if waiting and waiting + len(data) > limit:
            raise SendBufferFull(waiting, limit)
        self.send_threadsafe(data)

    @property
    def buffered(self) -> int:
        """Bytes waiting for the socket (other threads' included)."""
        return len(self._wbuf) + self._handed_over

    async def drain(self, high_water: int = 0) -> None:
        """Wait until at most ``high_water`` bytes are buffered, or the channel is closed or
        has stopped reading (nothing more will be flushed then)."""
        while len(self._wbuf) > high_water and self.open and not self._stopped:
            if self._drained is None:
                self._drained = anyio.Event()
            await self._drained.wait()

    def flush_blocking(self, timeout_s: float) -> None:
        """Write out the buffer, blocking up to ``timeout_s`` (a child's last words, after its
        loop has ended)."""
        if self._closed or not self._wbuf:
            return
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(self._wbuf)
        except OSError:
            pass
        finally:
            self._wbuf.clear()

    def _arm_writer(self) -> None:
        if self._writer_armed:
            return
        if self._loop is not None:
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
            self._writer_armed = True
        elif self._write_wanted is not None:  # trio: wake the writer task
            self._write_wanted.set()
            self._writer_armed = True

    def _on_writable(self) -> None:
        """Flush what the socket takes; disarm when the buffer is empty."""
        buf = self._wbuf
        try:
            sent = self.sock.send(buf)
        except BlockingIOError:
            return
        except OSError:
            sent = len(buf)  # the peer is gone: drop the buffer
        del buf[:sent]
        if buf:
            return
        if self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())
        self._writer_armed = False
        self._wake_drainers()

    @property
    def _stopped(self) -> bool:
        """:meth:`run` has ended (or was never needed: closed)."""
        return self._done is not None and self._done.is_set()

    def _wake_drainers(self) -> None:
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    # -- reading ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Read until end of file, a stream out of step, :meth:`close` or cancellation."""
        self._done = anyio.Event()
        self._partial = anyio.Event()
        self._loop_thread = threading.get_ident()
        if current_backend().name == "asyncio":
            loop = self._loop = asyncio.get_running_loop()
            self._call_soon_threadsafe = loop.call_soon_threadsafe
            loop.add_reader(self.sock.fileno(), self._on_readable)
            if self._wbuf:
                self._arm_writer()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._frame_deadlines)
                    await self._done.wait()
                    tg.cancel_scope.cancel()
            finally:
                self._detach()
            return
        import trio

        token = trio.lowlevel.current_trio_token()
        self._call_soon_threadsafe = token.run_sync_soon
        self._write_wanted = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._trio_writer)
                tg.start_soon(self._frame_deadlines)
                with contextlib.suppress(anyio.ClosedResourceError):  # close() meanwhile
                    while self.open:
                        await anyio.wait_readable(self.sock)
                        self._on_readable()
                tg.cancel_scope.cancel()
        finally:
            self._detach()

    async def _frame_deadlines(self) -> None:
        """Declare the stream out of step when a frame in progress misses its deadline. Wakes
        only while a frame is in progress (never, for a stream of whole small frames)."""
        while self.open:
            since = self._partial_since
            if since is None:
                assert self._partial is not None
                await self._partial.wait()
                self._partial = anyio.Event()
                continue
            deadline_s = frame_deadline_s(self._decoder.frame_size)
            late_s = time.monotonic() - since - deadline_s
            if late_s >= 0:
                self._lose(
                    ProtocolError(
                        f"truncated frame: {self._decoder.pending} of "
                        f"{self._decoder.frame_size or '?'} bytes arrived, and no more for "
                        f"{deadline_s:.1f} s",
                        resync=False,
                    )
                )
                return
            await anyio.sleep(-late_s)

    async def _trio_writer(self) -> None:
        while True:
            if not self._wbuf:
                assert self._write_wanted is not None
                await self._write_wanted.wait()
                self._write_wanted = anyio.Event()
            while self._wbuf and not self._closed:
                try:
                    await anyio.wait_writable(self.sock)
                except anyio.ClosedResourceError:  # close() meanwhile
                    return
                self._on_writable()
            self._writer_armed = False

    def _detach(self) -> None:
        loop = self._loop
        if loop is not None and not self._closed:
            loop.remove_reader(self.sock.fileno())
            if self._writer_armed:
                loop.remove_writer(self.sock.fileno())
        self._loop = None
        self._writer_armed = False
        self._loop_thread = None
        self._call_soon_threadsafe = None
        self._wake_drainers()

    def _on_readable(self) -> None:
        """One read (level-triggered: called again while data remains), then the frames."""
        if self._read_once():
            self._dispatch()

    def read_available(self) -> None:
        """Read and dispatch whatever is in the socket now (the last frames of a dead child)."""
        while self.open and self._read_once():
            self._dispatch()

    def _read_once(self) -> bool:
        """Feed the decoder one read's worth; ``False`` when nothing was read."""
        try:
            n = self.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # reset by a dying peer: the same as end of file
            n = 0
        if not n:
            self.eof = True
            self._finish()
            return False
        self._decoder.feed(self._rbuf[:n])
        return True

    def _dispatch(self) -> None:
        decoder = self._decoder
        on_frame = self._on_frame
        whole = False  # a frame completed: whatever is left began with this read
        while not self._closed:
            try:
                frame = decoder.next_frame()
            except ProtocolError as exc:
                if exc.resync:
                    self._report(exc)
                    whole = True
                    continue
                self._lose(exc)
                return
            if frame is None:
                break
            whole = True
            try:
                on_frame(*frame)
            except Exception:
                logger.exception("%s: handling a %s frame failed", self.label, frame[0].name)
        # One comparison per read on the hot path; the clock is read only when a frame stays
        # split across reads.
        if not decoder.pending:
            self._partial_since = None
        elif whole or self._partial_since is None:
            self._partial_since = time.monotonic()
            if self._partial is not None:
                self._partial.set()

    def _lose(self, exc: ProtocolError) -> None:
        """The stream is out of step: report it, read no more."""
        self._report(exc)
        self.broken = exc
        self._finish()

    def _report(self, exc: ProtocolError) -> None:
        try:
            self._on_error(exc)
        except Exception:
            logger.exception("%s: the protocol error handler failed", self.label)

    def _finish(self) -> None:
        if self._done is not None:
            self._done.set()
        if self._partial is not None:
            self._partial.set()  # the deadline task sees the channel closed
        self._wake_drainers()

    def close(self) -> None:
        """Stop reading and writing and close the socket. Idempotent."""
        if self._closed:
            return
        if self._write_wanted is not None and self._loop_thread is not None:
            anyio.notify_closing(self.sock)  # trio: wake tasks waiting on the socket first
        self._detach()
        self._closed = True
        self._finish()
        self._wbuf.clear()
        self.sock.close()
