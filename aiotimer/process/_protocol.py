"""The wire protocol between a parent and its worker processes: framing, kinds, the decoder.

Ground rules:

* A frame is a 7-byte header, ``magic (2 bytes) | kind (1 byte) | payload length (4 bytes, big
  endian)``, then the payload: a pickle, or nothing (a ``None`` payload is sent as length 0, so
  heartbeats cost 7 bytes). Both ends are the same program over a private socketpair, which is
  why pickle is acceptable here; it is never used on a socket anyone else can reach.
* Each side's first frame is a ``HELLO`` carrying :data:`PROTOCOL_VERSION`; a mismatch is a
  :class:`ProtocolError` and the worker is not used.
* The sender never writes what the receiver would refuse: a payload above
  :data:`MAX_PAYLOAD` is a :class:`MessageTooLarge` raised by :func:`encode`, to the caller
  of ``send``, before anything is written.
* The decoder never trusts the stream. A frame of an unknown kind, or whose payload does not
  unpickle, is skipped whole and reported as ``ProtocolError(resync=True)``: the next frame is
  read normally. A bad magic or a length above :data:`MAX_PAYLOAD` means the framing is lost;
  that is ``ProtocolError(resync=False)`` and the decoder refuses everything after it.
"""

from __future__ import annotations

import enum
import pickle
import struct
from typing import Any, Final, final

from ._errors import MessageTooLarge, ProtocolError

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "USER",
    "FrameDecoder",
    "Msg",
    "encode",
    "hello_mismatch",
]

PROTOCOL_VERSION: Final = 2
"""2: STATS carries a typed SchedulerStats (1: its as_dict())."""
MAGIC: Final = b"\xa7\x1e"
HEADER: Final = struct.Struct("!2sBI")
_HEADER_SIZE: Final = HEADER.size
MAX_PAYLOAD: Final = 256 * 1024 * 1024
"""Larger frames are taken for garbage: the stream is out of step."""


class Msg(enum.IntEnum):
    """The kind byte of a frame, and who sends it."""

    HELLO = 1
    """Both ways, first: ``{"version", "pid", ...}``."""
    READY = 2
    """Child: its scheduler runs and its timers are armed."""
    HEARTBEAT = 3
    """Child: still alive (no payload). Any frame counts as a sign of life."""
    STATS = 4
    """Child: its ``scheduler.stats()`` (a typed :class:`~aiotimer.SchedulerStats`),
    periodically and once more when it stops."""
    ERROR = 5
    """Child: a callback failed: ``{"timer", "error", "traceback"}``."""
    LOG = 6
    """Child: a log record, as a dict, re-emitted on the parent's logger of the same name."""
    STOP = 7
    """Parent: stop gracefully: ``{"grace_s"}``."""
    USER = 8
    """Both ways: a user message (any picklable object)."""
    FAILED = 9
    """Child: it cannot start (its timers do not import...): ``{"error", "traceback"}``."""


_KINDS: Final = {int(k): k for k in Msg}  # Msg(n) costs microseconds: a dict lookup does not
USER: Final = Msg.USER
"""``Msg.USER`` for the message paths: a member read through its enum class costs ~0.2 µs on
CPython 3.11 (the enum metaclass has a ``__getattr__``), a module global ~15 ns."""
_PICKLE: Final = pickle.HIGHEST_PROTOCOL


def hello_mismatch(obj: Any, peer: str, me: str) -> ProtocolError | None:
    """The error for a HELLO payload whose protocol version is not ours, else ``None``
    (``peer`` and ``me`` name the two ends in the message)."""
    version = obj.get("version") if isinstance(obj, dict) else obj
    if version == PROTOCOL_VERSION:
        return None
    return ProtocolError(
        f"{peer} speaks protocol version {version!r}, {me} {PROTOCOL_VERSION}", resync=False
    )


def encode(kind: Msg, obj: Any = None) -> bytes:
    """One frame. ``obj`` is pickled (``None`` is sent as an empty payload).

    :raises TypeError: ``obj`` cannot be pickled (naming its type)
    :raises MessageTooLarge: its pickle is above :data:`MAX_PAYLOAD`
    """
    if obj is None:
        return HEADER.pack(MAGIC, kind, 0)
    try:
        payload = pickle.dumps(obj, _PICKLE)
    except Exception as exc:
        raise TypeError(
            f"cannot send a {type(obj).__name__} to/from a worker process: it does not pickle "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if len(payload) > MAX_PAYLOAD:
        raise MessageTooLarge(type(obj).__name__, len(payload), MAX_PAYLOAD)
    return HEADER.pack(MAGIC, kind, len(payload)) + payload


@final
class FrameDecoder:
    """Turns the bytes read from a pipe, in whatever pieces they arrive, into frames."""

    __slots__ = ("_buf", "_lost", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first unread frame in _buf
        self._lost: ProtocolError | None = None

    def feed(self, data: bytes | memoryview) -> None:
        if self._pos:
            # Drop what was consumed: all of it is the common case (a clear, no copy); a long
            # partial frame behind many small ones costs one move of the tail.
            if self._pos == len(self._buf):
                self._buf.clear()
            else:
                del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf) - self._pos

    @property
    def frame_size(self) -> int | None:
        """The size (header included) of the frame in progress, once its header is in."""
        if len(self._buf) - self._pos < _HEADER_SIZE:
            return None
        return _HEADER_SIZE + int(HEADER.unpack_from(self._buf, self._pos)[2])

    def next_frame(self) -> tuple[Msg, Any] | None:
        """The next whole frame as ``(kind, object)``, or ``None`` until more bytes arrive.

        :raises ProtocolError: see the module's ground rules; with ``resync=True`` the bad frame
            was consumed and the next call goes on with the following one
        """
        if self._lost is not None:
            raise self._lost
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < _HEADER_SIZE:
            return None
        magic, kind, length = HEADER.unpack_from(buf, pos)
        if magic != MAGIC or length > MAX_PAYLOAD:
            what = (
                f"bad frame magic {bytes(buf[pos : pos + 2])!r}"
                if magic != MAGIC
                else f"frame length {length} above the maximum {MAX_PAYLOAD}"
            )
            self._lost = ProtocolError(
                f"{what} at stream offset +{pos}: the stream is out of step", resync=False
            )
            raise self._lost
        end = pos + _HEADER_SIZE + length
        if len(buf) < end:
            return None
        self._pos = end
        msg = _KINDS.get(kind)
        if msg is None:
            raise ProtocolError(f"unknown frame kind {kind} ({length} bytes skipped)", resync=True)
        if not length:
            return msg, None
        try:
            # A slice is one copy; for the small frames that dominate it beats a memoryview
            # (which would also pin the buffer against resizing).
            obj = pickle.loads(buf[pos + _HEADER_SIZE : end])
        except Exception as exc:
            raise ProtocolError(
                f"{msg.name} frame of {length} bytes does not unpickle "
                f"({type(exc).__name__}: {exc})",
                resync=True,
            ) from None
        return msg, obj
