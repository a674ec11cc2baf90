"""Calendar triggers: when a cron expression, or a one-shot at a wall-clock instant, runs next.

The core runs calendar timers on its wall-clock grid and asks a :class:`Trigger` one question:
"what is the first instant strictly after this one?" (:meth:`Trigger.next_after`), in integer
nanoseconds since the Unix epoch, UTC. A trigger is pure: no clock, no loop, no state that
changes; the same question always gets the same answer.

Ground rules:

* **Evaluation is cronsim's, not ours.** Cron expressions are evaluated by the cronsim library
  (optional extra: ``pip install 'aiotimer[cron]'``), imported when the first cron trigger is
  built. We chose it over croniter because:

  - it follows Debian's cron, DST handling included, on :mod:`zoneinfo`; checked: croniter 7.0
    runs ``30 2 * * *`` twice in Europe/Berlin on the night clocks go back (00:30Z and 01:30Z),
    cronsim once, and croniter's tracker has a long line of DST bugs (jobs an hour early or
    late, timestamps repeating);
  - day-of-month and day-of-week are ORed when both are restricted, as POSIX and Debian say;
  - it is small, typed (``py.typed``), has no dependencies, needs Python >= 3.11 as we do, and
    is maintained for Healthchecks, which lives on it; croniter was declared abandoned in 2025
    before pallets-eco took it over.

  What cronsim lacks we add without parsing anything: the ``@hourly``-style aliases are
  replaced by their crontab(5) expansions (``@reboot`` is refused: a timer has no boot).
* **Fields.** Five fields ``minute hour day-of-month month day-of-week``, with names
  (``JAN``-``DEC``, ``SUN``-``SAT``; Sunday is 0 or 7), lists, ranges, steps, cronsim's ``L``,
  ``LW``, ``5L`` and ``MON#2``. Day-of-month and day-of-week: when both are restricted they are
  ORed (``0 0 13 * FRI`` runs on every 13th and every Friday); a field starting with ``*``
  (``*/2`` included, as in Debian) is unrestricted and the two are ANDed. A sixth field,
  **seconds, comes first** (``*/10 * * * * *``: every 10 s), see the DST rules for its limit.
* **Strictly after, each instant once.** :meth:`Trigger.next_after` never returns its argument
  nor anything before it, whatever the library answers near a DST change; chaining it from any
  instant yields each instant of the schedule exactly once, in order.
* **DST**, as cronsim (and Debian cron) define it. A *fixed-time* expression has a 5-field
  form whose minute and hour fields both do not start with ``*`` (``30 2 * * *``,
  ``0 9 * * MON-FRI``, ``@daily``); every other expression (``*/15 * * * *``, ``0 * * * *``,
  ``@hourly``, any with a seconds field) is a *wildcard* expression.

  - Fixed-time, clocks go forward: a time in the skipped hour runs once, at the first instant
    after the gap. ``30 2 * * *`` runs at 03:00 local (Europe/Berlin 2026-03-29: 01:00Z;
    America/New_York 2026-03-08: 07:00Z). Several times in the gap collapse into that one run.
  - Fixed-time, clocks go back: a time in the repeated hour runs once, not twice, at its first
    occurrence (summer time). ``30 2 * * *`` in Berlin on 2026-10-25 runs at 02:30 CEST
    (00:30Z); ``30 1 * * *`` in New York on 2026-11-01 at 01:30 EDT (05:30Z).
  - Wildcard: evaluated on the real timeline; every real instant whose local time matches runs
    once, so the interval between runs stays regular. Forward: the skipped hour has no runs and
    none are owed (``*/15``: 01:45 CET, then 03:00 CEST, 15 minutes apart; ``0 * * * *``:
    01:00 CET, then 03:00 CEST). Back: the repeated hour runs in both offsets (``*/15``:
    02:00 ... 02:45 CEST then 02:00 ... 02:45 CET, eight runs 15 minutes apart; hourly: 02:00
    CEST and 02:00 CET). An expression whose hour field is restricted but minute field is a
    wildcard (``*/15 2 * * *``) does not run at all on the day the 02:00 hour is skipped.
  - cronsim gives 6-field expressions no fixed-time handling, so a fixed time of day with a
    seconds field (``0 30 2 * * *``) would run twice when clocks go back: it is refused; write
    it with 5 fields (``30 2 * * *``). A seconds field with a wildcard minute or hour is fine.
* **One-shots** (:class:`AtTrigger`) take an aware :class:`~datetime.datetime`; a naive one, or
  a local time that does not exist (skipped by a DST change), is refused. In the repeated hour
  the datetime's ``fold`` says which occurrence (0: the first, as zoneinfo defaults).
* **Bad input** is refused when the trigger is built, naming the timer, the field and cronsim's
  reason. An expression that matches no instant within 50 years of a question (cronsim's
  search limit, e.g. ``0 0 * 2 MON#5`` from 2170) answers ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Final, Protocol, final, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = ["AtTrigger", "CronTrigger", "Trigger"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_NS_PER_US: Final = 1_000
_LAST_NS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_US * _NS_PER_US
_FIRST_NS: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_US * _NS_PER_US

# crontab(5)'s aliases, as Debian expands them.
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS_5: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELDS_6: Final = ("second", *_FIELDS_5)


@runtime_checkable
class Trigger(Protocol):
    """When a calendar timer runs: the one question the core asks, and what listings show."""

    def next_after(self, wall_ns: int) -> int | None:
        """The first instant strictly after ``wall_ns``, or ``None`` when there is none.

        :param wall_ns: ns since the Unix epoch, UTC
        :returns: ns since the Unix epoch, UTC, ``> wall_ns``
        """
        ...

    def instants_after(self, wall_ns: int) -> Iterator[int]:
        """Every instant strictly after ``wall_ns``, in order, each once (ns since the epoch).

        One iterator is much cheaper than chained :meth:`next_after` calls, e.g. to count the
        instants a stall or a wall-clock jump skipped.
        """
        ...

    def upcoming(self, n: int, after_wall_ns: int) -> list[datetime]:
        """The next ``n`` instants after ``after_wall_ns``, as aware datetimes in the timer's zone.

        :raises TypeError: ``n`` is not an int
        :raises ValueError: ``n`` is negative
        """
        ...

    def as_datetime(self, wall_ns: int) -> datetime:
        """The instant ``wall_ns`` as an aware datetime in the timer's zone (for ``Tick.wall``)."""
        ...

    def describe(self) -> str:
        """One line for listings, e.g. ``cron '*/5 * * * *' Europe/Berlin``."""
        ...


