"""Property: whatever callbacks of big mixed batches do to timers (cancel, pause, resume,
reschedule, add), with the queue compacting as often as it can, no active timer is ever left
overdue and no timer runs a grid point twice.

The scenario is a script drawn by Hypothesis: timers of a few intervals on the ms grid (so
batches mix intervals, uniform and not), each run of a timer may carry out one action on another
timer. After every step of virtual time, every ACTIVE timer must be queued for a deadline still
to come, and each timer's runs must have strictly increasing grid points.
"""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotimer
import aiotimer._queue
from aiotimer import TimerState
from aiotimer.testing import VirtualClock

MS = 1_000_000
ACTIONS = ("cancel", "pause", "resume", "reschedule", "add", "none")

Script = tuple[list[int], list[tuple[int, str, int, int]]]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    intervals = draw(st.lists(st.sampled_from([5, 7, 10, 20]), min_size=40, max_size=300))
    n = len(intervals)
    actions = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),  # the timer whose run acts
                st.sampled_from(ACTIONS),
                st.integers(0, n - 1),  # on which timer
                st.sampled_from([5, 10, 15, 20, 40]),  # a new interval
            ),
            min_size=20,
            max_size=400,
        )
    )
    return intervals, actions


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=scripts())
def test_no_timer_is_lost_or_run_twice_whatever_callbacks_do(
    script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiotimer._queue, "_COMPACT_MIN_STALE", 1)  # compact at every chance
    intervals, actions = script

    async def main() -> None:
        clock = VirtualClock()
        s = aiotimer.Scheduler(clock=clock)
        timers: list[aiotimer.Timer] = []
        todo: dict[int, list[tuple[str, int, int]]] = {}
        for actor, action, target, interval in actions:
            todo.setdefault(actor, []).append((action, target, interval))
        points: dict[int, list[int]] = {}

        def make(index: int) -> object:
            def run(tick: aiotimer.Tick) -> None:
                points.setdefault(id(tick.timer), []).append(tick.scheduled_ns)
                pending = todo.get(index)
                if not pending:
                    return
                action, target, interval = pending.pop(0)
                other = timers[target]
                if other.state in (TimerState.CANCELLED, TimerState.FINISHED):
                    return
                if action == "cancel":
                    other.cancel()
                elif action == "pause":
                    other.pause()
                elif action == "resume":
                    other.resume()
                elif action == "reschedule":
                    other.reschedule(interval)
                elif action == "add":
                    timers.append(s.add_every_ms(interval, make(len(timers))))  # type: ignore[arg-type]

            return run

        for i, interval in enumerate(intervals):
            timers.append(s.add_every_ms(interval, make(i)))  # type: ignore[arg-type]
        async with s:
            for _ in range(30):
                await clock.advance_ms(7)
                now_ns = clock.now_ns()
                for t in timers:
                    if t.state is TimerState.ACTIVE:
                        deadline = t.next_deadline_ns
                        assert deadline is not None, f"{t!r} is active but not queued"
                        assert deadline > now_ns, f"{t!r} is overdue: {deadline} <= {now_ns}"
                    elif t.state is TimerState.PAUSED:
                        assert t.next_deadline_ns is None
            live = sum(t.state is TimerState.ACTIVE for t in timers)
            assert len(s._ms.queue) == live  # the queue's live count is exact
        for seen in points.values():
            assert seen == sorted(set(seen)), "a grid point ran twice, or out of order"

    anyio.run(main)
