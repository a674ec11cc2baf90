"""Timers ordered by due tick: the data structure under each :class:`~aiotimer._grid.Grid`.

A :class:`TickQueue` is a calendar queue: a ``dict`` from a due tick to the list of timers due
then (a *bucket*), plus a min-heap of the ticks that have a bucket. It was chosen for the scale
aiotimer is benchmarked at (100,000 periodic 1 s timers, 1,000,000 registered):

* Periodic timers share few distinct due ticks (100,000 timers of 1 s all fall in one or two
  buckets), so the heap stays tiny and a wake-up pops a whole bucket in O(1): every timer due in
  the same tick is dispatched in one wake-up, and re-queuing a fired timer is a list append.
* Adding is O(1) for an existing bucket and O(log b) for a new one (b = distinct due ticks), where
  a heap of timers would pay O(log n) for every one of n timers on every fire.
* Removal is lazy: a cancelled, paused or moved timer stays in its old bucket and is skipped when
  that bucket comes due (its ``_due_tick`` no longer matches the bucket's tick). The queue counts
  such stale entries and compacts itself when they outnumber the live ones, so churn (add/cancel
  in a loop) cannot grow memory without bound; compaction is O(entries) and runs at most once
  per ``entries / 2`` discards, so its cost is amortised O(1) per discard.
* A bucket may be known to be *uniform*: every live entry is a fast-mode timer or an eager
  coroutine timer (``LEAN`` in ``_modes``) of one interval, so all of them re-queue to one
  tick. The dispatcher runs such a bucket with a leaner loop and puts the whole list back in
  one step (:meth:`requeue`). :meth:`push` keeps the mark exact: a bucket created by a
  ``LEAN``-mode timer is marked with its interval, any entry that does not fit clears it;
  compaction clears every mark (an unmarked bucket only runs through the general loop).

Ground rules:

* Ticks are integers; the queue never looks at a clock, and it reads a timer's ``_due_tick``,
  ``_mode`` and ``_interval`` but never writes them (the grid does).
* **No compaction under a batch.** Between :meth:`pop_due` and :meth:`batch_done` (a dispatch
  batch, whose callbacks may cancel timers by the thousand), discards are only counted; the
  compaction they call for runs at :meth:`batch_done`. So no list or count the dispatcher relies
  on changes under it, and the live count stays exact.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Final, final

from ._modes import LEAN

if TYPE_CHECKING:
    from ._timer import Timer

__all__ = ["NOT_QUEUED", "TickQueue"]

NOT_QUEUED: Final = -1
"""``Timer._due_tick`` of a timer that is in no bucket (stopped, paused, running, not armed)."""

_COMPACT_MIN_STALE: Final = 1024


@final
class TickQueue:
    """Buckets of timers keyed by due tick."""

    __slots__ = ("_buckets", "_entries", "_firing", "_keys", "_stale", "_uniform")

    def __init__(self) -> None:
        self._buckets: dict[int, list[Timer]] = {}
        self._keys: list[int] = []  # min-heap of the keys of _buckets
        self._entries = 0  # entries in all buckets, stale ones included
        self._stale = 0
        self._uniform: dict[int, int] = {}  # tick -> the interval of its uniform bucket
        self._firing = False  # a popped bucket is being dispatched: no compaction

    def __len__(self) -> int:
        """Live entries."""
        return self._entries - self._stale

    def push(self, timer: Timer, tick: int) -> bool:
        """Queue ``timer`` for ``tick`` (the grid has set ``timer._due_tick = tick``).

        :returns: whether ``tick`` is new to the queue (only then can it be an earlier deadline
            than the tick source knows of)
        """
        self._entries += 1
        bucket = self._buckets.get(tick)
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
        self._buckets[tick] = [timer]
        heapq.heappush(self._keys, tick)
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
            live = [t for t in entries if t._due_tick == tick]
            self.settle(len(entries) - len(live))
            entries = live
            if not entries:
                return False
        self._entries += len(entries)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = entries
            heapq.heappush(self._keys, tick)
            self._uniform[tick] = interval
            return True
        bucket.extend(entries)
        if self._uniform.get(tick) != interval:
            self._uniform.pop(tick, None)
        return False

    def discard(self) -> None:
        """One queued entry went stale (its timer was cancelled, paused or moved)."""
        self._stale += 1
        if not self._firing:
            self._maybe_compact()

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
            return None
        tick = heapq.heappop(keys)
        bucket = self._buckets.pop(tick)
        self._entries -= len(bucket)
        self._firing = True
        return tick, bucket, self._uniform.pop(tick, 0) if self._uniform else 0

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
        live = list(
            {
                t: None
                for tick, bucket in self._buckets.items()
                for t in bucket
                if t._due_tick == tick
            }
        )
        self._buckets.clear()
        self._keys.clear()
        self._uniform.clear()
        self._entries = self._stale = 0
        self._firing = False
        return live

    def _maybe_compact(self) -> None:
        if self._stale >= _COMPACT_MIN_STALE and self._stale * 2 > self._entries:
            self._compact()

    def _compact(self) -> None:
        """Drop stale entries; O(entries), run only when more than half are stale."""
        buckets: dict[int, list[Timer]] = {}
        for tick, bucket in self._buckets.items():
            live = [t for t in bucket if t._due_tick == tick]
            if live:
                buckets[tick] = live
        self._buckets = buckets
        self._keys = list(buckets)
        heapq.heapify(self._keys)
        self._entries = sum(map(len, buckets.values()))
        self._stale = 0
        self._uniform.clear()
