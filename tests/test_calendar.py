"""Calendar triggers: which wall-clock instants a cron expression or a one-shot runs at.

Pure: no scheduler, no clock. Instants are ns since the epoch (UTC); expectations are written
by hand as local ISO times with their offsets, so a DST change reads off the offset, and are
checked against cronsim's own iteration as well.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from aiotimer._calendar import AtTrigger, CronTrigger, Trigger

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_S = 1_000_000_000


def ns(iso: str) -> int:
    """An ISO instant with an offset (``...Z`` or ``...+02:00``) as ns since the epoch."""
    return (datetime.fromisoformat(iso) - EPOCH) // timedelta(microseconds=1) * 1_000


def chained(trigger: Trigger, after: str, until: str) -> list[int]:
    """The instants in (after, until], asking next_after from each answer, as the core does."""
    instants: list[int] = []
    current = trigger.next_after(ns(after))
    while current is not None and current <= ns(until):
        instants.append(current)
        current = trigger.next_after(current)
    return instants


def library(expr: str, zone: ZoneInfo, after: str, until: str) -> list[int]:
    """cronsim's own instants in (after, until], iterated from ``after`` in ``zone``."""
    instants: list[int] = []
    for when in CronSim(expr, datetime.fromisoformat(after).astimezone(zone)):
        if (instant := ns(when.isoformat())) > ns(until):
            return instants
        instants.append(instant)
    return instants


def local(trigger: Trigger, n: int, after: str) -> list[str]:
    return [when.isoformat(timespec="minutes") for when in trigger.upcoming(n, ns(after))]


