"""Next firing times of cron schedules: in the schedule's zone, and across DST changes.

Pure: no processes. Every expected instant is written out in UTC, with the local time it
stands for beside it, so a zone mix-up (or a DST slip) changes the answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from server.core import cron
from server.core.cron import next_run
from server.core.errors import ApiError
from server.web.http.error_handlers import status_of

NEW_YORK = "America/New_York"  # 2026: forward 8 March 02:00 EST, back 1 November 02:00 EDT
BERLIN = "Europe/Berlin"  # 2026: forward 29 March 02:00 CET, back 25 October 03:00 CEST


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def firings(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` firings after ``after``, each asked for after the one before
    (as the scheduler does), in UTC."""
    found = []
    for _ in range(count):
        after = next_run(expression, timezone, after)
        found.append(after.astimezone(UTC))
    return found


def test_the_answer_is_in_the_schedules_zone_and_given_in_utc() -> None:
    after = utc(2026, 1, 9, 12, 0)  # a Friday: 07:00 in New York, 13:00 in Berlin
    fire = next_run("0 9 * * *", NEW_YORK, after)
    assert fire == utc(2026, 1, 9, 14, 0)  # 09:00 EST
    # In UTC, not in the zone: SQLite stores no offset and reads times back as UTC.
    assert fire.utcoffset() == timedelta(0)
    assert next_run("0 9 * * *", "UTC", after) == utc(2026, 1, 10, 9, 0)
    assert next_run("0 9 * * *", BERLIN, after) == utc(2026, 1, 10, 8, 0)  # 09:00 CET
    # The weekday is New York's: Friday 23:00 there is Saturday 04:00 UTC.
    assert next_run("0 23 * * 5", NEW_YORK, after) == utc(2026, 1, 10, 4, 0)
    assert next_run("0 23 * * 5", "UTC", after) == utc(2026, 1, 9, 23, 0)
    # Summer time: the same expression, an hour earlier in UTC.
    assert next_run("0 9 * * *", NEW_YORK, utc(2026, 7, 1, 0, 0)) == utc(2026, 7, 1, 13, 0)


def test_strictly_after_and_the_same_instant_for_any_zone_aware_input() -> None:
    at_fire = utc(2026, 1, 9, 14, 0)
    assert next_run("0 9 * * *", NEW_YORK, at_fire) == utc(2026, 1, 10, 14, 0)
    assert next_run("0 9 * * *", NEW_YORK, at_fire - timedelta(microseconds=1)) == at_fire
    as_paris = at_fire.astimezone(ZoneInfo("Europe/Paris")) - timedelta(seconds=30)
    assert next_run("0 9 * * *", NEW_YORK, as_paris) == at_fire


def test_spring_forward_a_time_that_does_not_exist_fires_once_shifted_by_the_gap() -> None:
    # 8 March 2026 in New York: 01:59:59 EST is followed by 03:00:00 EDT; 02:30 never is.
    before = utc(2026, 3, 8, 5, 0)  # 00:00 EST
    assert firings("30 2 * * *", NEW_YORK, before, 3) == [
        utc(2026, 3, 8, 7, 30),  # "02:30 EST" = 03:30 EDT, the gap's hour later
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT: no second firing, no day skipped
        utc(2026, 3, 10, 6, 30),
    ]
    # The same answer when asked just after the clocks jumped (03:10 EDT) ...
    assert next_run("30 2 * * *", NEW_YORK, utc(2026, 3, 8, 7, 10)) == utc(2026, 3, 8, 7, 30)
    # ... and none that day once it fired.
    assert next_run("30 2 * * *", NEW_YORK, utc(2026, 3, 8, 7, 30)) == utc(2026, 3, 9, 6, 30)
    # Two missing times: both fire (APScheduler alone dropped 02:45).
    assert firings("15,45 2 * * *", NEW_YORK, before, 3) == [
        utc(2026, 3, 8, 7, 15), utc(2026, 3, 8, 7, 45), utc(2026, 3, 9, 6, 15)]
    # Hourly: 02:00 does not exist, and the hour goes by once.
    assert firings("0 * * * *", NEW_YORK, before, 4) == [
        utc(2026, 3, 8, 6, 0),  # 01:00 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT
        utc(2026, 3, 8, 8, 0),  # 04:00 EDT
        utc(2026, 3, 8, 9, 0),
    ]
    # Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST.
    assert firings("30 2 * * *", BERLIN, utc(2026, 3, 28, 23, 0), 2) == [
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_fall_back_a_time_that_happens_twice_fires_once_at_the_first() -> None:
    # 1 November 2026 in New York: 01:00-01:59 happens in EDT, then again in EST.
    before = utc(2026, 11, 1, 4, 0)  # 00:00 EDT
    assert firings("30 1 * * *", NEW_YORK, before, 3) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; not again at 01:30 EST (06:30 UTC)
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
        utc(2026, 11, 3, 6, 30),
    ]
    # Asked during the second 01:00-01:59, the 01:30 of that day is already past.
    assert next_run("30 1 * * *", NEW_YORK, utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)
    # Wildcard schedules keep their pace in real time: both occurrences fire.
    assert firings("0 * * * *", NEW_YORK, before, 4) == [
        utc(2026, 11, 1, 5, 0),  # 01:00 EDT
        utc(2026, 11, 1, 6, 0),  # 01:00 EST
        utc(2026, 11, 1, 7, 0),  # 02:00 EST
        utc(2026, 11, 1, 8, 0),
    ]
    assert firings("*/30 1 * * *", NEW_YORK, before, 5) == [
        utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30),  # EDT
        utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 30),  # EST
        utc(2026, 11, 2, 6, 0),
    ]
    # Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    assert firings("30 2 * * *", BERLIN, utc(2026, 10, 24, 22, 0), 2) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 26, 1, 30),  # 02:30 CET, the next day
    ]