@final
class CronTrigger:
    """The instants of a cron expression in a time zone, as cronsim evaluates them.

    :param expr: 5 fields, 6 with seconds first, or an alias (``@hourly``, ``@daily``,
        ``@weekly``, ``@monthly``, ``@yearly``/``@annually``, ``@midnight``)
    :param tz: an IANA zone name (``"Europe/Berlin"``, ``"UTC"``) or a :class:`ZoneInfo`
    :param label: the timer's name, for error messages
    :raises ImportError: cronsim is not installed (``pip install 'aiotimer[cron]'``)
    :raises TypeError: ``expr`` is not a str, ``tz`` neither a str nor a ZoneInfo
    :raises ValueError: a malformed expression or field (with cronsim's reason), an unknown
        zone, an unknown alias or ``@reboot``, or a fixed time of day with a seconds field
    """

    # cronsim reads the expression on each question (cheap: a split and a few sets), so a
    # trigger holds only the text; _fields is the expression with any alias expanded.
    __slots__ = ("_cronsim", "_expr", "_fields", "_label", "_tz")

    def __init__(self, expr: str, tz: str | ZoneInfo, *, label: str) -> None:
        if not isinstance(expr, str):
            raise TypeError(f"timer {label!r}: a cron expression must be a str, got {expr!r}")
        self._label = label
        self._expr = expr
        self._tz = _zone(tz, label)
        self._cronsim = _load_cronsim(label)
        alias = expr.strip().lower()
        if alias == "@reboot":
            raise ValueError(
                f"timer {label!r}: cron expression '@reboot' has no instants: "
                "run it at startup instead"
            )
        if alias.startswith("@") and alias not in _ALIASES:
            raise ValueError(
                f"timer {label!r}: cron expression {expr!r}: unknown alias; "
                f"known: {', '.join(_ALIASES)}"
            )
        fields = _ALIASES.get(alias, expr)
        self._fields = fields
        self._validate(fields)

    def _validate(self, fields: str) -> None:
        from cronsim import CronSimError

        try:
            self._cronsim(fields, _EPOCH.astimezone(self._tz))
        except CronSimError as exc:
            raise ValueError(
                f"timer {self._label!r}: cron expression {self._expr!r} refused by cronsim: "
                f"{_which_field(fields, str(exc))}{exc}"
            ) from None
        parts = fields.split()
        if len(parts) == 6 and not (parts[1].startswith("*") or parts[2].startswith("*")):
            raise ValueError(
                f"timer {self._label!r}: cron expression {self._expr!r}: a seconds field "
                "needs a '*' minute or hour field (cronsim applies no DST rules to 6 fields, "
                "so a fixed time of day would run twice when clocks go back); write the time "
                f"with 5 fields: {' '.join(parts[1:])!r}"
            )

    def __repr__(self) -> str:
        return f"CronTrigger({self._expr!r}, {self._tz.key!r}, label={self._label!r})"

    @property
    def expr(self) -> str:
        """The expression as given."""
        return self._expr

    @property
    def tz(self) -> ZoneInfo:
        """The zone the expression is read in."""
        return self._tz

    def instants_after(self, wall_ns: int) -> Iterator[int]:
        """Every instant strictly after ``wall_ns``, in order, each once (ns since the epoch)."""
        for _, ns in self._runs_after(wall_ns):
            yield ns

    def next_after(self, wall_ns: int) -> int | None:
        """The first instant strictly after ``wall_ns`` (ns since the epoch, UTC), or ``None``."""
        return next(self.instants_after(wall_ns), None)

    def upcoming(self, n: int, after_wall_ns: int) -> list[datetime]:
        """The next ``n`` instants after ``after_wall_ns``, aware, in the timer's zone."""
        _check_count(n, self._label)
        return [when for when, _ in islice(self._runs_after(after_wall_ns), n)]

    def as_datetime(self, wall_ns: int) -> datetime:
        """``wall_ns`` as an aware datetime in the timer's zone."""
        return _datetime(wall_ns, self._label).astimezone(self._tz)

    def describe(self) -> str:
        return f"cron {self._expr!r} {self._tz.key}"

    def _runs_after(self, wall_ns: int) -> Iterator[tuple[datetime, int]]:
        if wall_ns >= _LAST_NS:
            return
        # cronsim drops the sub-second part and starts one second later, so its first answer
        # is a whole second strictly after wall_ns.
        runs = self._cronsim(self._fields, _datetime(wall_ns, self._label).astimezone(self._tz))
        last_ns = wall_ns
        while True:
            try:
                when = next(runs)
            except (StopIteration, OverflowError):  # no match in 50 years; past year 9999
                return
            ns = _ns(when)
            # A fixed-time expression is evaluated on naive local time, which forgets the fold:
            # asked from the second pass of a repeated hour, cronsim may answer the first pass
            # (already run). Each instant once, in order: only later instants count.
            if ns > last_ns:
                last_ns = ns
                yield when.astimezone(self._tz), ns


