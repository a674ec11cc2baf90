"""Callbacks and handlers for the timer-process tests.

Worker processes import what they run by module and name, so everything here is module-level.
Inline tests read ``RUNS``; real-process tests learn what happened from messages to the parent.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from typing import Any

import aiotimer
from aiotimer.process import (
    SendBufferFull,
    asend_to_parent,
    current_worker,
    send_to_parent,
)

logger = logging.getLogger("process_targets")

RUNS: list[tuple[str, int, int]] = []
"""Inline runs: (timer name, worker index, clock time in ns when the run started)."""
IMPORTED_BY = os.getpid()
"""The process that imported this module: a fork server that preloaded it, or the worker."""


def record(tick: aiotimer.Tick) -> None:
    RUNS.append((tick.timer.name, current_worker().index, tick.timer.scheduler.clock.now_ns()))


async def record_then_work(tick: aiotimer.Tick) -> None:
    """Record the run, then work ``tick.param`` ms of the scheduler's (virtual) clock."""
    record(tick)
    clock = tick.timer.scheduler.clock
    await clock.sleep_until(clock.now_ns() + tick.param * 1_000_000)


def report_tick(tick: aiotimer.Tick) -> None:
    """Tell the parent a worker timer ran."""
    info = current_worker()
    send_to_parent(("tick", info.index, info.pid, tick.timer.name, time.monotonic_ns()))


def report_tick_once(tick: aiotimer.Tick) -> None:
    info = current_worker()
    if tick.timer.runs == 1:
        send_to_parent(("first", info.index, info.pid, time.monotonic_ns()))


def report_parent(tick: aiotimer.Tick) -> None:
    """At the first run: who the worker is, who forked it, and who imported this module."""
    if tick.timer.runs == 1:
        info = current_worker()
        send_to_parent(("parent", info.index, os.getpid(), os.getppid(), IMPORTED_BY))


def fail(tick: aiotimer.Tick) -> None:
    raise ValueError(f"boom {tick.param}")


def noop() -> None:
    pass


def exit_3() -> None:
    """Die at once, as a crashing worker does."""
    os._exit(3)


def log_warning(tick: aiotimer.Tick) -> None:
    logging.getLogger("mywork").warning("slow disk on run %d", tick.timer.runs)


def echo_to_parent(obj: Any) -> None:
    """``on_parent_message`` handler: commands from the tests."""
    info = current_worker()
    if obj == "ping":
        send_to_parent(("pong", info.index, info.pid))
    elif obj == "hang":
        time.sleep(60)  # blocks the worker's loop: no more heartbeats
    elif obj == "log":
        logger.warning("hello from worker %d", info.index, extra={"colour": "blue"})
    elif obj == "garbage":
        _worker_socket().sendall(b"this is not a frame at all, not even close")
    elif obj == "unknown-kind":
        _worker_socket().sendall(struct.pack("!2sBI", b"\xa7\x1e", 200, 3) + b"abc")
        send_to_parent(("after-unknown", info.index))
    elif obj == "exit":
        os._exit(3)
    elif obj == "eof":  # the pipe from the parent ends, the parent being alive
        _worker_socket().shutdown(socket.SHUT_RD)
    elif obj == "truncate":  # a frame's header announcing 100 bytes, then 10 of them only
        _worker_socket().sendall(struct.pack("!2sBI", b"\xa7\x1e", 8, 100) + bytes(10))
    else:
        send_to_parent(obj)


async def async_echo(obj: Any) -> None:
    send_to_parent(("async", obj))


def _worker_socket() -> Any:
    return _link().channel.sock


async def flood(obj: Any) -> None:
    """``("flood-sync", n[, marker])``: ``send_to_parent`` 1 KB messages until refused (at
    most ``n``), then create the file ``marker`` (the parent may hold its loop until then);
    ``("flood-async", n)``: ``await asend_to_parent`` ``n`` of them. Then report how many were
    sent, what stopped them, and the most bytes seen waiting for the pipe."""
    if not (isinstance(obj, tuple) and obj[0] in ("flood-sync", "flood-async")):
        return
    kind, n, *marker = obj
    from aiotimer.process import _context

    channel: Any = getattr(_context._link("flood"), "channel", None)  # None: inline
    sent, refused, most = 0, None, 0
    for i in range(n):
        try:
            if kind == "flood-sync":
                send_to_parent(("m", i, bytes(1024)))
            else:
                await asend_to_parent(("m", i, bytes(1024)))
        except SendBufferFull as exc:
            refused = type(exc).__name__
            break
        sent += 1
        most = max(most, channel.buffered if channel is not None else 0)
    if marker:
        os.close(os.open(marker[0], os.O_CREAT | os.O_WRONLY))  # a few µs: no thread needed
    await asend_to_parent(("done", kind, sent, refused, most))


def _link() -> Any:
    from aiotimer.process import _context

    return _context._process_wide[0]


def ping_pong(obj: Any) -> None:
    """Benchmark handler: answer at once."""
    send_to_parent(obj)


def not_importable_factory() -> Any:
    def inner() -> None:
        pass

    return inner
