"""Schedules: recurring submissions of a task, and making each firing's job once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.core import quotas
from server.core.jobs import ImageBusy
from server.data.models import Schedule, as_utc, new_id, utcnow
from server.data.store.jobs import create_task_job
from server.data.store.views import JobView


def create_schedule(s: Session, /, *, user_id: str, task_type: str, payload: dict[str, Any],
                    cron: str, timezone: str, priority: str, max_attempts: int,
                    next_run_at: datetime,
                    max_per_user: int = quotas.MAX_SCHEDULES_PER_USER) -> Schedule | None:
    """Record a schedule; None when the user already has ``max_per_user``."""
    count = s.scalar(select(func.count()).select_from(Schedule)
                     .where(Schedule.user_id == user_id))
    if not quotas.has_room(count or 0, max_per_user):
        return None
    schedule = Schedule(id=new_id(), user_id=user_id, type=task_type, payload=payload,
                        cron=cron, timezone=timezone, priority=priority,
                        max_attempts=max_attempts, next_run_at=_utc(next_run_at),
                        created_at=utcnow())
    s.add(schedule)
    s.flush()
    return schedule


def _utc(value: datetime) -> datetime:
    """The same instant in UTC: SQLite stores a datetime's wall-clock time and drops its
    zone, so a next run in the schedule's own zone (cron.next_run) would move."""
    return as_utc(value).astimezone(UTC)


def list_schedules(s: Session, /, *, user_id: str) -> list[Schedule]:
    """The user's schedules, oldest first."""
    return list(s.scalars(select(Schedule).where(Schedule.user_id == user_id)
                          .order_by(Schedule.id)))


def delete_schedule(s: Session, /, *, user_id: str, schedule_id: str) -> bool:
    """Delete one of the user's schedules; False if they have no such schedule."""
    result = s.execute(delete(Schedule).where(Schedule.id == schedule_id,
                                              Schedule.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


def due_schedules(s: Session, /, *, now: datetime, limit: int = 100) -> list[Schedule]:
    """Everyone's schedules due by ``now``, the most overdue first."""
    return list(s.scalars(select(Schedule).where(Schedule.next_run_at <= now)
                          .order_by(Schedule.next_run_at).limit(limit)))


def fire_schedule(s: Session, /, *, schedule_id: str, due: datetime, next_run_at: datetime,
                  queue: str | None, image_field: str | None = None,
                  priority: str | None = None, max_attempts: int | None = None
                  ) -> JobView | None:
    """Make one firing's job and move the schedule on, in one transaction.

    None if that firing was already made (another scheduler moved the schedule on), or
    makes no job: ``queue`` None (its type is gone, or the firing is skipped) or its image
    is busy. A schedule whose image was deleted is deleted too. ``priority`` and
    ``max_attempts``, when given, replace the schedule's own for this job (the rules of
    today, for a schedule made under older ones).
    """
    schedule = s.scalars(select(Schedule).where(Schedule.id == schedule_id)
                         .with_for_update()).first()
    if schedule is None or as_utc(schedule.next_run_at) != as_utc(due):
        return None
    schedule.next_run_at = _utc(next_run_at)
    if queue is None:
        return None
    image_id = schedule.payload.get(image_field) if image_field else None
    try:
        view = create_task_job(s, user_id=schedule.user_id, task_type=schedule.type,
                               queue=queue, payload=dict(schedule.payload),
                               max_attempts=max_attempts or schedule.max_attempts,
                               priority=priority or schedule.priority, image_id=image_id)
    except ImageBusy:
        return None
    if view is None:
        s.delete(schedule)
    return view
