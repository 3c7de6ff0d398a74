"""Cron expressions: validation and the next firing time.

Standard 5-field crontab (minute, hour, day of month, month, day of week), as in
``man 5 crontab``: day of week 0 or 7 is Sunday, and when both the day of month and the
day of week are restricted (neither starts with ``*``), a day matching either fires.
APScheduler's CronTrigger matches the fields (its own numbering has 0 = Monday, and it
requires both days to match, so the expression is translated first).

The fields are matched against the *wall-clock time* of the schedule's zone; each matching
wall-clock time becomes one instant, returned in UTC (SQLite keeps no offset: a zone-aware
value would be stored as local time and read back as UTC). At daylight-saving changes
(compare Vixie cron, ``man 8 cron``):

- Clocks go forward: a wall-clock time that does not exist that day (02:30 when 02:00
  jumps to 03:00) fires shifted forward by the length of the gap (03:30 new time). It
  fires once, whenever the question is asked, and is never skipped.
- Clocks go back: a wall-clock time that happens twice fires at its first occurrence only,
  so a daily job runs once that day; unless the minute or hour field is a wildcard (``*``
  or ``*/n``): such schedules fire in both occurrences, so hourly and more frequent ones
  keep their pace in real time.

(APScheduler's CronTrigger in the zone fired a daily 01:30 twice on the day clocks go
back, and of ``15,45 2 * * *`` fired 02:15 but dropped 02:45 on the day they go forward.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from server.core.errors import ApiError, Problem

# Longer than any daylight-saving shift: the offsets within this of an instant tell how far
# wall-clock time and UTC can move apart near it.
_NEAR = timedelta(hours=3)
# Crontab's day-of-week numbers (7 is Sunday again).
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(Problem.UNPROCESSABLE, "invalid_timezone",
                       f"unknown time zone {timezone!r}") from None


def _day(text: str) -> int:
    name = text.lower()
    if name in _DAYS:
        return _DAYS.index(name)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"bad day of week {text!r}")


def _weekdays(field: str) -> str:
    """Crontab's day-of-week field (numbers, names, ranges, steps) as a list of day names,
    which APScheduler reads the same way."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if base == "*":
            first, last = 0, 6
        else:
            low, dash, high = base.partition("-")
            first = _day(low)
            last = _day(high) if dash else (6 if slash else first)
        if first > last:
            raise ValueError(f"bad day-of-week range {part!r}")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAYS[day] for day in sorted(days))


def _wall_triggers(expression: str) -> list[CronTrigger]:
    """Triggers that walk through the matching wall-clock times (naive datetimes dressed as
    UTC, a zone without daylight saving); a time fires when any of them matches it."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    weekdays = _weekdays(weekday)

    def make(days: str, of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=days, month=month,
                           day_of_week=of_week, timezone=UTC)

    if day.startswith("*") or weekday.startswith("*"):
        return [make(day, weekdays)]
    return [make(day, "*"), make("*", weekdays)]


def utc_trigger(expression: str) -> BaseTrigger:
    """An APScheduler trigger firing on ``expression`` read in UTC (no daylight saving),
    with this module's crontab rules: for the scheduler's own housekeeping crons."""
    walls, _ = validate(expression, "UTC")
    return walls[0] if len(walls) == 1 else OrTrigger(walls)


def validate(expression: str, timezone: str) -> tuple[list[CronTrigger], ZoneInfo]:
    """The wall-clock triggers and the zone; 422 when the expression or the zone is bad."""
    zone = _zone(timezone)
    try:
        return _wall_triggers(expression), zone
    except ValueError as exc:
        raise ApiError(Problem.UNPROCESSABLE, "invalid_cron",
                       f"bad cron expression: {exc}") from None


def _spread(zone: ZoneInfo, instant: datetime) -> timedelta:
    """How far the zone's UTC offset changes within ``_NEAR`` of ``instant`` (0 away from
    daylight-saving changes)."""
    offsets = [(instant + shift).astimezone(zone).utcoffset() or timedelta(0)
               for shift in (-_NEAR, timedelta(0), _NEAR)]
    return max(offsets) - min(offsets)


def _instants(wall: datetime, zone: ZoneInfo, both_occurrences: bool) -> list[datetime]:
    """The instants (UTC) at which the naive wall-clock time ``wall`` fires in ``zone``."""
    # fold=0 takes the offset from before a change: the first of two occurrences, and for
    # a time in a gap the instant the gap's length after it (PEP 495).
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return [first, second] if both_occurrences and second > first else [first]


def next_run(expression: str, timezone: str, after: datetime) -> datetime:
    """The first firing strictly after ``after`` (an aware datetime), in UTC."""
    walls, zone = validate(expression, timezone)
    minute, hour = expression.split()[:2]
    both_occurrences = minute.startswith("*") or hour.startswith("*")
    after = after.astimezone(UTC)
    # Wall-clock times earlier than this cannot fire after ``after``.
    cursor = after.astimezone(zone).replace(tzinfo=None) - _spread(zone, after)
    best: datetime | None = None
    horizon: datetime | None = None  # wall-clock times past this cannot fire before best
    while True:
        probe = cursor.replace(tzinfo=UTC)
        matches = [m for m in (w.get_next_fire_time(None, probe) for w in walls) if m]
        if not matches:
            break
        wall = min(matches).replace(tzinfo=None)
        if horizon is not None and wall > horizon:
            break
        for instant in _instants(wall, zone, both_occurrences):
            if instant > after and (best is None or instant < best):
                best = instant
                horizon = (instant.astimezone(zone).replace(tzinfo=None)
                           + _spread(zone, instant))
        cursor = wall + timedelta(seconds=1)
    if best is None:
        raise ApiError(Problem.UNPROCESSABLE, "invalid_cron", "the cron expression never fires")
    return best


def shortest_interval(expression: str, *, below: timedelta | None = None) -> timedelta:
    """The shortest wall-clock time between two firings of ``expression``.

    Only the minute and hour fields decide it: they give the same times every day, so
    one day's times are walked, and then the step from a day's last time to the next
    day's first, as if two days in a row fired (conservative: for most expressions some
    do). Stops early once a step shorter than ``below`` is found. Clock changes aside:
    the day clocks go forward, two firings either side of the gap can come closer once.
    """
    validate(expression, "UTC")
    minute, hour = expression.split()[:2]
    daily = CronTrigger(minute=minute, hour=hour, timezone=UTC)
    day = datetime(2001, 1, 1, tzinfo=UTC)  # any day: the times repeat daily
    first: datetime | None = daily.get_next_fire_time(None, day)
    assert first is not None  # a minute and an hour field always match some time of day
    previous = first
    shortest = timedelta(days=1)
    while True:
        fire: datetime | None = daily.get_next_fire_time(None, previous + timedelta(seconds=1))
        assert fire is not None  # it fires every day
        shortest = min(shortest, fire - previous)
        if fire >= first + timedelta(days=1) or (below is not None and shortest < below):
            return shortest
        previous = fire


def check_interval(expression: str, minimum_s: int) -> None:
    """422 ``cron_too_frequent`` when two firings can be closer than ``minimum_s``
    (SCHEDULE_MIN_INTERVAL_S; 0 allows any)."""
    if minimum_s <= 0:
        return
    minimum = timedelta(seconds=minimum_s)
    shortest = shortest_interval(expression, below=minimum)
    if shortest < minimum:
        raise ApiError(Problem.UNPROCESSABLE, "cron_too_frequent",
                       f"{expression!r} can fire {int(shortest.total_seconds())} s apart; "
                       f"schedules here fire at most once every {minimum_s} s")
