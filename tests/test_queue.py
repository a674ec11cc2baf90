"""The calendar queue on its own: buckets, uniform marks, its count of live entries, and no
compaction under a batch."""

from __future__ import annotations

from typing import Any

from aiotimer._modes import COROUTINE, TAKES_TICK
from aiotimer._queue import NOT_QUEUED, TickQueue


class Entry:
    """What the queue reads of a timer."""

    def __init__(self, interval: int, mode: int = 0) -> None:
        self._interval = interval
        self._mode = mode
        self._due_tick = NOT_QUEUED
        self._grid_tick = NOT_QUEUED


def push(queue: TickQueue, entry: Entry, tick: int) -> None:
    entry._due_tick = tick
    queue.push(entry, tick)  # type: ignore[arg-type]


def uniform_bucket(queue: TickQueue, tick: int, interval: int, n: int) -> list[Any]:
    """Put ``n`` entries of ``interval`` back at ``tick`` the way the dispatcher does."""
    entries = [Entry(interval) for _ in range(n)]
    for e in entries:
        e._due_tick = tick
    queue.requeue(tick, entries, interval, stale=0)  # type: ignore[arg-type]
    return entries


def test_a_requeued_bucket_is_uniform_and_pop_due_says_so() -> None:
    q = TickQueue()
    uniform_bucket(q, 10, 5, 3)
    assert len(q) == 3
    tick, bucket, interval = q.pop_due(10)  # type: ignore[misc]
    assert (tick, len(bucket), interval) == (10, 3, 5)
    assert len(q) == 0
    assert q.pop_due(100) is None


def test_a_timer_that_does_not_fit_clears_the_mark() -> None:
    q = TickQueue()
    uniform_bucket(q, 10, 5, 3)
    push(q, Entry(5, TAKES_TICK), 10)  # same interval, a fast mode: still uniform
    assert q.pop_due(10)[2] == 5  # type: ignore[index]
    for misfit in (Entry(7), Entry(5, COROUTINE)):
        uniform_bucket(q, 20, 5, 3)
        push(q, misfit, 20)
        assert q.pop_due(20)[2] == 0  # type: ignore[index]


def test_requeue_onto_a_bucket_merges_and_keeps_the_mark_only_if_it_matches() -> None:
    q = TickQueue()
    uniform_bucket(q, 10, 5, 2)
    uniform_bucket(q, 10, 5, 3)
    _, bucket, interval = q.pop_due(10)  # type: ignore[misc]
    assert (len(bucket), interval) == (5, 5)
    uniform_bucket(q, 10, 5, 2)
    uniform_bucket(q, 10, 7, 3)
    assert q.pop_due(10)[2] == 0  # type: ignore[index]


def test_stale_entries_travel_along_until_they_weigh_then_are_dropped() -> None:
    """The live count stays exact either way: stale entries are counted as such."""
    q = TickQueue()
    live = [Entry(5) for _ in range(100)]
    dead = [Entry(5) for _ in range(5)]
    for e in live:
        e._due_tick = 10
    for e in dead:  # cancelled since they ran: counted stale by the scheduler
        e._due_tick = NOT_QUEUED
        q.discard()
    q.requeue(10, live + dead, 5, stale=5)  # type: ignore[arg-type]  # 5/105: carried along
    assert len(q) == 100
    _, bucket, _ = q.pop_due(10)  # type: ignore[misc]
    assert len(bucket) == 105
    q.settle(5)  # what the dispatcher reports after skipping them
    for e in dead:
        e._due_tick = NOT_QUEUED
        q.discard()
    for e in live:
        e._due_tick = 15
    q.requeue(15, live[:50] + dead, 5, stale=5)  # type: ignore[arg-type]  # 5/55: dropped
    assert len(q) == 50
    _, bucket, _ = q.pop_due(15)  # type: ignore[misc]
    assert len(bucket) == 50


def test_compaction_clears_the_marks() -> None:
    q = TickQueue()
    entries = uniform_bucket(q, 10, 5, 3000)
    for e in entries[:1501]:
        e._due_tick = NOT_QUEUED
        q.discard()  # the 1501st: more than half are stale, it compacts
    assert len(q) == 1499
    _, bucket, interval = q.pop_due(10)  # type: ignore[misc]
    assert (len(bucket), interval) == (1499, 0)


def test_a_push_that_fits_keeps_the_mark_exact() -> None:
    q = TickQueue()
    push(q, Entry(5), 10)  # a new bucket of a fast-mode timer: uniform from the start
    push(q, Entry(5, TAKES_TICK), 10)
    assert q.pop_due(10)[2] == 5  # type: ignore[index]
    push(q, Entry(5, COROUTINE), 20)  # a slow mode never marks its bucket
    push(q, Entry(5), 20)
    assert q.pop_due(20)[2] == 0  # type: ignore[index]


def test_discards_during_a_batch_compact_only_when_the_batch_is_done() -> None:
    """A cancel storm from the callbacks of one batch must not rebuild the buckets under it:
    the count stays exact, the compaction waits for batch_done()."""
    q = TickQueue()
    others = uniform_bucket(q, 20, 5, 3000)
    uniform_bucket(q, 10, 5, 1)
    assert q.pop_due(10) is not None  # a batch begins
    target = q._buckets[20]
    for e in others[:2000]:  # the batch's callback cancels 2000 of the other bucket
        e._due_tick = NOT_QUEUED
        q.discard()
    assert q._buckets[20] is target  # not rebuilt while the batch runs
    assert len(q) == 1000
    q.batch_done()
    assert q._buckets[20] is not target  # compacted now
    assert len(q._buckets[20]) == 1000
    assert len(q) == 1000


def test_clear_returns_each_live_timer_once() -> None:
    q = TickQueue()
    a, b = Entry(5), Entry(5)
    push(q, a, 10)
    a._due_tick = NOT_QUEUED  # paused
    q.discard()
    push(q, a, 10)  # resumed to the same tick: two entries of one timer
    push(q, b, 11)
    b._due_tick = 12  # moved: its entry at 11 is stale
    q.discard()
    push(q, b, 12)
    assert sorted(map(id, q.clear())) == sorted(map(id, (a, b)))
    assert len(q) == 0
