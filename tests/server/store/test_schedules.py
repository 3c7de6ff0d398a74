"""Schedules (``store.schedules``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from server.core import quotas
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, Schedule, as_utc, new_id, utcnow
from tests.server.store.rows import (
    count_rows,
    finish,
    new_upload,
    new_user,
    stored_image,
    stored_job,
)


def _schedule_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_type": "t.echo", "payload": {"text": "tick"}, "cron": "*/5 * * * *",
        "timezone": "UTC", "priority": "normal", "max_attempts": 2,
        "next_run_at": utcnow() + timedelta(minutes=5)}
    fields.update(overrides)
    return fields


def test_schedules_are_stored_per_user_and_capped(db: SyncDatabase) -> None:
    """Every field stored; listed per user in creation order; the 101st is refused; only
    the owner deletes."""
    owner, other = new_user(db), new_user(db)
    first = db.write(store.create_schedule, user_id=owner,
                     **_schedule_fields(priority="high", cron="0 * * * *"))
    assert first is not None
    stored = db.read(store.list_schedules, user_id=owner)
    assert [(s.id, s.type, s.payload, s.cron, s.timezone, s.priority, s.max_attempts)
            for s in stored] == [(first.id, "t.echo", {"text": "tick"}, "0 * * * *", "UTC",
                                  "high", 2)]

    def fill(s: Session) -> list[Schedule | None]:
        return [store.create_schedule(s, user_id=owner, **_schedule_fields())
                for _ in range(quotas.MAX_SCHEDULES_PER_USER - 1)]

    assert all(db.write(fill))
    assert db.write(store.create_schedule, user_id=owner, **_schedule_fields()) is None
    assert db.write(store.create_schedule, user_id=other, **_schedule_fields()) is not None
    assert len(db.read(store.list_schedules, user_id=owner)) == 100

    assert db.write(store.delete_schedule, user_id=other, schedule_id=first.id) is False
    assert db.write(store.delete_schedule, user_id=owner, schedule_id=first.id) is True
    assert db.write(store.delete_schedule, user_id=owner, schedule_id=first.id) is False
    assert first.id not in {s.id for s in db.read(store.list_schedules, user_id=owner)}
    assert len(db.read(store.list_schedules, user_id=other)) == 1


def test_a_schedules_next_run_keeps_its_instant_whatever_the_time_zone(
        empty: SyncDatabase) -> None:
    """A next run given in the schedule's own time zone (as cron.next_run returns it) is the
    same instant when read back, and falls due at that instant, on every backend."""
    db = empty
    paris = datetime(2030, 1, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 08:00 UTC
    schedule = db.write(store.create_schedule, user_id=new_user(db),
                        **_schedule_fields(timezone="Europe/Paris", next_run_at=paris))
    assert schedule is not None
    stored = db.read(store.list_schedules, user_id=schedule.user_id)[0]
    assert as_utc(stored.next_run_at) == paris
    due = [s.id for s in db.read(store.due_schedules,
                                 now=datetime(2030, 1, 1, 8, 30, tzinfo=UTC))]
    assert due == [schedule.id]
    later = datetime(2030, 1, 2, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=stored.next_run_at,
                    next_run_at=later, queue="default") is not None
    moved = db.read(store.list_schedules, user_id=schedule.user_id)[0]
    assert as_utc(moved.next_run_at) == later


def test_due_schedules_lists_the_due_ones_earliest_first(empty: SyncDatabase) -> None:
    """Those whose next run is at or before ``now``, earliest first, at most ``limit``."""
    db = empty
    user_id, now = new_user(db), utcnow().replace(microsecond=0)
    made = {}
    for minutes in (-3, -10, 0, 5, -1):
        schedule = db.write(store.create_schedule, user_id=user_id,
                            **_schedule_fields(next_run_at=now + timedelta(minutes=minutes)))
        assert schedule is not None
        made[minutes] = schedule.id
    assert [s.id for s in db.read(store.due_schedules, now=now)] == [
        made[-10], made[-3], made[-1], made[0]]
    assert [s.id for s in db.read(store.due_schedules, now=now, limit=2)] == [
        made[-10], made[-3]]
    assert db.read(store.due_schedules, now=now - timedelta(hours=1)) == []


def test_fire_schedule_makes_the_job_and_moves_on_once(db: SyncDatabase) -> None:
    """One queued job with the schedule's type, payload, priority and attempts; the next
    run is stored; firing the same due time again makes nothing."""
    user_id = new_user(db)
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    following = due + timedelta(minutes=5)
    schedule = db.write(store.create_schedule, user_id=user_id,
                        **_schedule_fields(priority="low", next_run_at=due))
    assert schedule is not None
    view = db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following, queue="default.low")
    assert view is not None
    job = stored_job(db, view.job.id)
    assert (job.user_id, job.type, job.queue, job.priority, job.max_attempts, job.payload,
            job.state) == (user_id, "t.echo", "default.low", "low", 2, {"text": "tick"},
                           "queued")
    moved = db.read(store.list_schedules, user_id=user_id)[0]
    assert as_utc(moved.next_run_at) == following
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following + timedelta(minutes=5), queue="default.low") is None
    assert as_utc(db.read(store.list_schedules, user_id=user_id)[0].next_run_at) == following
    assert count_rows(db, Job, Job.user_id == user_id) == 1
    assert db.write(store.fire_schedule, schedule_id=new_id(), due=due,
                    next_run_at=following, queue="default") is None


def test_fire_schedule_of_a_gone_type_moves_on_without_a_job(db: SyncDatabase) -> None:
    """queue None (the type is gone): None, no job, but the schedule moves on."""
    user_id = new_user(db)
    due = utcnow().replace(microsecond=0)
    schedule = db.write(store.create_schedule, user_id=user_id,
                        **_schedule_fields(next_run_at=due))
    assert schedule is not None
    following = due + timedelta(hours=1)
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following, queue=None) is None
    assert as_utc(db.read(store.list_schedules, user_id=user_id)[0].next_run_at) == following
    assert count_rows(db, Job, Job.user_id == user_id) == 0


def test_fire_schedule_on_an_image(db: SyncDatabase) -> None:
    """The image named in the payload: busy → no job (moved on); idle → a job on it;
    deleted → the schedule is deleted too."""
    user_id = new_user(db)
    upload = new_upload(db, user_id)
    assert upload.image is not None
    image_id = upload.image.id
    due = utcnow().replace(microsecond=0)
    schedule = db.write(store.create_schedule, user_id=user_id, **_schedule_fields(
        task_type="image.reprocess", payload={"image_id": image_id}, next_run_at=due))
    assert schedule is not None

    def fire(at: datetime) -> store.JobView | None:
        return db.write(store.fire_schedule, schedule_id=schedule.id, due=at,
                        next_run_at=at + timedelta(minutes=1), queue="images",
                        image_field="image_id")

    assert fire(due) is None  # the upload's job is still waiting
    assert count_rows(db, Job, Job.user_id == user_id) == 1
    finish(db, upload.job.id)
    view = fire(due + timedelta(minutes=1))
    assert view is not None and view.job.image_id == image_id
    assert stored_image(db, image_id).job_id == view.job.id  # type: ignore[union-attr]
    finish(db, view.job.id)
    db.write(store.delete_image, image_id=image_id, user_id=None)
    assert fire(due + timedelta(minutes=2)) is None
    assert db.read(store.list_schedules, user_id=user_id) == []
