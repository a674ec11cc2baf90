"""The calendar queue on its own: buckets, uniform marks, its count of live entries, and no
compaction under a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import aiotimer
from aiotimer import _queue
from aiotimer._modes import COROUTINE, TAKES_TICK
from aiotimer._queue import _HELD, _NEAR_TICKS, NOT_QUEUED, TickQueue
from aiotimer.testing import VirtualClock


class Entry:
    """What the queue reads of a timer."""

    def __init__(self, interval: int, mode: int = 0) -> None:
        self._interval = interval
        self._mode = mode
        self._due_tick = NOT_QUEUED
        self._grid_tick = NOT_QUEUED
        self._entry_tick = NOT_QUEUED


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


def entries(queue: TickQueue) -> int:
    """The entries in the buckets, marks left out."""
    return sum(t is not _HELD for bucket in queue._buckets.values() for t in bucket)


def park(queue: TickQueue, entry: Entry) -> None:
    """What the grid does to pause a timer, or before it pushes it again (a re-arm)."""
    tick, entry._due_tick = entry._due_tick, NOT_QUEUED
    queue.park(entry, tick)  # type: ignore[arg-type]


def test_a_re_arm_to_later_keeps_the_entry_and_pop_due_moves_it_on() -> None:
    q = TickQueue()
    a = Entry(5)
    push(q, a, 10)
    for later in (20, 30, 25):  # re-armed three times: no new entry
        park(q, a)
        push(q, a, later)
    assert (entries(q), len(q)) == (1, 1)
    assert q._near[10] == 1  # type: ignore[index]  # the bucket is flagged: pop_due searches it
    _, bucket, _ = q.pop_due(10)  # type: ignore[misc]
    assert bucket == [a]  # (the mark is off)
    assert a._due_tick == 25  # stale here (the dispatcher skips it) ...
    q.settle(1)
    q.batch_done()
    assert (q._entries, len(q)) == (1, 1)  # ... moved on to its tick
    assert q.pop_due(24) is None
    assert q.pop_due(25)[1] == [a]  # type: ignore[index]


class Counted(Entry):
    """An entry that counts how often its due tick is read."""

    reads = 0

    @property  # type: ignore[override]
    def _due_tick(self) -> int:
        Counted.reads += 1
        return self._due

    @_due_tick.setter
    def _due_tick(self, tick: int) -> None:
        self._due = tick


def test_prune_looks_at_a_live_head_once_and_leaves_a_bucket_over_its_budget_to_its_pop() -> None:
    """A head bucket found live is not scanned again while it stays the head (a grid woken
    every millisecond by another one must not rescan 2,000 stale entries each time); a dead
    bucket bigger than PRUNE_ENTRIES waits for its own pop, which drops it as before."""
    q = TickQueue()
    for entry in [Entry(1) for _ in range(10_000)]:  # live ones: no compaction in this test
        push(q, entry, 1_000)
    head = [Counted(1) for _ in range(2_000)]
    for entry in head:
        push(q, entry, 10)
    for entry in head[:-1]:  # all moved earlier but the last: stale, and no entry held
        q.discard()
        entry._due_tick = NOT_QUEUED
    Counted.reads = 0
    q.prune()
    assert (q.next_tick(), Counted.reads) == (10, 2_000)  # scanned to its run, kept
    q.prune()
    assert Counted.reads == 2_000  # not again
    assert q.pop_due(10)[1][-1] is head[-1]  # type: ignore[index]
    q.settle(1_999)
    q.batch_done()

    big = [Entry(1) for _ in range(_queue.PRUNE_ENTRIES + 1)]
    for entry in big:
        push(q, entry, 20)
        q.discard()
        entry._due_tick = NOT_QUEUED  # cancelled: the bucket is dead, but too big to look at
    a = Entry(1)
    push(q, a, 30)
    q.prune()
    assert q.next_tick() == 20
    assert q.pop_due(20) is not None
    q.settle(len(big))
    q.batch_done()
    q.prune()
    assert (q.next_tick(), len(q)) == (30, 10_001)


def test_a_re_arm_to_earlier_makes_an_entry_and_a_paused_timer_stays_out() -> None:
    q = TickQueue()
    a, b = Entry(5), Entry(5)
    push(q, a, 10)
    push(q, b, 10)
    park(q, a)
    push(q, a, 5)  # earlier: a new entry, the old one stale
    park(q, b)  # paused, never pushed again
    assert (entries(q), len(q)) == (3, 1)
    assert q.pop_due(5)[1] == [a]  # type: ignore[index]
    q.batch_done()
    _, bucket, _ = q.pop_due(10)  # type: ignore[misc]
    assert all(t._due_tick != 10 for t in bucket)  # both stale: nothing runs, nothing moves
    q.settle(2)
    q.batch_done()
    assert (q._entries, len(q), q.next_tick()) == (0, 0, None)


def test_compaction_keeps_deferred_timers_once_and_drops_parked_ones() -> None:
    q = TickQueue()
    a, b = Entry(5), Entry(5)
    push(q, a, 10)
    push(q, b, 10)
    park(q, a)
    push(q, a, 40)  # deferred at 10
    park(q, b)  # parked at 10
    q._compact()
    assert q._buckets == {10: [_HELD, a]}  # a is deferred: its bucket's flag became a mark
    assert (entries(q), len(q)) == (1, 1)
    assert b._entry_tick == NOT_QUEUED  # its entry is gone: pushed again, it gets a new one
    push(q, b, 20)
    assert entries(q) == 2
    q.pop_due(10)
    q.settle(1)
    q.batch_done()
    assert [q.pop_due(t)[1] for t in (20, 40)] == [[b], [a]]  # type: ignore[index]


def test_a_near_re_arm_to_later_leaves_its_bucket_as_it_is_and_is_moved_on() -> None:
    """A re-arm within 65,536 ticks of the ticks the queue has run through flags the old tick
    outside the buckets (100,000 pending timers' buckets are cold memory): the bucket is not
    touched, and popping it still moves the timer on."""
    q = TickQueue()
    assert q.pop_due(20_000) is None  # nothing was due: the queue has run through 20,000 ticks
    a, b = Entry(5), Entry(5)
    push(q, a, 30_000)
    push(q, b, 30_000)
    before = list(q._buckets[30_000])
    park(q, a)
    push(q, a, 45_000)  # deferred
    park(q, b)  # paused
    assert q._buckets[30_000] == before  # no mark
    assert (entries(q), len(q)) == (2, 1)
    _, bucket, _ = q.pop_due(30_000)  # type: ignore[misc]
    assert (a._due_tick, a._entry_tick) == (45_000, NOT_QUEUED)  # moved on
    q.settle(sum(t._due_tick != 30_000 for t in bucket))
    q.batch_done()
    assert (q._entries, len(q)) == (1, 1)
    assert q.pop_due(45_000)[1] == [a]  # type: ignore[index]


def test_a_far_re_arm_to_later_marks_its_bucket() -> None:
    q = TickQueue()
    assert q.pop_due(20_000) is None
    a = Entry(5)
    push(q, a, 100_000)  # more than 65,536 ticks after those the queue has run through
    park(q, a)
    push(q, a, 200_000)
    assert q._buckets[100_000][0] is _HELD
    q.pop_due(100_000)
    q.settle(1)
    q.batch_done()
    assert q.pop_due(200_000)[1] == [a]  # type: ignore[index]


def test_a_late_bucket_does_not_take_the_flag_of_a_later_tick_of_its_slot() -> None:
    """A bucket pushed at or before the ticks the queue has run through (a clock that stepped,
    say) shares its flag slot with a tick 65,536 later: popping it leaves that tick's flag."""
    q = TickQueue()
    assert q.pop_due(70_000) is None  # nothing due till 70,000: the queue is past it
    a, late = Entry(5), Entry(5)
    push(q, a, 100_000)
    park(q, a)
    push(q, a, 110_000)  # deferred at 100,000: flagged, in the slot of 100,000 - 65,536
    push(q, late, 100_000 - 65_536)
    assert q.pop_due(70_000)[1] == [late]  # type: ignore[index]
    q.batch_done()
    q.pop_due(100_000)  # moves a on
    q.settle(1)
    q.batch_done()
    assert q.pop_due(110_000)[1] == [a]  # type: ignore[index]


@pytest.mark.anyio
async def test_one_shots_re_armed_later_over_and_over_leave_no_garbage(
    virtual_clock: VirtualClock,
) -> None:
    """A SIP stack's timers: re-armed ten times each before they fire, they make no new
    entries, and each still runs once at its last deadline."""
    clock = virtual_clock
    s = aiotimer.Scheduler(clock=clock)
    runs: list[int] = []
    async with s:
        timers = [s.add_once_ms(1_000, lambda: runs.append(clock.now_ns())) for _ in range(500)]
        for _ in range(10):
            await clock.advance_ms(50)
            for t in timers:
                t.reschedule(1_000)
        queue = s._ms.queue
        assert (entries(queue), len(queue)) == (500, 500)
        await clock.advance_ms(1_000)
    assert runs == [1_500 * 1_000_000] * 500


@pytest.mark.anyio
async def test_a_cancelled_one_shot_leaves_its_bucket_at_once_and_is_freed(
    virtual_clock: VirtualClock,
) -> None:
    """SIP's churn: one-shots cancelled and added anew by the thousand. A cancelled one's
    entry leaves its (small) bucket at once, so the queue keeps no dead timer alive (it is freed
    when its holder drops it: no compaction, no garbage collector pass), nothing is counted stale;
    in a big bucket (periodic timers due together) it goes stale, as before. The others still
    run, once each, at their ticks."""
    clock = virtual_clock
    s = aiotimer.Scheduler(clock=clock)
    runs: list[int] = []

    def fire() -> None:
        runs.append(clock.now_ns() // 1_000_000)

    async with s:
        queue = s._ms.queue
        timers = [s.add_once_ms(100 + i % 50, fire) for i in range(400)]  # 8 per bucket
        cancelled = [t for i, t in enumerate(timers) if i // 50 % 2]  # 4 in each bucket
        for timer in cancelled:
            timer.cancel()
        held = {id(t) for b in [*queue._buckets.values(), *(queue._ring or ())] if b for t in b}
        assert not held & set(map(id, cancelled))  # the queue holds none: freed once dropped
        assert (entries(queue), len(queue), queue._stale) == (200, 200, 0)
        big = [s.add_once_ms(300, fire) for _ in range(_queue.REMOVE_FROM + 1)]
        big[0].cancel()
        assert (len(queue), queue._stale) == (200 + len(big) - 1, 1)  # stale in a big bucket
        await clock.advance_ms(400)
    assert sorted(runs) == sorted(
        [100 + i % 50 for i in range(400) if not i // 50 % 2] + [300] * 16
    )


@pytest.mark.anyio
async def test_no_wake_up_for_a_bucket_whose_one_shots_were_all_moved_paused_or_cancelled(
    virtual_clock: VirtualClock,
) -> None:
    """A SIP stack deletes or re-arms most one-shots before they fire, which leaves an entry at
    nearly every millisecond ahead: the tick source does not wake for each. 1,000 one-shots 1 ms
    apart, each then moved to 10 s, cancelled, or paused (and resumed at 4.999 s): the only
    wake-ups before then are those that take dead buckets out, PRUNE_BUCKETS at a time (1,000
    without); every one-shot still runs once, the moved ones at 10 s, the resumed ones (which
    came due while paused) at the next tick."""
    clock = virtual_clock
    s = aiotimer.Scheduler(clock=clock)
    runs: dict[int, list[int]] = {}

    def run(i: int) -> Callable[[], None]:
        return lambda: runs.setdefault(i, []).append(clock.now_ns() // 1_000_000)

    async with s:
        timers = [s.add_once_ms(i + 1, run(i)) for i in range(1_000)]
        for i, timer in enumerate(timers):
            if i % 3 == 0:
                timer.reschedule(10_000)
            elif i % 3 == 1:
                timer.cancel()
            else:
                timer.pause()
        wakeups = s.stats(timers=False).wakeups
        await clock.advance_ms(4_999)
        # (one more: the first add cut the tick source's sleep without a deadline short)
        assert s.stats(timers=False).wakeups - wakeups <= 1 + -(-1_000 // _queue.PRUNE_BUCKETS)
        assert runs == {}
        for timer in timers[2::3]:
            timer.resume()
        await clock.advance_ms(5_001)
    assert runs == {
        **{i: [10_000] for i in range(0, 1_000, 3)},
        **{i: [5_000] for i in range(2, 1_000, 3)},
    }


# -- the queue against a model, ticks that share flag slots included ---------------------------

Op = tuple[str, int, int]
_OFFSETS = (1, 2, 3, 50, 65_535, 65_536, 65_537, 131_072, 131_073, 200_000)


@st.composite
def queue_scripts(draw: st.DrawFn) -> list[Op]:
    """Arms (to now + an offset: offsets 65,536 apart share a flag slot), pauses, cancels,
    steps of time (some far: the ring's span moves on), compactions and prunes of dead buckets
    ahead (one, or all of them), on 8 one-shots."""
    return draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("arm"), st.integers(0, 7), st.sampled_from(_OFFSETS)),
                st.tuples(st.just("pause"), st.integers(0, 7), st.just(0)),
                st.tuples(st.just("cancel"), st.integers(0, 7), st.just(0)),
                st.tuples(st.just("late"), st.integers(0, 7), st.sampled_from(_OFFSETS)),
                st.tuples(st.just("advance"), st.just(0), st.sampled_from((1, 3, 60, 65_536))),
                st.tuples(st.just("compact"), st.just(0), st.just(0)),
                st.tuples(st.just("prune"), st.just(0), st.sampled_from((1, 100))),
            ),
            max_size=120,
        )
    )


@pytest.mark.parametrize("ring_at", [_queue._RING_AT, 1], ids=["dict", "ring"])
@settings(max_examples=300, deadline=None)
@given(script=queue_scripts())
@example(
    script=[
        *(("arm", 0, 50), ("arm", 0, 65_535)),  # deferred at now + 50: flagged
        *(("late", 1, 50), ("advance", 0, 60), ("advance", 0, 65_536)),  # its slot's late tick
    ]
)
@example(script=[("arm", 0, 3), ("arm", 1, 3), ("pause", 1, 0), ("arm", 0, 50), ("compact", 0, 0)])
@example(script=[("arm", 0, 50), ("arm", 1, 3), ("compact", 0, 0), ("advance", 0, 60)])
def test_the_queue_runs_each_armed_one_shot_once_at_its_tick_whatever_shares_its_flag(
    script: list[Op], ring_at: int
) -> None:
    """Each one-shot, however often it was re-armed, paused or pushed late (before ticks the
    queue has run through, as after a clock step), comes out exactly once, at its last tick or
    at the first pop after it, and the live count is exact after every step; with the bucket
    ring made from the first bucket on too ("ring"). Once the dead buckets ahead are pruned,
    the queue's next tick is the first one-shot's."""
    with mock.patch.object(_queue, "_RING_AT", ring_at):
        run_queue_script(script)


def run_queue_script(script: list[Op]) -> None:
    q = TickQueue()
    timers = [Entry(1) for _ in range(8)]
    due: dict[int, int] = {}  # the model: timer -> its tick
    now = 100_000
    assert q.pop_due(now) is None  # the queue has run through the first 100,000 ticks

    def take_out(i: int) -> None:  # what the grid does before a re-arm, or to pause
        timer = timers[i]
        if timer._due_tick != NOT_QUEUED:
            park(q, timer)

    for op, i, value in script:
        if op in ("arm", "late"):
            take_out(i)
            # "late": 65,536 earlier, at or before now if it can be (the slot of an arm's tick)
            tick = now + value if op == "arm" else max(1, now + value - 65_536)
            push(q, timers[i], tick)
            due[i] = tick
        elif op == "pause":
            take_out(i)
            due.pop(i, None)
        elif op == "cancel":  # what the grid does to forget a timer (cancelled, ended)
            timer = timers[i]
            if timer._due_tick != NOT_QUEUED:
                tick, timer._due_tick = timer._due_tick, NOT_QUEUED
                q.remove(timer, tick)  # type: ignore[arg-type]
            due.pop(i, None)
        elif op == "compact":
            q._compact()
        elif op == "prune":
            with mock.patch.object(_queue, "PRUNE_BUCKETS", value):
                q.prune()
            # (100: more than there can be): the head is the first run's tick, unless a run
            # was found there by an earlier prune (it is not looked at again while the head)
            if value == 100 and q.next_tick() != q._live_head:
                assert q.next_tick() == min(due.values(), default=None)
        else:
            now += value
            fired: list[tuple[int, int]] = []
            while (popped := q.pop_due(now)) is not None:
                tick, bucket, _ = popped
                stale = 0
                for timer in bucket:
                    if timer._due_tick != tick:
                        stale += 1
                        continue
                    timer._due_tick = NOT_QUEUED  # a one-shot ran
                    fired.append((timers.index(timer), tick))  # type: ignore[arg-type]
                q.settle(stale)
                q.batch_done()
            expected = sorted((j, t) for j, t in due.items() if t <= now)
            assert sorted(fired) == expected
            for j, _ in expected:
                del due[j]
        assert len(q) == len(due)
    held = [b for b in [*q._buckets.values(), *(q._ring or ())] if b is not None]
    assert sum(map(len, held)) == q._entries  # the count of entries is exact too
    assert all(held)  # and no bucket was left empty


# -- the bucket ring -------------------------------------------------------------------------


def test_a_big_queue_keeps_its_near_buckets_in_a_ring_so_churn_leaves_its_dict_empty() -> None:
    """Past _RING_AT buckets, a bucket less than _NEAR_TICKS ticks ahead goes in a ring of
    slots: a SIP stack's 100,000 one-shots then churn no dict (whose size class jumped by 5 MiB
    at random in the 10-minute churn check). Every one-shot still comes out once, in order."""
    q = TickQueue()
    n = _queue._RING_AT + 500
    entries = [Entry(1) for _ in range(n)]
    for k, e in enumerate(entries):
        push(q, e, 1 + k)  # one bucket each
    assert len(q._buckets) == _queue._RING_AT  # the rest went in the ring, made at the last
    assert q._ring is not None
    now, last = 0, n  # the last pending tick
    fired: list[int] = []
    for _ in range(40):  # 40 rounds: pop what is due, arm as many new ones further on
        now += 250
        while (popped := q.pop_due(now)) is not None:
            tick, bucket, _ = popped
            assert len(bucket) == 1
            assert bucket[0]._due_tick == tick
            bucket[0]._due_tick = NOT_QUEUED
            fired.append(tick)
            q.batch_done()
        for _ in range(250):
            last += 1
            push(q, Entry(1), last)
        assert len(q) == n
    assert fired == list(range(1, now + 1))  # each once, in order
    assert q._buckets == {}  # the first, dict-held ones were popped; since then all in the ring


def test_a_far_bucket_that_comes_near_is_still_the_one_bucket_of_its_tick() -> None:
    """A bucket made while its tick was far stays in the dict; once the tick is near, a push
    for it joins that bucket rather than making a second one in the ring."""
    with mock.patch.object(_queue, "_RING_AT", 1):
        q = TickQueue()
        a, b, c = Entry(1), Entry(1), Entry(1)
        push(q, a, 10)  # the first bucket: in the dict, and the ring is made
        far = 10 + _NEAR_TICKS + 5
        push(q, b, far)  # far: in the dict
        assert q.pop_due(10) is not None  # past is 10 now: far - 10 > the ring's span
        q.batch_done()
        assert q.pop_due(20) is None  # past 20: far is near now
        push(q, c, far)
        assert q._keys == [far]  # one bucket
        popped = q.pop_due(far)
        assert popped is not None
        assert popped[1] == [b, c]


def test_compaction_and_clear_take_the_ring_s_buckets_at_their_own_ticks() -> None:
    with mock.patch.object(_queue, "_RING_AT", 1):
        q = TickQueue()
        assert q.pop_due(100_000) is None  # ring slots are not ticks: tick % _NEAR_TICKS is
        entries = [Entry(1) for _ in range(4000)]
        for k, e in enumerate(entries):
            push(q, e, 100_005 + k)
        for e in entries[::2]:  # cancel half of them, then 100 more: compaction runs when the
            e._due_tick = NOT_QUEUED  # stale ones outnumber the live ones
            q.discard()
        for e in entries[1::2][:100]:
            e._due_tick = NOT_QUEUED
            q.discard()
        assert len(q) == 1900
        held = sum(map(len, q._buckets.values())) + sum(
            len(b) for b in q._ring or () if b is not None
        )
        assert held == q._entries == 1999  # compacted at the 2,001st discard, 99 stale since
        assert sorted(t._due_tick for t in q.clear()) == [100_005 + k for k in range(201, 4000, 2)]
        assert q._ring is None
        assert q._keys == []
