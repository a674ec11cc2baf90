"""Timers ordered by due tick: the data structure behind both the ms and the s scheduler.

A :class:`TickQueue` is a calendar queue: a ``dict`` from a due tick to the list of timers due
then (a *bucket*), plus a min-heap of the ticks that have a bucket. It was chosen for the scale
aiotimer is benchmarked at (100,000 periodic 1 s timers, 1,000,000 registered):

* Periodic timers share few distinct due ticks (100,000 timers of 1 s all fall in one or two
  buckets), so the heap stays tiny and a wake-up pops a whole bucket in O(1): every timer due in
  the same tick is dispatched in one wake-up, and re-queuing a fired timer is a list append.
* Adding is O(1) for an existing bucket and O(log b) for a new one (b = distinct due ticks), where
  a heap of timers would pay O(log n) for every one of n timers on every fire.
* Removal is lazy: a cancelled, paused or rescheduled timer stays in its old bucket and is
  skipped when that bucket comes due (its ``_due_tick`` no longer matches the bucket's tick).
  The queue counts such stale entries and compacts itself when they outnumber the live ones, so
  churn (add/cancel in a loop) cannot grow memory without bound.

* A bucket may be known to be *uniform*: every live entry is a fast-mode timer (see
  ``_modes``) with the same interval, so all of them re-queue to one tick. The dispatcher runs
  such a bucket with a leaner loop and puts the whole list back at that tick in one step, with
  no append per timer (:meth:`requeue`). The mark is set when a bucket is created for a
  fast-mode timer, when the dispatcher re-queues a bucket that way, or when it finds that a
  mixed one it filled turned out uniform (:meth:`mark_uniform`); an entry that does not fit
  (another interval, a slow mode) clears it; compaction clears every mark.

Ground rules: ticks are integers on the queue's grid (``origin_ns + tick * tick_ns``); the queue
never looks at a clock. It hands out buckets; deciding what to do with each timer is the
dispatcher's job.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, final

from ._modes import FAST

if TYPE_CHECKING:
    from ._scheduler import Scheduler
    from ._timer import Timer

__all__ = ["NOT_QUEUED", "TickQueue"]

NOT_QUEUED = -1
"""``Timer._due_tick`` of a timer that is in no bucket (stopped, paused, not yet armed)."""

_COMPACT_MIN_STALE = 1024


@final
class TickQueue:
    """Buckets of timers keyed by due tick, on a grid of ``tick_ns`` starting at ``origin_ns``."""

    __slots__ = (
        "_buckets",
        "_ceil_high_ns",
        "_ceil_low_ns",
        "_ceil_tick",
        "_entries",
        "_keys",
        "_stale",
        "_uniform",
        "origin_ns",
        "owner",
        "tick_ns",
    )

    def __init__(self, tick_ns: int, owner: Scheduler) -> None:
        self.tick_ns = tick_ns
        self.owner = owner  # the scheduler whose grid this is (its timers reach it here)
        self.origin_ns = 0
        self._buckets: dict[int, list[Timer]] = {}
        self._keys: list[int] = []  # min-heap of the keys of _buckets
        self._entries = 0  # entries in all buckets, stale ones included
        self._stale = 0
        self._uniform: dict[int, int] = {}  # tick -> the interval of its uniform bucket
        self._ceil_tick = 0
        self._ceil_low_ns = self._ceil_high_ns = 0  # tick_at_or_after's last answer: none

    def __len__(self) -> int:
        """Live entries (an upper bound while stale entries await compaction)."""
        return self._entries - self._stale

    def push(self, timer: Timer, tick: int) -> bool:
        """Queue ``timer`` for ``tick``; the caller has set ``timer._due_tick = tick``.

        :returns: whether ``tick`` is new to the queue (only then can it be an earlier deadline
            than the tick source knows of)
        """
        self._entries += 1
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.append(timer)
            if self._uniform:
                self._fits(timer, tick)
            return False
        self._buckets[tick] = [timer]
        heapq.heappush(self._keys, tick)
        if timer._mode <= FAST:
            self._uniform[tick] = timer._interval
        return True

    def _fits(self, timer: Timer, tick: int) -> None:
        """``timer`` joined the bucket of ``tick``: unmark the bucket unless the timer fits."""
        interval = self._uniform.get(tick)
        if interval is not None and (timer._interval != interval or timer._mode > FAST):
            del self._uniform[tick]

    def arm(self, timer: Timer, now_ns: int) -> int | None:
        """Queue ``timer`` for its first grid point: ``interval`` ticks after the first tick at
        or after ``now_ns`` (no jitter); set its grid and due tick.

        :returns: the deadline in ns if that tick is new to the queue, else ``None`` (see
            :meth:`push`)
        """
        if self._ceil_low_ns < now_ns <= self._ceil_high_ns:  # tick_at_or_after, inlined
            tick = self._ceil_tick + timer._interval
        else:
            tick = self.tick_at_or_after(now_ns) + timer._interval
        timer._grid_tick = timer._due_tick = tick
        self._entries += 1
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.append(timer)
            uniform = self._uniform
            if uniform:  # _fits, inlined: registrations come by the thousand
                interval = uniform.get(tick)
                if interval is not None and (timer._interval != interval or timer._mode > FAST):
                    del uniform[tick]
            return None
        self._buckets[tick] = [timer]
        heapq.heappush(self._keys, tick)
        if timer._mode <= FAST:
            self._uniform[tick] = timer._interval
        return self.origin_ns + tick * self.tick_ns

    def tick_at_or_after(self, time_ns: int) -> int:
        """The first tick of the grid at or after ``time_ns``.

        Registrations come in bursts within one tick: the last answer is kept, and a burst
        pays two comparisons instead of a division of large integers.
        """
        if self._ceil_low_ns < time_ns <= self._ceil_high_ns:
            return self._ceil_tick
        tick = -(-(time_ns - self.origin_ns) // self.tick_ns)
        self._ceil_tick = tick
        self._ceil_high_ns = self.origin_ns + tick * self.tick_ns
        self._ceil_low_ns = self._ceil_high_ns - self.tick_ns
        return tick

    def set_origin(self, origin_ns: int) -> None:
        """Put the grid's tick 0 at ``origin_ns`` (the queue must be empty)."""
        self.origin_ns = origin_ns
        self._ceil_low_ns = self._ceil_high_ns = 0  # forget tick_at_or_after's last answer

    def bucket_for(self, tick: int) -> list[Timer]:
        """The bucket for ``tick``, created if needed; call :meth:`added` after appending to it.

        The dispatcher's re-queue path: one lookup for a run of timers sharing a next tick.
        """
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._keys, tick)
        elif self._uniform:
            self._uniform.pop(tick, None)  # what is appended is not checked
        return bucket

    def requeue(self, tick: int, entries: list[Timer], interval: int, stale: int) -> None:
        """Put a fired uniform bucket's entries back, due at ``tick``, as one list (or onto the
        bucket already there). ``stale`` of them were skipped in the run: when they weigh, the
        list is filtered first; else they travel along, still counted as stale.
        """
        if stale * 16 > len(entries):
            live = [t for t in entries if t._due_tick == tick]
            self.settle(len(entries) - len(live))
            entries = live
            if not entries:
                return
        self._entries += len(entries)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = entries
            heapq.heappush(self._keys, tick)
            self._uniform[tick] = interval
            return
        bucket.extend(entries)
        if self._uniform.get(tick) != interval:
            self._uniform.pop(tick, None)

    def mark_uniform(self, tick: int, interval: int, count: int) -> None:
        """The dispatcher appended ``count`` fast-mode timers of ``interval`` to the bucket of
        ``tick``: mark it uniform if that is all it holds."""
        bucket = self._buckets.get(tick)
        if bucket is not None and len(bucket) == count:
            self._uniform[tick] = interval

    def added(self, n: int) -> None:
        """``n`` timers were appended to buckets obtained from :meth:`bucket_for`."""
        self._entries += n

    def discard(self) -> None:
        """Note that one queued entry went stale (its timer was cancelled, paused or moved)."""
        self._stale += 1
        if self._stale >= _COMPACT_MIN_STALE and self._stale * 2 > self._entries:
            self._compact()

    def next_deadline_ns(self) -> int | None:
        keys = self._keys
        return self.origin_ns + keys[0] * self.tick_ns if keys else None

    def pop_due(self, now_tick: int) -> tuple[int, list[Timer], int] | None:
        """Remove and return the earliest bucket due at or before ``now_tick``, if any, as
        ``(tick, bucket, interval)``: ``interval`` is that of a uniform bucket, else 0.

        Entries whose timer moved on are still in the returned list: the consumer skips them
        (``timer._due_tick != tick``) and reports how many with :meth:`settle`.
        """
        keys = self._keys
        if not keys or keys[0] > now_tick:
            return None
        tick = heapq.heappop(keys)
        bucket = self._buckets.pop(tick)
        self._entries -= len(bucket)
        return tick, bucket, self._uniform.pop(tick, 0) if self._uniform else 0

    def settle(self, stale: int) -> None:
        """``stale`` entries of a popped bucket were skipped: they no longer count as stale."""
        self._stale = max(0, self._stale - stale)

    def clear(self) -> None:
        self._buckets.clear()
        self._keys.clear()
        self._uniform.clear()
        self._entries = self._stale = 0

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
        self._uniform.clear()  # the dispatcher marks them again as it goes
