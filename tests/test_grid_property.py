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
from hypothesis import HealthCheck, example, given, settings
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


REARMS = ("later", "earlier", "pause", "resume", "cancel")


@st.composite
def rearm_scripts(draw: st.DrawFn) -> list[list[tuple[int, str, int]]]:
    """Steps of (timer, action, delay ms) done by the application between batches."""
    step = st.lists(
        st.tuples(st.integers(0, 29), st.sampled_from(REARMS), st.integers(1, 60)),
        max_size=25,
    )
    return draw(st.lists(step, min_size=5, max_size=40))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=rearm_scripts())
@example(  # a timer moved earlier, then deferred back to its old tick (a stale entry there)
    script=[
        [(19, "later", 42)],
        [(13, "later", 1), (14, "later", 1), (16, "later", 1)],
        [(10, "later", 1), (19, "later", 35)],
        [],
        [],
        [(11, "later", 1), (15, "later", 1)],
    ]
)
def test_one_shots_re_armed_to_and_fro_run_once_at_their_last_deadline(
    script: list[list[tuple[int, str, int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The churn of a SIP stack on a model: one-shots re-armed later (their entries deferred in
    place), earlier (moved), paused then re-armed (parked, then taken back) or cancelled, between
    batches, with the queue compacting at every chance: each one runs exactly once, at the
    deadline of its last re-arm, and the queue holds no more entries than it must."""
    monkeypatch.setattr(aiotimer._queue, "_COMPACT_MIN_STALE", 1)

    async def main() -> None:
        clock = VirtualClock()
        s = aiotimer.Scheduler(clock=clock)
        ran: dict[int, list[int]] = {}
        due: dict[int, int | None] = {}  # the model: each timer's deadline (ms), None if paused

        def make(index: int) -> object:
            return lambda: ran.setdefault(index, []).append(clock.now_ns() // MS)

        async with s:
            timers = [s.add_once_ms(30 + i, make(i)) for i in range(30)]
            for i in range(30):
                due[i] = 30 + i
            for step in script:
                now = clock.now_ns() // MS
                for index, action, delay in step:
                    t = timers[index]
                    if t.state in (TimerState.CANCELLED, TimerState.FINISHED):
                        continue
                    if action == "later" or action == "earlier":
                        current = due[index]
                        if current is not None and action == "earlier":
                            delay = max(1, min(delay, current - now - 1))
                        t.reschedule(delay)
                        if current is not None:
                            due[index] = now + delay
                    elif action == "pause":
                        t.pause()
                        due[index] = None
                    elif action == "resume":
                        t.reschedule(delay, resume=True)
                        due[index] = now + delay
                    else:
                        t.cancel()
                        due.pop(index)
                await clock.advance_ms(7)
                now = clock.now_ns() // MS
                for index, deadline in due.items():
                    if deadline is not None and deadline <= now:
                        assert ran.get(index) == [deadline], f"timer {index}: due {deadline}"
                    else:
                        assert index not in ran, f"timer {index} ran early: {ran[index]}"
                live = [i for i, d in due.items() if d is not None and d > now]
                assert len(s._ms.queue) == len(live)  # the live count is exact
                for i in live:
                    assert timers[i].next_deadline_ns == due[i] * MS  # type: ignore[operator]
            await clock.advance_ms(200)
        assert {i: r for i, r in ran.items()} == {
            i: [d] for i, d in due.items() if d is not None
        }, "a timer ran twice, or not at its last deadline"

    anyio.run(main)


@st.composite
def periodic_scripts(draw: st.DrawFn) -> list[list[tuple[int, str, int]]]:
    step = st.lists(
        st.tuples(
            st.integers(0, 19),
            st.sampled_from(("reschedule", "pause", "resume", "cancel")),
            st.sampled_from([3, 5, 10]),
        ),
        max_size=12,
    )
    return draw(st.lists(step, min_size=5, max_size=30))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=periodic_scripts())
def test_periodic_timers_re_armed_between_batches_keep_exactly_their_new_grid(
    script: list[list[tuple[int, str, int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Periodic timers of a few intervals (uniform buckets, run by the lean loop) rescheduled,
    paused, resumed with a new interval or cancelled between batches, the queue compacting at
    every chance: each runs at exactly the points of its last arm (now + k * interval) and at
    no other."""
    monkeypatch.setattr(aiotimer._queue, "_COMPACT_MIN_STALE", 1)

    async def main() -> None:
        clock = VirtualClock()
        s = aiotimer.Scheduler(clock=clock)
        ran: dict[int, list[int]] = {i: [] for i in range(20)}
        # the model: (armed at ms, interval ms, runs before that arm), or None when paused
        arm: dict[int, tuple[int, int, int] | None] = {}

        def make(index: int) -> object:
            return lambda: ran[index].append(clock.now_ns() // MS)

        def expected(index: int, now: int) -> list[int]:
            state = arm[index]
            assert state is not None
            at, interval, _ = state
            return list(range(at + interval, now + 1, interval))

        async with s:
            timers = [s.add_every_ms(5 if i % 2 else 10, make(i)) for i in range(20)]
            for i in range(20):
                arm[i] = (0, 5 if i % 2 else 10, 0)
            for step in script:
                now = clock.now_ns() // MS
                for index, action, interval in step:
                    t = timers[index]
                    if t.state is TimerState.CANCELLED:
                        continue
                    if action == "reschedule":
                        t.reschedule(interval)
                        if arm[index] is not None:
                            arm[index] = (now, interval, len(ran[index]))
                    elif action == "pause":
                        t.pause()
                        arm[index] = None
                    elif action == "resume":
                        t.reschedule(interval, resume=True)
                        arm[index] = (now, interval, len(ran[index]))
                    else:
                        t.cancel()
                        arm.pop(index)
                frozen = {i: len(ran[i]) for i, a in arm.items() if a is None}
                await clock.advance_ms(4)
                now = clock.now_ns() // MS
                for index, state in arm.items():
                    if state is None:
                        assert len(ran[index]) == frozen[index], f"timer {index} ran paused"
                    else:
                        since = ran[index][state[2] :]
                        assert since == expected(index, now), f"timer {index}: {state}"
        for index, runs in ran.items():
            assert runs == sorted(set(runs)), f"timer {index} ran a point twice"

    anyio.run(main)