@final
class AtTrigger:
    """One instant on the wall clock: a one-shot.

    :param when: an aware datetime; its zone is the timer's zone
    :param label: the timer's name, for error messages
    :raises TypeError: ``when`` is not a datetime
    :raises ValueError: ``when`` is naive, or a local time a DST change skips
    """

    __slots__ = ("_label", "_wall_ns", "_when")

    def __init__(self, when: datetime, *, label: str) -> None:
        if not isinstance(when, datetime):
            raise TypeError(f"timer {label!r}: add_at takes a datetime, got {when!r}")
        if when.utcoffset() is None:
            raise ValueError(
                f"timer {label!r}: add_at needs an aware datetime, got the naive "
                f"{when.isoformat()}; give it a zone, e.g. tzinfo=ZoneInfo('Europe/Berlin')"
            )
        if when.astimezone(UTC).astimezone(when.tzinfo) != when:
            # Comparing in the same tzinfo compares wall times: a time in the skipped hour
            # comes back from UTC shifted by the DST change.
            raise ValueError(
                f"timer {label!r}: {when.replace(tzinfo=None).isoformat()} does not exist in "
                f"{_zone_name(when)} (a DST change skips it)"
            )
        self._label = label
        self._when = when
        self._wall_ns = _ns(when)

    def __repr__(self) -> str:
        return f"AtTrigger({self._when.isoformat()!r}, label={self._label!r})"

    @property
    def when(self) -> datetime:
        """The instant, as given."""
        return self._when

    def instants_after(self, wall_ns: int) -> Iterator[int]:
        """The instant, if it is strictly after ``wall_ns``."""
        if self._wall_ns > wall_ns:
            yield self._wall_ns

    def next_after(self, wall_ns: int) -> int | None:
        """The instant if it is strictly after ``wall_ns``, else ``None``."""
        return self._wall_ns if self._wall_ns > wall_ns else None

    def upcoming(self, n: int, after_wall_ns: int) -> list[datetime]:
        """``[when]`` if ``n > 0`` and the instant is after ``after_wall_ns``, else ``[]``."""
        _check_count(n, self._label)
        return [self._when] if n > 0 and self._wall_ns > after_wall_ns else []

    def as_datetime(self, wall_ns: int) -> datetime:
        """``wall_ns`` as an aware datetime in the zone of ``when``."""
        return _datetime(wall_ns, self._label).astimezone(self._when.tzinfo)

    def describe(self) -> str:
        zone = f" {self._when.tzinfo.key}" if isinstance(self._when.tzinfo, ZoneInfo) else ""
        return f"at {self._when.isoformat()}{zone}"


