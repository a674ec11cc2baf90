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
* It works on asyncio and uvloop (the tick source's callback watches it: :meth:`watch`) and
  trio (:meth:`wait`).
* It is also the tick source's wake-up channel: a timer added with an earlier deadline re-arms
  the fd earlier, so the tick source needs no cancel scope per sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any, Final, Literal, final

import anyio

from ._backend import TRIO, current_backend
from ._clock import NS_PER_S, Clock, MonotonicClock

__all__ = ["Precision", "TimerFd", "resolve_precision", "timerfd_available"]

Precision = Literal["auto", "loop", "timerfd"]
PRECISIONS: Final = ("auto", "loop", "timerfd")

_CLOCK_MONOTONIC: Final = 1
_TFD_TIMER_ABSTIME: Final = 1
_TFD_NONBLOCK: Final = 0o4000
_TFD_CLOEXEC: Final = 0o2000000
_OS_SETTIME: Final[Any] = getattr(os, "timerfd_settime_ns", None)  # 3.13+; else libc (ctypes)
MAX_DEADLINE_NS: Final = 1 << 62
"""The latest deadline ever handed to the kernel (146 years of CLOCK_MONOTONIC): a later one is
armed for this instead (the tick source re-checks its clock on waking), so no value can wrap a
``timespec`` field or make ``timerfd_settime`` fail."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Libc:
    """The two libc calls, bound once (only where ``os`` lacks them)."""

    def __init__(self) -> None:
        # The symbols already loaded into the process (libc among them): no search for the
        # library. ``ctypes.util.find_library`` runs ``ldconfig -p`` in a subprocess, tens of
        # milliseconds at every start of a worker process.
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "timerfd_create"):  # a libc that is not linked in: look it up
            from ctypes.util import find_library

            libc = ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)
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
    """One timerfd, armed at absolute deadlines; readable once the deadline passes.

    On asyncio (and uvloop) the tick source's callback :meth:`watch`-es it for the scheduler's
    run (no reader added and removed per wake-up); on trio each :meth:`wait` is a
    ``wait_readable``.
    """

    __slots__ = ("_fd", "_loop", "_spec", "trio")

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
        self.trio = current_backend() is TRIO
        self._loop: asyncio.AbstractEventLoop | None = None  # whose reader watches the fd

    @property
    def fileno(self) -> int:
        return self._fd

    def arm(self, deadline_ns: int | None) -> None:
        """Expire at ``deadline_ns`` on CLOCK_MONOTONIC (at once if it has passed); ``None``
        disarms it. Either way the count of expiries starts over: the fd is not readable until
        the new deadline passes (as :meth:`clear` would leave it)."""
        # an all-zero it_value disarms; 1 ns is long past: expire at once
        deadline_ns = 0 if deadline_ns is None else min(max(deadline_ns, 1), MAX_DEADLINE_NS)
        if _OS_SETTIME is not None:
            _OS_SETTIME(self._fd, flags=_TFD_TIMER_ABSTIME, initial=deadline_ns)
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, NS_PER_S)
        if _binding().settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    async def wait(self) -> None:
        """On trio: wait until the armed deadline passes (never before: the kernel's
        guarantee)."""
        await anyio.wait_readable(self._fd)
        self.clear()

    def watch(self, callback: Callable[[], object]) -> None:
        """On asyncio: call ``callback`` from the running loop whenever the fd is readable
        (the armed deadline passed), until :meth:`unwatch`; it must :meth:`clear` it."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, callback)

    def unwatch(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)

    def clear(self) -> None:
        """Read the expiration count, so the fd is no longer readable (re-armed since:
        nothing to clear)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)

    def close(self) -> None:
        if self._fd >= 0:
            self.unwatch()
            os.close(self._fd)
            self._fd = -1