# -- DST: spring forward and fall back, Europe/Berlin and America/New_York ------------------
#
# Europe/Berlin 2026: 03-29 01:00Z, 02:00 CET -> 03:00 CEST; 10-25 01:00Z, 03:00 CEST -> 02:00 CET.
# America/New_York 2026: 03-08 07:00Z, 02:00 EST -> 03:00 EDT; 11-01 06:00Z, 02:00 EDT -> 01:00 EST.
# (expr, zone, after, until, expected local instants in (after, until])
DST_CASES = [
    # hourly, forward: the skipped 02:00 is no run and none is owed; runs stay an hour apart
    ("0 * * * *", BERLIN, "2026-03-28T23:30Z", "2026-03-29T02:30Z",
     ["2026-03-29T01:00+01:00", "2026-03-29T03:00+02:00", "2026-03-29T04:00+02:00"]),
    ("0 * * * *", NEW_YORK, "2026-03-08T05:30Z", "2026-03-08T08:30Z",
     ["2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00"]),
    # hourly, back: the repeated hour runs in both offsets, still an hour apart
    ("0 * * * *", BERLIN, "2026-10-24T23:30Z", "2026-10-25T02:30Z",
     ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00", "2026-10-25T03:00+01:00"]),
    ("0 * * * *", NEW_YORK, "2026-11-01T04:30Z", "2026-11-01T07:30Z",
     ["2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00"]),
    # daily at 02:30, forward: the day's run is at the end of the gap, 03:00
    ("30 2 * * *", BERLIN, "2026-03-28T00:00Z", "2026-03-31T00:00Z",
     ["2026-03-28T02:30+01:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"]),
    ("30 2 * * *", NEW_YORK, "2026-03-07T00:00Z", "2026-03-10T00:00Z",
     ["2026-03-07T02:30-05:00", "2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"]),
    # daily at 02:30, back: once, at the first 02:30 (summer time), not twice
    ("30 2 * * *", BERLIN, "2026-10-24T00:00Z", "2026-10-27T00:00Z",
     ["2026-10-24T02:30+02:00", "2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"]),
    # New York repeats 01:xx, not 02:xx: 02:30 is untouched, 01:30 runs once (summer time)
    ("30 2 * * *", NEW_YORK, "2026-10-31T00:00Z", "2026-11-03T00:00Z",
     ["2026-10-31T02:30-04:00", "2026-11-01T02:30-05:00", "2026-11-02T02:30-05:00"]),
    ("30 1 * * *", NEW_YORK, "2026-10-31T00:00Z", "2026-11-03T00:00Z",
     ["2026-10-31T01:30-04:00", "2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"]),
    # every 15 minutes, forward: 15 real minutes across the gap
    ("*/15 * * * *", BERLIN, "2026-03-29T00:30Z", "2026-03-29T01:30Z",
     ["2026-03-29T01:45+01:00", "2026-03-29T03:00+02:00", "2026-03-29T03:15+02:00",
      "2026-03-29T03:30+02:00"]),
    ("*/15 * * * *", NEW_YORK, "2026-03-08T06:30Z", "2026-03-08T07:30Z",
     ["2026-03-08T01:45-05:00", "2026-03-08T03:00-04:00", "2026-03-08T03:15-04:00",
      "2026-03-08T03:30-04:00"]),
    # every 15 minutes, back: eight runs in the repeated hour, 15 real minutes apart
    ("*/15 * * * *", BERLIN, "2026-10-24T23:50Z", "2026-10-25T02:00Z",
     ["2026-10-25T02:00+02:00", "2026-10-25T02:15+02:00", "2026-10-25T02:30+02:00",
      "2026-10-25T02:45+02:00", "2026-10-25T02:00+01:00", "2026-10-25T02:15+01:00",
      "2026-10-25T02:30+01:00", "2026-10-25T02:45+01:00", "2026-10-25T03:00+01:00"]),
    ("*/15 * * * *", NEW_YORK, "2026-11-01T04:50Z", "2026-11-01T07:00Z",
     ["2026-11-01T01:00-04:00", "2026-11-01T01:15-04:00", "2026-11-01T01:30-04:00",
      "2026-11-01T01:45-04:00", "2026-11-01T01:00-05:00", "2026-11-01T01:15-05:00",
      "2026-11-01T01:30-05:00", "2026-11-01T01:45-05:00", "2026-11-01T02:00-05:00"]),
]  # fmt: skip
DST_IDS = [f"{expr} {zone.key} {after[:10]}" for expr, zone, after, _, _ in DST_CASES]


@pytest.mark.parametrize(("expr", "zone", "after", "until", "expected"), DST_CASES, ids=DST_IDS)
def test_dst_change_runs_each_instant_once_as_written(
    expr: str, zone: ZoneInfo, after: str, until: str, expected: list[str]
) -> None:
    trigger = CronTrigger(expr, zone.key, label="dst")
    assert chained(trigger, after, until) == [ns(when) for when in expected]


@pytest.mark.parametrize(("expr", "zone", "after", "until", "expected"), DST_CASES, ids=DST_IDS)
def test_dst_change_matches_cronsims_own_instants(
    expr: str, zone: ZoneInfo, after: str, until: str, expected: list[str]
) -> None:
    trigger = CronTrigger(expr, zone, label="dst")
    assert chained(trigger, after, until) == library(expr, zone, after, until)


@pytest.mark.parametrize(("expr", "zone", "after", "until", "expected"), DST_CASES, ids=DST_IDS)
def test_upcoming_lists_aware_times_in_the_timers_zone(
    expr: str, zone: ZoneInfo, after: str, until: str, expected: list[str]
) -> None:
    trigger = CronTrigger(expr, zone, label="dst")
    listed = trigger.upcoming(len(expected), ns(after))
    assert [when.isoformat(timespec="minutes") for when in listed] == expected
    assert all(when.tzinfo is zone for when in listed)


DST_NIGHTS = [
    (BERLIN, "2026-03-28T22:00Z", "2026-03-29T04:00Z"),
    (BERLIN, "2026-10-24T22:00Z", "2026-10-25T04:00Z"),
    (NEW_YORK, "2026-03-08T04:00Z", "2026-03-08T10:00Z"),
    (NEW_YORK, "2026-11-01T03:00Z", "2026-11-01T09:00Z"),
]


@pytest.mark.parametrize("expr", ["0 * * * *", "30 2 * * *", "30 1 * * *", "*/15 * * * *"])
@pytest.mark.parametrize(("zone", "start", "end"), DST_NIGHTS, ids=lambda v: str(v)[:16])
def test_asked_from_any_instant_of_a_dst_night_the_answer_is_the_next_run(
    expr: str, zone: ZoneInfo, start: str, end: str
) -> None:
    """From every second of a DST night (each minute, at :00 and :37.5), next_after is the
    first run of the night's schedule strictly after it: never an earlier one, never a later."""
    trigger = CronTrigger(expr, zone, label="dst")
    runs = chained(trigger, start, end)
    for minute in range(ns(start), ns(end), 60 * NS_PER_S):
        for asked in (minute, minute + 37 * NS_PER_S + NS_PER_S // 2):
            answer = trigger.next_after(asked)
            assert answer is not None
            assert answer > asked
            later = bisect.bisect_right(runs, asked)
            assert answer == (runs[later] if later < len(runs) else answer), (asked, answer)
            assert later < len(runs) or answer > ns(end)


def test_fixed_time_asked_from_the_second_pass_of_the_repeated_hour_is_not_run_again() -> None:
    """02:30 CEST ran; at 02:10 CET (the wall clock shows 02:10 again) the next run is
    tomorrow's, not the 02:30 CET that cron's rules never run (cronsim, on naive local time,
    answers the 02:30 CEST already past)."""
    trigger = CronTrigger("30 2 * * *", "Europe/Berlin", label="nightly")
    assert trigger.next_after(ns("2026-10-25T02:10+01:00")) == ns("2026-10-26T02:30+01:00")
    assert local(trigger, 2, "2026-10-25T02:10+01:00") == [
        "2026-10-26T02:30+01:00",
        "2026-10-27T02:30+01:00",
    ]


def test_several_fixed_times_in_the_skipped_hour_run_once_at_its_end() -> None:
    trigger = CronTrigger("0,30 2 * * *", "Europe/Berlin", label="twice-nightly")
    assert local(trigger, 3, "2026-03-28T23:00Z") == [
        "2026-03-29T03:00+02:00",
        "2026-03-30T02:00+02:00",
        "2026-03-30T02:30+02:00",
    ]


def test_wildcard_minutes_in_the_skipped_hour_have_no_run_that_day() -> None:
    trigger = CronTrigger("*/15 2 * * *", "Europe/Berlin", label="two-oclock")
    assert local(trigger, 5, "2026-03-28T00:50Z") == [
        "2026-03-28T02:00+01:00",
        "2026-03-28T02:15+01:00",
        "2026-03-28T02:30+01:00",
        "2026-03-28T02:45+01:00",
        "2026-03-30T02:00+02:00",
    ]


def test_as_datetime_gives_the_offset_of_either_pass_of_the_repeated_hour() -> None:
    trigger = CronTrigger("0 * * * *", "Europe/Berlin", label="hourly")
    first, second = ns("2026-10-25T00:00Z"), ns("2026-10-25T01:00Z")
    assert trigger.as_datetime(first).isoformat() == "2026-10-25T02:00:00+02:00"
    assert trigger.as_datetime(second).isoformat() == "2026-10-25T02:00:00+01:00"
    assert trigger.as_datetime(second).tzinfo is BERLIN


# -- strictly after ---------------------------------------------------------------------------


def test_next_after_is_strictly_after_its_argument_to_the_nanosecond() -> None:
    trigger = CronTrigger("*/5 * * * *", "UTC", label="five")
    run = ns("2026-01-01T10:05Z")
    assert trigger.next_after(run - 1) == run
    assert trigger.next_after(run) == ns("2026-01-01T10:10Z")
    assert trigger.next_after(run - 5 * 60 * NS_PER_S) == run


def test_instants_after_yields_the_same_runs_as_chained_next_after() -> None:
    trigger = CronTrigger("*/15 * * * *", "Europe/Berlin", label="quarter")
    after, until = "2026-10-24T22:00Z", "2026-10-25T04:00Z"
    from_iterator = [t for t in _until(trigger.instants_after(ns(after)), ns(until))]
    assert from_iterator == chained(trigger, after, until)
    assert len(from_iterator) == 6 * 4  # six real hours, the repeated one included


def _until(instants: Iterator[int], until_ns: int) -> Iterator[int]:
    for instant in instants:
        if instant > until_ns:
            return
        yield instant


# -- day of month OR day of week (POSIX), weekday names and numbers --------------------------


def test_day_of_month_and_day_of_week_both_restricted_run_on_either() -> None:
    # January 2026: the 13th is a Tuesday; Fridays are the 2nd, 9th, 16th, 23rd, 30th.
    trigger = CronTrigger("0 0 13 * FRI", "UTC", label="thirteenth-or-friday")
    assert [d.day for d in trigger.upcoming(6, ns("2026-01-01T00:00Z"))] == [2, 9, 13, 16, 23, 30]


def test_a_star_in_either_day_field_means_both_must_match() -> None:
    fridays = CronTrigger("0 0 * * FRI", "UTC", label="fridays")
    thirteenths = CronTrigger("0 0 13 * *", "UTC", label="thirteenths")
    assert [d.day for d in fridays.upcoming(3, ns("2026-01-01T00:00Z"))] == [2, 9, 16]
    assert [d.date() for d in thirteenths.upcoming(2, ns("2026-01-01T00:00Z"))] == [
        date(2026, 1, 13),
        date(2026, 2, 13),
    ]


def test_a_day_field_starting_with_a_star_step_counts_as_unrestricted_as_in_debian() -> None:
    """``*/7`` in day-of-week is Sunday (0 and 7) but starts with ``*``: ANDed with 1-7, it is
    the first Sunday of each month (Debian's reading, which cronsim follows)."""
    trigger = CronTrigger("0 0 1-7 * */7", "UTC", label="first-sunday")
    assert [d.date() for d in trigger.upcoming(3, ns("2026-01-01T00:00Z"))] == [
        date(2026, 1, 4),
        date(2026, 2, 1),
        date(2026, 3, 1),
    ]


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sun"])
def test_sunday_is_0_7_or_its_name(sunday: str) -> None:
    trigger = CronTrigger(f"0 12 * * {sunday}", "UTC", label="sunday")
    assert local(trigger, 2, "2026-01-01T00:00Z") == [
        "2026-01-04T12:00+00:00",
        "2026-01-11T12:00+00:00",
    ]


# -- February 29 -------------------------------------------------------------------------------


def test_february_29_runs_in_leap_years_only() -> None:
    trigger = CronTrigger("0 0 29 2 *", "UTC", label="leap-day")
    assert [d.date() for d in trigger.upcoming(3, ns("2026-01-01T00:00Z"))] == [
        date(2028, 2, 29),
        date(2032, 2, 29),
        date(2036, 2, 29),
    ]


def test_february_29_skips_2100_which_is_not_a_leap_year() -> None:
    trigger = CronTrigger("0 0 29 2 *", "UTC", label="leap-day")
    assert [d.year for d in trigger.upcoming(2, ns("2096-03-01T00:00Z"))] == [2104, 2108]


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_a_day_no_month_of_the_expression_has_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match=r"timer 'never': .* day-of-month field '3[01]'"):
        CronTrigger(expr, "UTC", label="never")


def test_an_expression_without_a_run_in_50_years_has_no_next() -> None:
    # every minute of the 1st and 21st, when that day is also the month's last Monday
    trigger = CronTrigger("* * */20 * 1L", "UTC", label="never")
    assert trigger.next_after(ns("2026-01-01T00:00Z")) is None
    assert trigger.upcoming(3, ns("2026-01-01T00:00Z")) == []


# -- aliases -------------------------------------------------------------------------------------

ALIASES = [
    ("@hourly", "0 * * * *", "2026-01-01T01:00+00:00"),
    ("@daily", "0 0 * * *", "2026-01-02T00:00+00:00"),
    ("@midnight", "0 0 * * *", "2026-01-02T00:00+00:00"),
    ("@weekly", "0 0 * * 0", "2026-01-04T00:00+00:00"),
    ("@monthly", "0 0 1 * *", "2026-02-01T00:00+00:00"),
    ("@yearly", "0 0 1 1 *", "2027-01-01T00:00+00:00"),
    ("@annually", "0 0 1 1 *", "2027-01-01T00:00+00:00"),
]


@pytest.mark.parametrize(("alias", "expansion", "first"), ALIASES)
def test_an_alias_runs_as_its_crontab_expansion(alias: str, expansion: str, first: str) -> None:
    trigger = CronTrigger(alias, "Europe/Berlin", label="alias")
    expanded = CronTrigger(expansion, "Europe/Berlin", label="alias")
    assert chained(trigger, "2025-12-01T00:00Z", "2027-02-01T00:00Z") == chained(
        expanded, "2025-12-01T00:00Z", "2027-02-01T00:00Z"
    )
    assert local(CronTrigger(alias, "UTC", label="alias"), 1, "2026-01-01T00:00Z") == [first]
    assert trigger.describe() == f"cron {alias!r} Europe/Berlin"


def test_aliases_ignore_case_and_surrounding_spaces() -> None:
    trigger = CronTrigger(" @HOURLY ", "UTC", label="alias")
    assert trigger.next_after(ns("2026-01-01T00:00Z")) == ns("2026-01-01T01:00Z")


def test_daily_alias_is_a_fixed_time_and_runs_once_when_midnight_repeats() -> None:
    # America/Havana falls back at 01:00 to 00:00 (2026-11-01): midnight happens twice.
    trigger = CronTrigger("@daily", "America/Havana", label="midnight")
    assert local(trigger, 2, "2026-10-31T12:00Z") == [
        "2026-11-01T00:00-04:00",
        "2026-11-02T00:00-05:00",
    ]


def test_an_unknown_alias_is_refused_listing_the_known_ones() -> None:
    known = "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
    with pytest.raises(
        ValueError, match=r"timer 'x': cron expression '@fortnightly': unknown"
    ) as e:
        CronTrigger("@fortnightly", "UTC", label="x")
    assert str(e.value).endswith(f"alias; known: {known}")


def test_reboot_is_refused() -> None:
    with pytest.raises(ValueError, match=r"timer 'boot': cron expression '@reboot' has no"):
        CronTrigger("@reboot", "UTC", label="boot")


# -- seconds field (first, as cronsim reads it) ---------------------------------------------------


def test_a_sixth_field_first_is_seconds() -> None:
    every_10s = CronTrigger("*/10 * * * * *", "UTC", label="ten")
    assert local_seconds(every_10s, 3, "2026-01-01T00:00:00.5Z") == [
        "00:00:10",
        "00:00:20",
        "00:00:30",
    ]
    at_30s = CronTrigger("30 * * * * *", "UTC", label="half")
    assert local_seconds(at_30s, 2, "2026-01-01T00:00Z") == ["00:00:30", "00:01:30"]


def local_seconds(trigger: Trigger, n: int, after: str) -> list[str]:
    return [when.time().isoformat() for when in trigger.upcoming(n, ns(after))]


def test_every_second_is_next_whole_second() -> None:
    trigger = CronTrigger("* * * * * *", "UTC", label="tick")
    second = ns("2026-01-01T00:00:07Z")
    assert trigger.next_after(second - 1) == second
    assert trigger.next_after(second) == second + NS_PER_S


def test_seconds_with_a_wildcard_runs_in_both_passes_of_the_repeated_hour() -> None:
    trigger = CronTrigger("0 */30 * * * *", "Europe/Berlin", label="half-hourly")
    assert local(trigger, 5, "2026-10-24T23:45Z") == [
        "2026-10-25T02:00+02:00",
        "2026-10-25T02:30+02:00",
        "2026-10-25T02:00+01:00",
        "2026-10-25T02:30+01:00",
        "2026-10-25T03:00+01:00",
    ]


def test_seconds_with_a_fixed_time_of_day_is_refused() -> None:
    """cronsim applies no DST rules to 6 fields: 02:30:00 would run twice when clocks go back."""
    with pytest.raises(ValueError, match=r"timer 'nightly': .* with 5 fields: '30 2 \* \* \*'"):
        CronTrigger("0 30 2 * * *", "Europe/Berlin", label="nightly")


# -- bad input ---------------------------------------------------------------------------------

BAD_FIELDS = [
    ("61 * * * *", r"minute field '61': Bad minute"),
    ("* 24 * * *", r"hour field '24': Bad hour"),
    ("* * 0 * *", r"day-of-month field '0': Bad day-of-month"),
    ("* * * 13 *", r"month field '13': Bad month"),
    ("* * * * 8", r"day-of-week field '8': Bad day-of-week"),
    ("* * * * MON-", r"day-of-week field 'MON-': Bad day-of-week"),
    ("*/0 * * * *", r"minute field '\*/0': Bad minute"),
    ("5-1 * * * *", r"minute field '5-1': Bad minute"),
    ("60 * * * * *", r"second field '60': Bad second"),
    ("x * * * *", r"minute field 'x': Bad minute"),
    ("* * * *", r"4 fields \(5, 6 with seconds first, .*\): Wrong number of fields"),
    ("* * * * * * *", r"7 fields .*: Wrong number of fields"),
    ("", r"0 fields .*: Wrong number of fields"),
    ("hourly", r"1 field \(5, 6 with seconds first, .*\): Wrong number of fields"),
]


@pytest.mark.parametrize(("expr", "reason"), BAD_FIELDS)
def test_a_malformed_expression_is_refused_naming_timer_field_and_reason(
    expr: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=r"^timer 'nightly': cron expression .* cronsim: ") as e:
        CronTrigger(expr, "Europe/Berlin", label="nightly")
    assert f"{expr!r}" in str(e.value)
    assert e.match(reason)


@pytest.mark.parametrize("expr", [5, None, b"* * * * *", ["*"] * 5])
def test_an_expression_that_is_not_a_str_is_a_type_error(expr: object) -> None:
    with pytest.raises(TypeError, match=r"timer 'nightly': a cron expression must be a str"):
        CronTrigger(expr, "UTC", label="nightly")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tz", "reason"),
    [
        ("Europe/Berln", r"tz: unknown time zone 'Europe/Berln'"),
        ("Mars/Olympus_Mons", r"tz: unknown time zone 'Mars/Olympus_Mons'"),
        ("Europe/Berlin ", r"tz: unknown time zone 'Europe/Berlin '"),
        ("", r"tz: '' is not a time zone name"),
        ("/etc/passwd", r"tz: '/etc/passwd' is not a time zone name"),
        ("../../etc/passwd", r"tz: '../../etc/passwd' is not a time zone name"),
    ],
)
def test_an_unknown_zone_is_refused_naming_timer_and_zone(tz: str, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"^timer 'nightly': {reason}"):
        CronTrigger("0 3 * * *", tz, label="nightly")