def test_day_of_week_is_crontabs_and_either_day_field_may_match() -> None:
    monday = utc(2026, 1, 5, 12, 0)  # 13:00 in Paris
    # The README's "every weekday at 07:30 in Paris": Tuesday to Friday, then Monday again
    # (APScheduler alone counts 0 as Monday: it read 1-5 as Tuesday to Saturday).
    assert firings("30 7 * * 1-5", "Europe/Paris", monday, 5) == [
        utc(2026, 1, 6, 6, 30), utc(2026, 1, 7, 6, 30), utc(2026, 1, 8, 6, 30),
        utc(2026, 1, 9, 6, 30), utc(2026, 1, 12, 6, 30)]
    sunday_noon = utc(2026, 1, 11, 12, 0)
    for sunday in ("0", "7", "sun", "SUN"):
        assert next_run(f"0 12 * * {sunday}", "UTC", monday) == sunday_noon, sunday
    assert next_run("0 12 * * mon-fri", "UTC", monday) == utc(2026, 1, 6, 12, 0)
    # Every other day of the week from Sunday: Sunday, Tuesday, Thursday, Saturday.
    assert firings("0 12 * * */2", "UTC", monday, 4) == [
        utc(2026, 1, 6, 12, 0), utc(2026, 1, 8, 12, 0), utc(2026, 1, 10, 12, 0),
        sunday_noon]
    # Both day fields restricted: the 13th of the month or any Friday (crontab's rule).
    assert firings("0 0 13 * 5", "UTC", monday, 4) == [
        utc(2026, 1, 9, 0, 0), utc(2026, 1, 13, 0, 0), utc(2026, 1, 16, 0, 0),
        utc(2026, 1, 23, 0, 0)]
    # One of them a wildcard: the other alone decides.
    assert next_run("0 0 * * 5", "UTC", monday) == utc(2026, 1, 9, 0, 0)
    assert next_run("0 0 13 * *", "UTC", monday) == utc(2026, 1, 13, 0, 0)


@pytest.mark.parametrize(("expression", "timezone", "code"), [
    ("61 * * * *", "UTC", "invalid_cron"),
    ("* * *", "UTC", "invalid_cron"),
    ("0 0 31 2 *", "UTC", "invalid_cron"),  # valid fields, but 31 February never comes
    ("0 0 * * 8", "UTC", "invalid_cron"),
    ("0 0 * * 5-1", "UTC", "invalid_cron"),
    ("0 0 * * */0", "UTC", "invalid_cron"),
    ("0 0 * * funday", "UTC", "invalid_cron"),
    ("0 * * * *", "Mars/Olympus", "invalid_timezone"),
    ("0 * * * *", "../etc/passwd", "invalid_timezone"),
])
def test_bad_expressions_and_zones_are_a_422(expression: str, timezone: str,
                                             code: str) -> None:
    with pytest.raises(ApiError) as raised:
        next_run(expression, timezone, utc(2026, 1, 1, 0, 0))
    assert (status_of(raised.value), raised.value.code) == (422, code)


def test_housekeeping_crons_read_the_same_crontab_in_utc() -> None:
    """The scheduler's own crons (CLEANUP_CRON, PURGE_CRON) follow the same rules as
    users' schedules: 0 is Sunday (APScheduler's own numbering would make it Monday)."""
    trigger = cron.utc_trigger("30 3 * * 0")
    after = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # a Friday
    fire = trigger.get_next_fire_time(None, after)
    assert fire == datetime(2026, 12, 6, 3, 30, tzinfo=UTC)  # Sunday
    either = cron.utc_trigger("0 0 1 * 1")  # the 1st, or any Monday
    assert either.get_next_fire_time(None, after) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("expression", "shortest_s"), [
    ("* * * * *", 60),
    ("*/5 * * * *", 300),
    ("*/7 * * * *", 240),  # :56 to the next hour's :00
    ("0,1 * * * *", 60),
    ("0,58 0,23 * * *", 120),  # 23:58 to the next day's 00:00
    ("*/5 9-17 * * 1-5", 300),
    ("0 9 * * *", 86_400),
    ("0 0 1 1 *", 86_400),  # yearly: no two firings come closer than a day anyway
])
def test_shortest_interval_covers_a_whole_day_and_the_step_into_the_next(
        expression: str, shortest_s: int) -> None:
    assert cron.shortest_interval(expression) == timedelta(seconds=shortest_s)


def test_a_schedule_firing_more_often_than_the_minimum_is_a_422() -> None:
    for expression in ("* * * * *", "*/2 * * * *", "*/7 * * * *", "0,58 0,23 * * *"):
        with pytest.raises(ApiError) as raised:
            cron.check_interval(expression, 300)
        assert (status_of(raised.value), raised.value.code) == (422, "cron_too_frequent")
        assert "300 s" in raised.value.message
    for expression in ("*/5 * * * *", "0 * * * *", "30 7 * * 1-5"):
        cron.check_interval(expression, 300)
    cron.check_interval("* * * * *", 0)  # 0: no minimum
    with pytest.raises(ApiError) as raised:
        cron.check_interval("61 * * * *", 300)
    assert raised.value.code == "invalid_cron"
