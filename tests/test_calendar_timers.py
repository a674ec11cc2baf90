"""Calendar timers on the scheduler: cron expressions and wall-clock one-shots on the wall grid,
run on virtual wall time across DST changes and wall-clock steps (the triggers' own instants are
specified in ``test_calendar.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

import aiotimer
from aiotimer import Missed, TimerState
from aiotimer._calendar import CronTrigger
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.anyio

S = 1_000_000_000
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(year: int, month: int, day: int, hour: int, minute: int = 0, tz: ZoneInfo = UTC) -> int:  # type: ignore[assignment]
    return int(datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()) * S


def clock_at(wall_ns: int) -> VirtualClock:
    return VirtualClock(wall_start_ns=wall_ns)


def wall(clock: VirtualClock) -> datetime:
    return datetime.fromtimestamp(clock.wall_ns() / S, UTC)


async def run_night(
    expr: str, tz: ZoneInfo, start_ns: int, hours: int
) -> tuple[list[datetime], list[datetime]]:
    """Run ``expr`` for ``hours`` from ``start_ns``: (the scheduled instants, the wall times at
    which they ran)."""
    clock = clock_at(start_ns)
    s = aiotimer.Scheduler(clock=clock, wall_check_s=3600)  # (no wall step in these nights)
    scheduled: list[datetime] = []
    ran_at: list[datetime] = []

    def job(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        scheduled.append(tick.wall)
        ran_at.append(wall(clock))

    s.add_every_cron(expr, job, tz=tz)
    async with s:
        await clock.advance(hours * 3600)
    return scheduled, ran_at


def expected(expr: str, tz: ZoneInfo, start_ns: int, hours: int) -> list[datetime]:
    """The library's own instants over the same window."""
    trigger = CronTrigger(expr, tz, label="expected")
    out = []
    instant = trigger.next_after(start_ns)
    while instant is not None and instant <= start_ns + hours * 3600 * S:
        out.append(trigger.as_datetime(instant))
        instant = trigger.next_after(instant)
    return out


NIGHTS = [
    (BERLIN, at(2026, 3, 28, 22)),  # spring forward: 02:00 CET -> 03:00 CEST on the 29th
    (BERLIN, at(2026, 10, 24, 22)),  # fall back: 03:00 CEST -> 02:00 CET on the 25th
    (NEW_YORK, at(2026, 3, 8, 4)),  # spring forward on the 8th, 02:00 -> 03:00
    (NEW_YORK, at(2026, 11, 1, 3)),  # fall back on the 1st, 02:00 -> 01:00
]


@pytest.mark.parametrize(("tz", "start_ns"), NIGHTS)
@pytest.mark.parametrize("expr", ["0 * * * *", "30 2 * * *", "*/15 * * * *"])
@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)  # (the loop plays no part)
async def test_dst_nights_run_each_instant_once_at_the_instant(
    expr: str, tz: ZoneInfo, start_ns: int
) -> None:
    scheduled, ran_at = await run_night(expr, tz, start_ns, 8)
    # (timestamps: aware datetimes of a repeated hour compare equal within a zone, PEP 495)
    instants = [d.timestamp() for d in scheduled]
    assert instants == [d.timestamp() for d in expected(expr, tz, start_ns, 8)]
    assert [d.utcoffset() for d in scheduled] == [
        d.utcoffset() for d in expected(expr, tz, start_ns, 8)
    ]
    assert len(set(instants)) == len(instants)  # none twice
    assert [d.timestamp() for d in ran_at] == instants  # never early, not late (virtual time)


async def test_daily_at_0230_runs_once_on_both_berlin_dst_nights() -> None:
    spring, _ = await run_night("30 2 * * *", BERLIN, at(2026, 3, 28, 22), 8)
    fall, _ = await run_night("30 2 * * *", BERLIN, at(2026, 10, 24, 22), 8)
    assert [d.isoformat() for d in spring] == ["2026-03-29T03:00:00+02:00"]  # the gap's end
    assert [d.isoformat() for d in fall] == ["2026-10-25T02:30:00+02:00"]  # the first pass


async def test_day_of_month_or_day_of_week_and_feb_29() -> None:
    clock = clock_at(at(2027, 1, 1, 0))
    s = aiotimer.Scheduler(clock=clock, wall_check_s=86400)
    seen: list[str] = []
    s.add_every_cron(
        "0 12 13 * FRI", lambda t: seen.append(t.wall.strftime("%a %d")), tz="UTC", name="or"
    )
    leap: list[str] = []
    s.add_every_cron("0 0 29 2 *", lambda t: leap.append(t.wall.date().isoformat()), tz="UTC")
    async with s:
        await clock.advance(31 * 86400)
        assert s.get_timer("or").state is TimerState.ACTIVE
    assert seen == ["Fri 01", "Fri 08", "Wed 13", "Fri 15", "Fri 22", "Fri 29"]  # POSIX OR
    assert leap == []  # 2027 has no Feb 29; the trigger knows the next is 2028


