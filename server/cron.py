"""Cron expressions: validation and the next firing time (APScheduler's CronTrigger)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from server.errors import ApiError


def trigger(expression: str, timezone: str) -> CronTrigger:
    """A trigger for a 5-field cron expression in an IANA zone; 422 when either is bad."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_timezone", f"unknown time zone {timezone!r}") from None
    try:
        return CronTrigger.from_crontab(expression, timezone=zone)
    except ValueError as exc:
        raise ApiError(422, "invalid_cron", f"bad cron expression: {exc}") from None


def next_run(expression: str, timezone: str, after: datetime) -> datetime:
    """The first firing strictly after ``after`` (an aware datetime)."""
    cron = trigger(expression, timezone)
    fire: datetime | None = cron.get_next_fire_time(None, after)
    if fire is not None and fire <= after:  # it may return ``after`` itself on a match
        fire = cron.get_next_fire_time(fire, fire)
    if fire is None:
        raise ApiError(422, "invalid_cron", "the cron expression never fires")
    return fire
