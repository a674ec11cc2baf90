"""A precise sleep for the tick source: a Linux ``timerfd`` armed at an absolute deadline.

Why: an event loop's own timers are coarse. Stock asyncio's epoll selector rounds every timeout
up to a whole millisecond (a 1 ms timer is ~0.6 ms late at the median) and uvloop's libuv
timers are whole milliseconds (they fire up to 1 ms *early*). A ``timerfd`` armed with an
absolute ``CLOCK_MONOTONIC`` deadline expires when the kernel's high-resolution timer says so,
never early, and the loop wakes when the fd becomes readable (~0.1 ms late on a 2-vCPU VM).

Ground rules:

* Linux only, and only for :class:`~aiotimer.MonotonicClock`: ``time.monotonic_ns()`` is
  ``CLOCK_MONOTONIC`` there, the clock the timerfd counts on. A virtual clock keeps the loop
  source (the choice is made when the scheduler is built; see ``resolve_precision``).
* One fd per running scheduler, opened by ``start()`` and closed by ``stop()``.
* ``os.timerfd_create`` is used where Python has it (3.13+), else a small ``ctypes`` binding to
  libc's ``timerfd_create`` / ``timerfd_settime``.
* The fd is waited on with ``anyio.wait_readable``, so it works on asyncio, uvloop and trio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from typing import Final, Literal, final

import anyio

from ._clock import NS_PER_S, Clock, MonotonicClock

__all__ = ["Precision", "TimerFd", "resolve_precision", "timerfd_available"]

Precision = Literal["auto", "loop", "timerfd"]
PRECISIONS: Final = ("auto", "loop", "timerfd")

_CLOCK_MONOTONIC: Final = 1
_TFD_TIMER_ABSTIME: Final = 1
_TFD_NONBLOCK: Final = 0o4000
_TFD_CLOEXEC: Final = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Libc:
    """The two libc calls, bound once (only where ``os`` lacks them)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.create = libc.timerfd_create
        self.create.argtypes = [ctypes.c_int, ctypes.c_int]
        self.create.restype = ctypes.c_int
        self.settime = libc.timerfd_settime
        self.settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        self.settime.restype = ctypes.c_int


_libc: _Libc | None = None


def _binding() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def timerfd_available() -> bool:
    """Whether this platform can create a timerfd (Linux, with os or libc support)."""
    if not sys.platform.startswith("linux"):
        return False
    if hasattr(os, "timerfd_create"):
        return True
    try:
        _binding()
    except (OSError, AttributeError):
        return False
    return True


def resolve_precision(precision: object, clock: Clock, scheduler: str) -> bool:
    """Whether a scheduler with this ``precision`` and ``clock`` uses the timerfd source.

    :raises ValueError: an unknown precision, or ``"timerfd"`` where it cannot work
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"scheduler {scheduler!r}: precision must be one of {PRECISIONS}, got {precision!r}"
        )
    if precision == "loop":
        return False
    usable = isinstance(clock, MonotonicClock) and timerfd_available()
    if precision == "timerfd" and not usable:
        why = (
            "it counts on CLOCK_MONOTONIC, so it needs the MonotonicClock, "
            f"not {type(clock).__name__}"
            if timerfd_available()
            else f"timerfd is Linux-only and unavailable on {sys.platform}"
        )
        raise ValueError(f"scheduler {scheduler!r}: precision='timerfd' cannot work: {why}")
    return usable


@final
class TimerFd:
    """One timerfd: :meth:`sleep_until` arms it at an absolute deadline and waits for it."""

    __slots__ = ("_fd", "_spec")

    def __init__(self) -> None:
        flags = _TFD_NONBLOCK | _TFD_CLOEXEC
        if hasattr(os, "timerfd_create"):
            self._fd: int = os.timerfd_create(_CLOCK_MONOTONIC, flags=flags)
        else:
            fd = _binding().create(_CLOCK_MONOTONIC, flags)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"timerfd_create: {os.strerror(err)}")
            self._fd = fd
        self._spec = _Itimerspec()  # reused: no allocation per arm

    @property
    def fileno(self) -> int:
        return self._fd

    def arm(self, deadline_ns: int) -> None:
        """Expire at ``deadline_ns`` on CLOCK_MONOTONIC (now, if it has passed)."""
        deadline_ns = max(deadline_ns, 1)  # 0 would disarm it
        if hasattr(os, "timerfd_settime_ns"):
            os.timerfd_settime_ns(self._fd, flags=_TFD_TIMER_ABSTIME, initial=deadline_ns)
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, NS_PER_S)
        if _binding().settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    async def sleep_until(self, deadline_ns: int) -> None:
        """Sleep until ``deadline_ns``; never returns before it (the kernel's guarantee)."""
        self.arm(deadline_ns)
        await anyio.wait_readable(self._fd)
        try:
            os.read(self._fd, 8)  # the expiration count: reading clears readability
        except BlockingIOError:
            pass  # a re-arm raced the read: nothing to clear
        except OSError as exc:  # pragma: no cover - only on a closed fd
            if exc.errno != errno.EBADF:
                raise

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