async def test_a_wall_clock_jump_forward_runs_once_and_counts_the_missed_instants() -> None:
    clock = clock_at(at(2026, 6, 1, 10))
    s = aiotimer.Scheduler(clock=clock)
    runs: list[tuple[str, int]] = []
    s.add_every_cron(
        "0 * * * *", lambda t: runs.append((t.wall.strftime("%dT%H"), t.missed)), tz="UTC"
    )
    async with s:
        await clock.advance(3600 + 10)  # 11:00 runs
        clock.step_wall(86400)  # +1 day (NTP step, a suspend)
        await clock.advance(2)  # seen within a second
        await clock.advance(3600)
    assert runs == [("01T11", 0), ("01T12", 23), ("02T12", 0)]


async def test_a_wall_clock_step_back_never_reruns_an_instant() -> None:
    clock = clock_at(at(2026, 6, 1, 10))
    s = aiotimer.Scheduler(clock=clock)
    runs: list[str] = []
    s.add_every_cron("*/30 * * * *", lambda t: runs.append(t.wall.strftime("%H:%M")), tz="UTC")
    async with s:
        await clock.advance(3600 + 10)  # 10:30, 11:00
        clock.step_wall(-3600)  # back to 10:00:10
        await clock.advance(2 * 3600)
    assert runs == ["10:30", "11:00", "11:30", "12:00"]


async def test_burst_replays_missed_instants_up_to_max_catchup() -> None:
    clock = clock_at(at(2026, 6, 1, 10))
    s = aiotimer.Scheduler(clock=clock)
    runs: list[str] = []
    s.add_every_cron(
        "0 * * * *",
        lambda t: runs.append(t.wall.strftime("%H")),
        tz="UTC",
        missed=Missed.BURST,
        max_catchup=2,
    )
    async with s:
        await clock.advance(60)
        clock.step_wall(5 * 3600)  # 11, 12, 13, 14, 15 passed
        await clock.advance(2)
    # 11 runs late (12 and 13 merged into it: beyond max_catchup), then 14 and 15 are replayed
    assert runs == ["11", "14", "15"]


async def test_add_at_runs_once_at_its_instant_and_finishes() -> None:
    clock = clock_at(at(2026, 12, 24, 16))
    s = aiotimer.Scheduler(clock=clock)
    when = datetime(2026, 12, 24, 18, tzinfo=BERLIN)
    ran: list[datetime] = []
    t = s.add_at(when, lambda tick: ran.append(wall(clock)), name="greet")
    async with s:
        clock.step_wall(-60)  # a step back just before: still not early
        await clock.advance(3600 + 59)
        assert ran == []
        await clock.advance(2)
    assert [d.timestamp() for d in ran] == [when.timestamp()]
    assert t.state is TimerState.FINISHED


async def test_bad_calendar_input_is_refused_at_registration_naming_the_timer() -> None:
    s = aiotimer.Scheduler()
    with pytest.raises(ValueError, match=r"timer 'bad'.*minute"):
        s.add_every_cron("61 * * * *", lambda: None, tz="UTC", name="bad")
    with pytest.raises(ValueError, match=r"timer 'bad'.*Europe/Berln"):
        s.add_every_cron("* * * * *", lambda: None, tz="Europe/Berln", name="bad")
    with pytest.raises(ValueError, match=r"timer 'naive'.*naive"):
        s.add_at(datetime(2026, 1, 1), lambda: None, name="naive")
    assert not s.timers


async def test_list_shows_the_next_three_runs_in_the_timers_zone() -> None:
    clock = clock_at(at(2026, 3, 29, 0))
    s = aiotimer.Scheduler(clock=clock)
    t = s.add_every_cron("30 2 * * *", lambda: None, tz=BERLIN)
    trigger = t.spec.trigger
    upcoming = trigger.upcoming(3, clock.wall_ns())
    assert [d.isoformat() for d in upcoming] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert t.spec.describe() == "cron '30 2 * * *' Europe/Berlin"
    assert upcoming[0] - upcoming[1] == timedelta(hours=-23, minutes=-30)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
async def test_real_time_an_every_second_expression_fires_at_the_instant_never_early() -> None:
    """On the real clocks: ``* * * * * *`` (a seconds field) runs at each whole second of the
    wall clock, never before it (generous tolerance after it: a shared CI machine)."""
    import time

    s = aiotimer.Scheduler()
    fired: list[tuple[int, int]] = []  # (scheduled instant ns, wall ns at the run)

    def job(tick: aiotimer.Tick) -> None:
        assert tick.wall is not None
        fired.append((round(tick.wall.timestamp() * S), time.time_ns()))

    s.add_every_cron("* * * * * *", job, tz="UTC")
    async with s:
        await anyio.sleep(2.6)
    assert len(fired) >= 2
    for instant, ran in fired:
        assert instant % S == 0  # whole seconds
        assert ran >= instant  # never early
        assert ran - instant < 250_000_000  # and on time, give or take a busy machine
