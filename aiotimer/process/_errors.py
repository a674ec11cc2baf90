"""The typed failures of worker processes.

Ground rules: every error names the timer process, the worker index and, when there is one, the
pid and the offending value; a dead worker is a :class:`WorkerCrashed`, never a bare
``EOFError``; a bad frame is a :class:`ProtocolError` that says whether the stream is still
usable (``resync``), so the supervisor knows whether to keep reading or to kill the worker.
"""

from __future__ import annotations

import signal
from typing import final

__all__ = [
    "MessageTooLarge",
    "ProcessError",
    "ProtocolError",
    "SendBufferFull",
    "WorkerCrashed",
    "WorkerStartError",
]


class ProcessError(Exception):
    """Base class of the errors of :mod:`aiotimer.process`."""


@final
class ProtocolError(ProcessError):
    """A frame on a worker's pipe could not be understood.

    :param message: what was wrong, naming the value
    :param resync: ``True`` when the bad frame was skipped and the stream is still in step
        (an unknown message kind, a payload that does not unpickle); ``False`` when the framing
        itself is lost (bad magic, absurd length), so nothing more can be read from that pipe
    """

    def __init__(self, message: str, *, resync: bool) -> None:
        super().__init__(message)
        self.resync = resync


@final
class MessageTooLarge(ProcessError, ValueError):
    """A message does not fit in one frame: refused by the sender, nothing was written.

    :param what: the message's type name
    :param size: its pickled size, in bytes
    :param limit: the largest payload a frame carries (``MAX_PAYLOAD``)
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"cannot send a {what} of {size} bytes (pickled) to/from a worker process: a "
            f"message may be at most {limit} bytes; send a reference (a file path, a key) "
            "instead"
        )


@final
class SendBufferFull(ProcessError):
    """``send_to_parent()`` found the pipe's buffer full (the parent reads slower than the
    worker sends): the message was not sent. ``await asend_to_parent()`` waits for room.

    :param buffered: bytes waiting for the pipe
    :param limit: the most the buffer holds (``MAX_BUFFERED``)
    """

    def __init__(self, buffered: int, limit: int) -> None:
        self.buffered = buffered
        self.limit = limit
        super().__init__(
            f"send_to_parent(): {buffered} bytes are already waiting for the pipe to the "
            f"parent (at most {limit}); the message was not sent: await asend_to_parent() "
            "to wait for room"
        )


@final
class WorkerCrashed(ProcessError):
    """A worker process ended without being asked to.

    :param name: the timer process's name
    :param index: the worker's index, ``0 .. workers - 1``
    :param pid: its pid, ``None`` if it never started
    :param exitcode: its exit code; ``-N`` when killed by signal ``N``; ``None`` if unknown
    :param reason: why, when the supervisor knows better than the exit code (a worker it killed
        because it hung or garbled its pipe)
    """

    def __init__(
        self, name: str, index: int, pid: int | None, exitcode: int | None, reason: str = ""
    ) -> None:
        self.name = name
        self.index = index
        self.pid = pid
        self.exitcode = exitcode
        self.reason = reason
        super().__init__(name, index, pid, exitcode, reason)

    def __str__(self) -> str:
        who = f"worker {self.name!r}[{self.index}] (pid {self.pid})"
        how = describe_exit(self.exitcode)
        return f"{who} {self.reason}; it {how}" if self.reason else f"{who} {how}"

    def __repr__(self) -> str:
        return (
            f"WorkerCrashed(name={self.name!r}, index={self.index}, pid={self.pid}, "
            f"exitcode={self.exitcode}, reason={self.reason!r})"
        )


@final
class WorkerStartError(ProcessError):
    """A worker did not become ready: ``scheduler.start()`` raises it, no worker is left running.

    :param name: the timer process's name
    :param index: the worker's index
    :param reason: what happened, with the child's traceback when it sent one
    """

    def __init__(self, name: str, index: int, reason: str) -> None:
        self.name = name
        self.index = index
        self.reason = reason
        super().__init__(f"worker {name!r}[{index}] did not start: {reason}")


def describe_exit(exitcode: int | None) -> str:
    """``'exited with code 1'``, ``'was killed by SIGKILL'``: for logs and errors."""
    if exitcode is None:
        return "ended (exit code unknown)"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"