@pytest.mark.parametrize("tz", [None, 1, UTC, timezone(timedelta(hours=1))])
def test_a_zone_that_is_neither_a_name_nor_a_zoneinfo_is_a_type_error(tz: object) -> None:
    with pytest.raises(TypeError, match=r"timer 'nightly': tz must be an IANA zone name"):
        CronTrigger("0 3 * * *", tz, label="nightly")  # type: ignore[arg-type]


def test_without_cronsim_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # import cronsim -> ImportError
    with pytest.raises(ImportError, match=r"timer 'nightly': .*pip install 'aiotimer\[cron\]'"):
        CronTrigger("0 3 * * *", "UTC", label="nightly")


@pytest.mark.parametrize(("n", "error"), [(-1, ValueError), (1.0, TypeError), (True, TypeError)])
def test_upcoming_refuses_a_count_that_is_not_a_natural_number(
    n: object, error: type[Exception]
) -> None:
    for trigger in (
        CronTrigger("@hourly", "UTC", label="nightly"),
        AtTrigger(datetime(2026, 12, 24, 18, tzinfo=BERLIN), label="nightly"),
    ):
        with pytest.raises(error, match=r"timer 'nightly': upcoming\(\) takes"):
            trigger.upcoming(n, 0)  # type: ignore[arg-type]
        assert trigger.upcoming(0, 0) == []