def _load_cronsim(label: str) -> type[CronSim]:
    try:
        from cronsim import CronSim
    except ImportError as exc:
        raise ImportError(
            f"timer {label!r}: cron expressions need the cronsim library: "
            "pip install 'aiotimer[cron]'"
        ) from exc
    return CronSim


def _zone(tz: object, label: str) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(
            f"timer {label!r}: tz must be an IANA zone name such as 'Europe/Berlin' or 'UTC', "
            f"or a ZoneInfo, got {tz!r}"
        )
    try:
        return ZoneInfo(tz)
    except ZoneInfoNotFoundError:
        raise ValueError(f"timer {label!r}: tz: unknown time zone {tz!r}") from None
    except ValueError as exc:  # not a zone key at all: '', an absolute or '..' path
        raise ValueError(f"timer {label!r}: tz: {tz!r} is not a time zone name ({exc})") from None


def _zone_name(when: datetime) -> str:
    zone = when.tzinfo
    return zone.key if isinstance(zone, ZoneInfo) else str(zone)


def _which_field(fields: str, reason: str) -> str:
    """``"minute field '61': "`` when cronsim's reason names one ("Bad minute"), else ``""``."""
    parts = fields.split()
    names = _FIELDS_5 if len(parts) == 5 else _FIELDS_6 if len(parts) == 6 else ()
    for name, part in zip(names, parts, strict=False):
        if reason == f"Bad {name}":
            return f"{name} field {part!r}: "
    if reason == "Wrong number of fields":
        count = f"{len(parts)} field{'' if len(parts) == 1 else 's'}"
        return f"{count} (5, 6 with seconds first, or an alias such as '@hourly'): "
    return ""


def _check_count(n: object, label: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"timer {label!r}: upcoming() takes an int count, got {n!r}")
    if n < 0:
        raise ValueError(f"timer {label!r}: upcoming() takes a count >= 0, got {n}")


def _ns(when: datetime) -> int:
    """An aware datetime as ns since the epoch; exact (datetimes hold microseconds)."""
    return (when - _EPOCH) // _ONE_US * _NS_PER_US


def _datetime(wall_ns: int, label: str) -> datetime:
    """ns since the epoch as an aware UTC datetime, floored to the microsecond."""
    if not _FIRST_NS <= wall_ns <= _LAST_NS:
        raise ValueError(
            f"timer {label!r}: wall time {wall_ns} ns is outside the calendar (years 1 to 9999)"
        )
    return _EPOCH + timedelta(microseconds=wall_ns // _NS_PER_US)
