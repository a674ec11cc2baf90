"""The message path of real worker processes under faults: a pipe that ends while the parent
lives, a frame cut short, a message too large, a sender faster than its reader.

Real interpreters (marked slow), each test bounded by ``fail_after``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import anyio
import process_targets as pt
import pytest
from test_process_real import FAST, Crashes, Inbox, eventually, no_orphans, running

from aiotimer.process import (
    MessageTooLarge,
    TimerProcess,
    WorkerInfo,
    WorkerState,
    _channel,
    _protocol,
)
from aiotimer.process._worker import EXIT_PIPE_LOST

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
__all__ = ["no_orphans"]  # the autouse fixture: nothing left running after a test


@pytest.fixture
def anyio_backend() -> object:
    return "asyncio"


async def test_an_end_of_file_while_the_parent_lives_is_a_failure_and_restarted() -> None:
    crashes = Crashes()
    inbox = Inbox()
    proc = TimerProcess("eof", on_crash=crashes, **FAST)  # restart="on-failure"
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        worker = proc.workers[0]
        old_pid = worker.pid
        await worker.send("eof")
        crash = await crashes.wait()
        assert (crash.pid, crash.exitcode) == (old_pid, EXIT_PIPE_LOST)
        await eventually(
            lambda: worker.state is WorkerState.RUNNING and worker.pid != old_pid,
            what="the worker restarted",
        )
        await worker.send("ping")
        await inbox.wait_for(lambda _, o: o == ("pong", 0, worker.pid))
        assert worker.restarts == 1


async def test_a_truncated_frame_is_caught_by_the_read_deadline_not_the_heartbeat() -> None:
    crashes = Crashes()
    proc = TimerProcess(
        "cut", on_crash=crashes, heartbeat_s=0.5, heartbeat_timeout_s=30, stats_interval_s=60
    )
    proc.on_parent_message(pt.echo_to_parent)
    async with running(proc):
        worker = proc.workers[0]
        sent_at = time.monotonic()
        await worker.send("truncate")
        crash = await crashes.wait(timeout_s=10)
        took_s = crashes.items[0][0] - sent_at
        assert re.search(
            r"truncated frame: \d+ of 107 bytes arrived, and no more for 1\.0 s", crash.reason
        )
        # the deadline (1 s) plus a heartbeat or two appended to the cut frame; not 30 s
        assert took_s < 5, took_s
        assert worker.protocol_errors == 1


async def test_an_over_limit_message_is_refused_at_once_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox = Inbox()
    proc = TimerProcess("big", **FAST)
    proc.on_parent_message(pt.echo_to_parent)
    proc.on_message(inbox)
    async with running(proc):
        worker = proc.workers[0]
        monkeypatch.setattr(_protocol, "MAX_PAYLOAD", 10_000)  # the parent's encoder
        with pytest.raises(MessageTooLarge, match=r"a bytes of 1\d{4} bytes .* at most 10000"):
            worker.send_nowait(bytes(10_001))
        with pytest.raises(MessageTooLarge):
            await worker.send(bytes(10_001))
        monkeypatch.undo()
        await worker.send("ping")  # the stream is in step: the worker answers
        await inbox.wait_for(lambda _, o: o[0] == "pong")
        assert worker.protocol_errors == 0
        assert worker.state is WorkerState.RUNNING


class Count:
    """Counts the flood's messages as they arrive (``Inbox`` would keep them all).

    :param hold_until: at the first message, block the parent's loop (so it reads nothing
        more) until this file exists: a reader that can keep up with the sender would
        otherwise never let its buffer fill
    """

    def __init__(self, hold_until: Path | None = None) -> None:
        self.received: list[int] = []
        self.done: anyio.Event = anyio.Event()
        self.report: tuple[Any, ...] = ()
        self.hold_until = hold_until

    def __call__(self, info: WorkerInfo, obj: Any) -> None:
        if obj[0] == "m":
            if self.hold_until is not None:
                deadline = time.monotonic() + 20
                while not self.hold_until.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                self.hold_until = None
            self.received.append(obj[1])
        elif obj[0] == "done":
            self.report = obj
            self.done.set()


@pytest.mark.parametrize("n", [20_000])
async def test_asend_to_parent_waits_for_the_pipe_so_the_buffer_stays_bounded(n: int) -> None:
    count = Count()
    proc = TimerProcess("flood", **FAST)
    proc.on_parent_message(pt.flood)
    proc.on_message(count)
    async with running(proc):
        await proc.workers[0].send(("flood-async", n))
        with anyio.fail_after(30):
            await count.done.wait()
    _, _, sent, refused, most = count.report
    assert (sent, refused) == (n, None)
    assert count.received == list(range(n))  # all of them, in order
    assert most <= _channel.HIGH_WATER + 2048  # the high-water mark and one message


async def test_send_to_parent_refuses_when_the_buffer_is_full_and_loses_nothing_accepted(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "refused"
    count = Count(hold_until=marker)
    proc = TimerProcess("flood", **FAST)
    proc.on_parent_message(pt.flood)
    proc.on_message(count)
    async with running(proc):
        # the handler sends without yielding, so the child's loop cannot flush; the parent
        # stops reading at the first message, so the socket fills too: the buffer must fill
        await proc.workers[0].send(("flood-sync", 100_000, str(marker)))
        with anyio.fail_after(30):
            await count.done.wait()
    _, _, sent, refused, most = count.report
    assert refused == "SendBufferFull"
    assert most <= _channel.MAX_BUFFERED
    assert sent * 1024 > _channel.MAX_BUFFERED / 2  # it took messages until it was full
    await eventually(lambda: len(count.received) >= sent, what="every accepted message")
    assert count.received == list(range(sent))