def test_the_ends_of_the_calendar() -> None:
    trigger = CronTrigger("* * * * *", "UTC", label="edge")
    assert trigger.next_after(ns("9999-12-31T23:59:30Z")) is None
    assert trigger.next_after(10**30) is None
    assert trigger.next_after(0) == 60 * NS_PER_S
    assert trigger.next_after(-1) == 0  # before the epoch is a time like any other
    with pytest.raises(ValueError, match=r"timer 'edge': wall time -10+ ns is outside"):
        trigger.next_after(-(10**30))


# -- describe, the protocol, zones as ZoneInfo -------------------------------------------------


def test_describe_names_expression_and_zone() -> None:
    assert CronTrigger("*/5 * * * *", "Europe/Berlin", label="x").describe() == (
        "cron '*/5 * * * *' Europe/Berlin"
    )
    assert CronTrigger("0 3 * * *", NEW_YORK, label="x").describe() == (
        "cron '0 3 * * *' America/New_York"
    )


def test_both_triggers_are_triggers() -> None:
    assert isinstance(CronTrigger("@hourly", "UTC", label="x"), Trigger)
    assert isinstance(AtTrigger(datetime(2026, 1, 1, tzinfo=UTC), label="x"), Trigger)


# -- one-shots at a wall-clock instant ----------------------------------------------------------


