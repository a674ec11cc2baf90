"""Timers ordered by due tick: the data structure under each :class:`~aiotimer._grid.Grid`.

A :class:`TickQueue` is a calendar queue: a ``dict`` from a due tick to the list of timers due
then (a *bucket*; near ones in a ring once there are many, see below), plus a min-heap of the
ticks that have a bucket. It was chosen for the scale aiotimer is benchmarked at (100,000
periodic 1 s timers, 1,000,000 registered):

* Periodic timers share few distinct due ticks (100,000 timers of 1 s all fall in one or two
  buckets), so the heap stays tiny and a wake-up pops a whole bucket in O(1): every timer due in
  the same tick is dispatched in one wake-up, and re-queuing a fired timer is a list append.
* Adding is O(1) for an existing bucket and O(log b) for a new one (b = distinct due ticks), where
  a heap of timers would pay O(log n) for every one of n timers on every fire.
* A cancelled timer's entry is taken out of its bucket at once when the bucket is small
  (:meth:`~TickQueue.remove`: one-shots, a few per millisecond); elsewhere removal is lazy:
  a cancelled, paused or moved timer stays in its old bucket and is skipped when
  that bucket comes due (its ``_due_tick`` no longer matches the bucket's tick). The queue counts
  such stale entries and compacts itself when they outnumber the live ones, so churn (add/cancel
  in a loop) cannot grow memory without bound; compaction is O(entries) and runs at most once
  per ``entries / 2`` discards, so its cost is amortised O(1) per discard.
* **A move to later keeps the entry** (as Go's runtime timers do): a paused or re-armed timer is
  *parked* (:meth:`park`): its entry stays in its bucket, counted stale, and the timer remembers
  where (``timer._entry_tick``, the one field of a timer the queue writes). Pushed again for a
  later tick before that bucket comes due, it is *deferred*: the old entry holds it, counted
  live again, and no new entry is made. When that bucket comes due, :meth:`pop_due` moves each
  deferred timer on to its real tick (the entry left behind is stale), so the dispatcher never
  sees one. A transaction's timer re-armed ten times before it fires costs one move, not ten
  entries, and leaves no garbage behind. A bucket that holds parked or deferred entries is
  *flagged*, so that :meth:`pop_due` searches only those: near ones (less than 65,536 ticks
  after ``_past_tick``: 65.5 s of the ms grid) in ``_near``, a ring of byte flags indexed by
  the tick's low bits, so a re-arm touches no bucket (with 100,000 timers pending, the buckets
  are cold memory); farther ones by a mark at the bucket's head (:data:`_HELD`, counted as a
  stale entry). ``_past_tick`` is a tick up to which every bucket has been popped (the latest
  popped, or the ``now_tick`` of a :meth:`pop_due` that found nothing due; 0, the grid's
  origin, at first), so it only grows. Flags cannot collide: a tick is flagged only within
  ``_near``'s span after ``_past_tick``, so a flag still set when its slot's next tick is
  flagged is a leftover (its bucket was compacted away, or never came back) and costs a
  needless search at most; and only a tick after ``_past_tick`` reads its slot when popped
  (a bucket pushed at or before it, late, is never flagged). Compaction turns flags into marks
  and clears ``_near``.
* **Near buckets in a ring, once there are many.** A queue whose dict reaches ``_RING_AT``
  (1,024) buckets makes ``_ring``, a ring of ``_NEAR_TICKS`` bucket slots (a 512 KiB list,
  once; the span of ``_near``, whose flags it does not replace), and puts each new
  bucket less than ``_NEAR_TICKS`` ticks after ``_past_tick`` in slot ``tick % _NEAR_TICKS``,
  the others (far, or late: at or before ``_past_tick``) in the dict, where a bucket stays
  until popped even once its tick is near (so a tick has one bucket: the dict is looked in too
  while it is not empty). Why: SIP one-shots keep ~45,000 distinct ms ticks pending, each new
  one a dict insert and each popped one a delete, and a dict that churns resizes to 3x its
  live keys at each refill: around 43,690 live keys its table went from 2.5 to 5 MiB (indices
  and entries), at random, in the 10-minute churn check; a ring's memory does not move. A
  slot's tick needs no storing: every ring bucket's tick is after ``_past_tick`` (every bucket
  up to it was popped; late ones go to the dict) and less than the span after it (made so,
  and ``_past_tick`` only grows), so a slot holds the bucket of the one tick of that span that
  falls in it.
* **No wake-up for a dead bucket.** Lazy removal leaves buckets that hold no run: every
  entry in them cancelled, paused or moved (SIP's one-shots, mostly deleted or re-armed
  before they fire, leave one at nearly every millisecond a minute ahead). At the end of each
  wake-up the scheduler has the queue take such buckets out from the head (:meth:`prune`,
  a bounded number per wake-up), just as their pops would, so the tick source sleeps until
  a bucket with a run in it. ``_past_tick`` does not move for them.
* A bucket may be known to be *uniform*: every live entry is a fast-mode timer or an eager
  coroutine timer (``LEAN`` in ``_modes``) of one interval, so all of them re-queue to one
  tick. The dispatcher runs such a bucket with a leaner loop and puts the whole list back in
  one step (:meth:`requeue`). :meth:`push` keeps the mark exact: a bucket created by a
  ``LEAN``-mode timer is marked with its interval, any entry that does not fit clears it;
  compaction clears every mark (an unmarked bucket only runs through the general loop).

Ground rules:

* Ticks are integers; the queue never looks at a clock, and it reads a timer's ``_due_tick``,
  ``_mode`` and ``_interval`` but never writes them (the grid does). It owns ``_entry_tick``.
* An entry is live when its timer is deferred there (``_entry_tick == tick``, and a
  ``_due_tick``), or is due at the bucket's tick (``_due_tick == tick``) and deferred nowhere
  (``_entry_tick`` is ``NOT_QUEUED``); every other entry is stale. (A timer deferred from an
  earlier bucket to this tick may have an old, stale entry here that looks due: the
  dispatcher never meets it before the earlier bucket moved the timer on, and compaction
  tells them apart.)
  ``_entry_tick`` only ever names a bucket still to come (one after ``_past_tick``).
* **No compaction under a batch.** Between :meth:`pop_due` and :meth:`batch_done` (a dispatch
  batch, whose callbacks may cancel timers by the thousand), discards are only counted; the
  compaction they call for runs at :meth:`batch_done`. So no list or count the dispatcher relies
  on changes under it, and the live count stays exact.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Final, final

from ._modes import LEAN

if TYPE_CHECKING:
    from ._timer import Timer

__all__ = ["NOT_QUEUED", "TickQueue"]

NOT_QUEUED: Final = -1
"""``Timer._due_tick`` of a timer that is in no bucket (stopped, paused, running, not armed)."""

_COMPACT_MIN_STALE: Final = 1024
_NEAR_TICKS: Final = 1 << 16
"""The span of ticks after ``_past_tick`` whose holding buckets are flagged in ``_near``
(65.5 s of the ms grid), not marked in the bucket; and whose buckets go in ``_ring``, once
there is one."""
_NEAR_MASK: Final = _NEAR_TICKS - 1
_RING_AT: Final = 1024
"""Buckets in ``_buckets`` at which a queue makes its ring (see the module)."""
PRUNE_BUCKETS: Final = 128
PRUNE_ENTRIES: Final = 2048
"""What :meth:`TickQueue.prune` looks at, at most, per call (each wake-up): buckets, and
entries in them; a wake-up never spends long on it (at most 0.2-0.5 ms here: 128 dead buckets
of one entry, or of 16, or one of 2,048), and a bucket taken out early is work its pop would
have done anyway."""
REMOVE_FROM: Final = 16
"""The biggest bucket :meth:`TickQueue.remove` takes an entry out of at once (a bigger one, a
batch of periodic timers, keeps it stale: compaction takes it out, amortised)."""


@final
class _Held:
    """The type of :data:`_HELD`: reads as a stale entry (no timer is due at it)."""

    __slots__ = ("_due_tick", "_entry_tick")

    def __init__(self) -> None:
        self._due_tick = self._entry_tick = NOT_QUEUED


_HELD: Final[Any] = _Held()
"""The mark at the head of a bucket with parked or deferred entries (see the module)."""


@final
class TickQueue:
    """Buckets of timers keyed by due tick."""

    __slots__ = (
        "_buckets",
        "_compact_at",
        "_entries",
        "_firing",
        "_keys",
        "_live_head",
        "_near",
        "_past_tick",
        "_ring",
        "_stale",
        "_uniform",
    )

    def __init__(self) -> None:
        self._buckets: dict[int, list[Timer]] = {}  # the buckets not in _ring
        # near buckets by tick % _NEAR_TICKS, once _buckets was big (see the module)
        self._ring: list[list[Timer] | None] | None = None
        self._keys: list[int] = []  # min-heap of the ticks of all buckets
        self._entries = 0  # entries in all buckets, stale ones included
        self._stale = 0
        self._compact_at = _COMPACT_MIN_STALE  # _stale below this: no compaction to check
        self._uniform: dict[int, int] = {}  # tick -> the interval of its uniform bucket
        self._live_head: int | None = None  # the head tick prune() last found a run at
        # Every bucket up to this tick has been popped: one after it is still to come. (0: a
        # grid counts ticks from its origin; an entry at or before it is never deferred.)
        self._past_tick = 0
        self._near: bytearray | None = None  # near holding buckets, flagged by tick % _NEAR_TICKS
        self._firing = False  # a popped bucket is being dispatched: no compaction

    def __len__(self) -> int:
        """Live entries."""
        return self._entries - self._stale

    def push(self, timer: Timer, tick: int) -> bool:
        """Queue ``timer`` for ``tick`` (the grid has set ``timer._due_tick = tick``): a timer
        that is in no bucket, or parked (then its old entry holds it, if that comes first).

        :returns: whether ``tick`` is new to the queue (only then can it be an earlier deadline
            than the tick source knows of)
        """
        at = timer._entry_tick
        if at != NOT_QUEUED:  # parked (see park)
            if tick > at:  # its entry there comes first: it holds the timer, live again
                self._stale -= 1
                return False
            timer._entry_tick = NOT_QUEUED  # (the entry stays behind, stale)
        self._entries += 1
        bucket = self._bucket(tick)
        if bucket is not None:
            bucket.append(timer)
            uniform = self._uniform
            if uniform:  # unmark the bucket unless the timer fits
                interval = uniform.get(tick)
                if interval is not None and (
                    timer._interval != interval or timer._mode not in LEAN
                ):
                    del uniform[tick]
            return False
        self._add_bucket(tick, [timer])
        if timer._mode in LEAN:
            self._uniform[tick] = timer._interval
        return True

    def requeue(self, tick: int, entries: list[Timer], interval: int, stale: int) -> bool:
        """Put a fired uniform bucket's entries back, due at ``tick``, as one list (or onto the
        bucket already there). ``stale`` of them were skipped in the run: when they weigh, the
        list is filtered first; else they travel along, still counted as stale.

        :returns: whether ``tick`` is new to the queue (see :meth:`push`)
        """
        if stale * 16 > len(entries):
            live = [t for t in entries if t._due_tick == tick or t._entry_tick == tick]
            self.settle(len(entries) - len(live))
            entries = live
            if not entries:
                return False
        self._entries += len(entries)
        bucket = self._bucket(tick)
        if bucket is None:
            self._add_bucket(tick, entries)
            self._uniform[tick] = interval
            return True
        bucket.extend(entries)
        if self._uniform.get(tick) != interval:
            self._uniform.pop(tick, None)
        return False

    def remove(self, timer: Timer, tick: int) -> None:
        """``timer``, queued for ``tick``, is gone for good (cancelled or ended; the grid has set
        its ``_due_tick`` to ``NOT_QUEUED``). Its entry is taken out of its bucket at once when
        that is cheap (a bucket of at most :data:`REMOVE_FROM` entries, not emptied by it), else
        it goes stale (:meth:`discard`).

        Why: SIP's one-shots are mostly cancelled before they fire; each stale entry kept its
        dead timer alive until its tick or a compaction, and compacting 200,000 entries every
        ~10 s (10,000 cancels a second) cost ~20 ms of CPU a second, a fifth of the churn's.
        Taking one entry out of a bucket of a few is a list scan of a few pointers.

        A timer deferred elsewhere (``_entry_tick`` set) keeps its entry there; a bucket being
        dispatched is out of the queue, so its entries go stale (the dispatcher skips them), as
        does the entry of a timer whose bucket is a lean loop's list not put back yet (not found
        at its tick). Any one of a timer's entries may go: they are the same timer, all stale
        once it is gone, so the count of stale ones is exact either way."""
        if timer._entry_tick == NOT_QUEUED:
            bucket = self._bucket(tick)
            if bucket is not None and 1 < len(bucket) <= REMOVE_FROM:
                try:
                    bucket.remove(timer)  # (identity first: a Timer has no __eq__)
                except ValueError:
                    pass  # its entry is in a list out of the queue (see above)
                else:
                    self._entries -= 1
                    return
        self.discard()

    def discard(self) -> None:
        """One queued entry went stale (its timer was cancelled, or ended)."""
        self._stale += 1
        if self._stale >= self._compact_at and not self._firing:
            self._maybe_compact()

    def park(self, timer: Timer, tick: int) -> None:
        """``timer``, queued for ``tick``, is taken out (the grid has set its ``_due_tick`` to
        ``NOT_QUEUED``): paused, or about to be pushed again (a re-arm). Its entry goes stale
        but stays where it is, and :meth:`push` takes it back for a later tick."""
        # (Already parked, or in the batch being dispatched: only stale.)
        if timer._entry_tick == NOT_QUEUED and tick > self._past_tick:
            timer._entry_tick = tick
            near = self._near
            if near is not None and tick - self._past_tick < _NEAR_TICKS:
                near[tick & _NEAR_MASK] = 1  # (no bucket touched: 100,000 of them are cold)
            else:
                self._hold(tick)
        self._stale += 1
        if self._stale >= self._compact_at and not self._firing:
            self._maybe_compact()

    def _hold(self, tick: int) -> None:
        """Make the bucket ``tick`` (after ``_past_tick``) known to hold a parked entry:
        flagged in ``_near`` if near (made here, on first use), else marked."""
        if self._near is None:
            self._near = bytearray(_NEAR_TICKS)
            if tick - self._past_tick < _NEAR_TICKS:
                self._near[tick & _NEAR_MASK] = 1
                return
        bucket = self._bucket(tick)
        if bucket is None:  # (the lean loop's list for tick, not back yet: it joins this)
            self._add_bucket(tick, [_HELD])
            self._entries += 1
            self._stale += 1
        elif bucket[0] is not _HELD:
            bucket.insert(0, _HELD)
            self._entries += 1
            self._stale += 1

    def _bucket(self, tick: int) -> list[Timer] | None:
        """The bucket of ``tick``, if it has one: in the ring if near (see the module), else in
        ``_buckets`` (where a tick far when its bucket was made stays)."""
        ring = self._ring
        if ring is not None and 0 < tick - self._past_tick < _NEAR_TICKS:
            bucket = ring[tick & _NEAR_MASK]
            if bucket is not None or not self._buckets:
                return bucket
        return self._buckets.get(tick)

    def _add_bucket(self, tick: int, bucket: list[Timer]) -> None:
        """Make ``bucket`` the bucket of ``tick``, which has none."""
        ring = self._ring
        if ring is not None and 0 < tick - self._past_tick < _NEAR_TICKS:
            ring[tick & _NEAR_MASK] = bucket
        else:
            buckets = self._buckets
            buckets[tick] = bucket
            if ring is None and len(buckets) >= _RING_AT:
                self._ring = [None] * _NEAR_TICKS
        heapq.heappush(self._keys, tick)

    def _take_all(self) -> list[tuple[int, list[Timer]]]:
        """Take every bucket out, as ``(tick, bucket)`` (the heap of ticks is left to the
        caller). A ring slot's tick is the one tick of the ring's span after ``_past_tick``
        that falls in it; the ring is emptied in place (it is big: no new one each time)."""
        items = list(self._buckets.items())
        self._buckets = {}
        ring = self._ring
        if ring is not None:
            past = self._past_tick
            for slot, bucket in enumerate(ring):
                if bucket is not None:
                    items.append((past + 1 + ((slot - past - 1) & _NEAR_MASK), bucket))
                    ring[slot] = None
        return items

    def next_tick(self) -> int | None:
        keys = self._keys
        return keys[0] if keys else None

    def pop_due(self, now_tick: int) -> tuple[int, list[Timer], int] | None:
        """Remove and return the earliest bucket due at or before ``now_tick``, if any, as
        ``(tick, bucket, interval)``: ``interval`` is that of a uniform bucket, else 0. A batch
        begins: call :meth:`batch_done` once the bucket is dispatched.

        Entries whose timer moved on are still in the returned list: the consumer skips them
        (``timer._due_tick != tick``) and reports how many with :meth:`settle`.
        """
        keys = self._keys
        if not keys or keys[0] > now_tick:
            if now_tick > self._past_tick:  # (grids push only ticks after now)
                self._past_tick = now_tick
            return None
        tick = heapq.heappop(keys)
        self._firing = True
        past = self._past_tick
        if tick > past:
            self._past_tick = tick
        bucket = self._take(tick, past)
        return tick, bucket, self._uniform.pop(tick, 0) if self._uniform else 0

    def prune(self) -> None:
        """Take out, ahead of their time, the first buckets that hold no timer due at their
        tick (only cancelled, paused or moved timers' entries), as their pops would at their
        ticks (a deferred timer goes on to its own tick, a parked one forgets its entry), so
        that the tick source sleeps until a bucket with a run in it. At most
        :data:`PRUNE_BUCKETS` buckets and :data:`PRUNE_ENTRIES` entries per call (a bigger
        bucket waits for its own pop), and a head found live is not looked at again while it
        stays the head (so a queue whose head is a big bucket, woken every millisecond by
        another grid, scans it once). ``_past_tick`` stays where it is: a push between now and
        a pruned tick is not late.

        Why: SIP's one-shots are mostly cancelled or re-armed before they fire, and their old
        entries fill nearly every millisecond a minute ahead; a wake-up for each (the churn
        workload's steady state: ~870 a second for ~170 runs) cost more CPU than the re-arms
        themselves. The scheduler calls this at the end of each wake-up.
        """
        keys = self._keys
        buckets, entries = PRUNE_BUCKETS, PRUNE_ENTRIES
        while keys and buckets:
            tick = keys[0]
            if tick == self._live_head:
                return
            bucket = self._bucket(tick)
            assert bucket is not None
            entries -= len(bucket)
            if entries < 0:
                return  # (not marked: the next wake-up looks again)
            for timer in bucket:
                if timer._due_tick == tick:  # (the dispatcher's own test for a run)
                    self._live_head = tick
                    return
            buckets -= 1
            heapq.heappop(keys)
            self._firing = True
            bucket = self._take(tick, self._past_tick)
            if self._uniform:
                self._uniform.pop(tick, None)
            self._stale -= len(bucket)  # every entry left in it is stale (see the loop above)
            self.batch_done()

    def _take(self, tick: int, past: int) -> list[Timer]:
        """Take out the bucket of ``tick``, whose key was just popped (``past``: ``_past_tick``
        before that), minus its mark; the deferred timers it held go on to their own ticks."""
        bucket = self._buckets.pop(tick, None) if self._buckets else None
        if bucket is None:  # (then it is in the ring)
            ring = self._ring
            assert ring is not None
            bucket = ring[tick & _NEAR_MASK]
            ring[tick & _NEAR_MASK] = None
            assert bucket is not None
        self._entries -= len(bucket)
        held = bucket[0] is _HELD
        if held:
            del bucket[0]
            self._stale -= 1
        near = self._near
        # (a bucket at or before _past_tick, pushed there late, is never flagged: its slot's
        # flag, if set, is a later tick's)
        if near is not None and tick > past and near[tick & _NEAR_MASK]:
            near[tick & _NEAR_MASK] = 0
            held = True
        if held:
            self._move_on(tick, bucket)
        return bucket

    def _move_on(self, tick: int, bucket: list[Timer]) -> None:
        """The popped bucket ``tick`` held parked or deferred entries: each deferred timer goes
        on to its own tick (the entry here is stale then), the parked ones stay out."""
        for timer in bucket:
            if timer._entry_tick == tick:
                timer._entry_tick = NOT_QUEUED
                due = timer._due_tick
                if due != NOT_QUEUED:  # deferred (a parked one stays out)
                    self._stale += 1
                    self.push(timer, due)  # (later than now: the tick source reads it next)

    def batch_done(self) -> None:
        """The popped bucket was dispatched: compaction may run again (and runs now if the
        batch's discards called for it)."""
        self._firing = False
        self._maybe_compact()

    def settle(self, stale: int) -> None:
        """``stale`` entries of a popped bucket were skipped: they no longer count as stale."""
        self._stale -= stale

    def clear(self) -> list[Timer]:
        """Empty the queue; returns the timers that were live in it (each once: a timer paused
        and resumed to the same tick has two entries there)."""
        items = self._take_all()
        live = list(
            {
                t: None
                for tick, bucket in items
                for t in bucket
                if t._due_tick == tick or (t._entry_tick == tick and t._due_tick != NOT_QUEUED)
            }
        )
        for _, bucket in items:
            for t in bucket:
                t._entry_tick = NOT_QUEUED
        self._ring = None
        self._keys.clear()
        self._uniform.clear()
        self._entries = self._stale = 0
        self._compact_at = _COMPACT_MIN_STALE
        self._past_tick = 0  # (a restarted grid counts ticks from a new origin)
        self._live_head = None
        self._near = None
        self._firing = False
        return live

    def _maybe_compact(self) -> None:
        if self._stale >= _COMPACT_MIN_STALE and self._stale * 2 > self._entries:
            self._compact()
        # Till the next check (a batch's end, or this bound reached), entries only grow: no
        # compaction is due below it, so a discard compares one number.
        self._compact_at = max(_COMPACT_MIN_STALE, self._entries // 2 + 1)

    def _compact(self) -> None:
        """Drop stale entries; O(entries), run only when more than half are stale."""
        items = self._take_all()
        self._keys = []
        marks = 0
        entries = 0
        near = self._near
        for tick, bucket in items:
            if bucket[0] is _HELD or (near is not None and near[tick & _NEAR_MASK]):
                live = self._live_held(tick, bucket)  # (marked if it still holds one)
                if live and live[0] is _HELD:
                    marks += 1
            else:  # each timer once (one moved away and back has two entries here), and not
                # one deferred in an earlier bucket (its due tick is this one, its entry there)
                live = [
                    *dict.fromkeys(
                        [t for t in bucket if t._due_tick == tick and t._entry_tick == NOT_QUEUED]
                    )
                ]
            if live:
                self._add_bucket(tick, live)
                entries += len(live)
        if near is not None:  # (its flags are marks now: flagging starts over)
            near[:] = bytes(_NEAR_TICKS)
        self._entries = entries
        self._stale = marks
        self._uniform.clear()

    @staticmethod
    def _live_held(tick: int, bucket: list[Timer]) -> list[Timer]:
        """The live entries of a marked (or flagged) bucket, each timer once, behind a mark if
        any is deferred; a parked timer's entry is dropped, and the timer forgets it."""
        live: dict[Timer, None] = {}
        deferred = False
        for t in bucket:
            if t._entry_tick == tick:
                if t._due_tick == NOT_QUEUED:  # parked: the entry goes
                    t._entry_tick = NOT_QUEUED
                else:
                    live[t] = None
                    deferred = True
            elif t._due_tick == tick and t._entry_tick == NOT_QUEUED:
                live[t] = None
        return [_HELD, *live] if deferred else [*live]