def test_a_one_shot_runs_once_strictly_after_the_question() -> None:
    when = datetime(2026, 12, 24, 18, 0, tzinfo=BERLIN)
    trigger = AtTrigger(when, label="xmas")
    instant = ns("2026-12-24T17:00Z")
    assert trigger.next_after(instant - 1) == instant
    assert trigger.next_after(instant) is None
    assert trigger.next_after(instant + NS_PER_S) is None
    assert list(trigger.instants_after(0)) == [instant]
    assert list(trigger.instants_after(instant)) == []


def test_a_one_shot_lists_its_instant_in_its_own_zone() -> None:
    when = datetime(2026, 12, 24, 18, 0, tzinfo=BERLIN)
    trigger = AtTrigger(when, label="xmas")
    assert trigger.upcoming(3, ns("2026-12-01T00:00Z")) == [when]
    assert trigger.upcoming(3, ns("2026-12-24T17:00Z")) == []
    assert trigger.as_datetime(ns("2026-12-24T17:00Z")).isoformat() == "2026-12-24T18:00:00+01:00"
    assert trigger.describe() == "at 2026-12-24T18:00:00+01:00 Europe/Berlin"


def test_a_one_shot_in_a_fixed_offset_zone() -> None:
    when = datetime(2026, 6, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=-3)))
    trigger = AtTrigger(when, label="noon")
    assert trigger.next_after(0) == ns("2026-06-01T15:00:00.250Z")
    assert trigger.describe() == "at 2026-06-01T12:00:00.250000-03:00"


def test_a_one_shot_in_the_repeated_hour_follows_fold() -> None:
    first = AtTrigger(datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN), label="first")
    second = AtTrigger(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN), label="second")
    assert first.next_after(0) == ns("2026-10-25T00:30Z")
    assert second.next_after(0) == ns("2026-10-25T01:30Z")


def test_a_naive_datetime_is_refused_naming_the_timer() -> None:
    with pytest.raises(ValueError, match=r"timer 'xmas': add_at needs an aware datetime, got the "
                       r"naive 2026-12-24T18:00:00"):  # fmt: skip
        AtTrigger(datetime(2026, 12, 24, 18, 0), label="xmas")


def test_a_local_time_skipped_by_dst_is_refused() -> None:
    with pytest.raises(ValueError, match=r"timer 'early': 2026-03-29T02:30:00 does not exist in "
                       r"Europe/Berlin"):  # fmt: skip
        AtTrigger(datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN), label="early")


@pytest.mark.parametrize("when", [date(2026, 12, 24), "2026-12-24T18:00Z", 1.7e9, None])
def test_a_one_shot_needs_a_datetime(when: object) -> None:
    with pytest.raises(TypeError, match=r"timer 'xmas': add_at takes a datetime"):
        AtTrigger(when, label="xmas")  # type: ignore[arg-type]
