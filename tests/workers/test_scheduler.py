"""Firing users' schedules under the rules of now (workers.scheduler.fire_due), whatever the
rules were when a schedule was made: on an in-memory SQLite database, no process."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from server.core.signing import hash_token
from server.core.tasks import WEBHOOK_DELIVER
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, as_utc, utcnow
from server.infra.settings import Settings
from workers.scheduler import fire_due
from workers.tasks import registry as tasks

ADMIN_TOKEN = "scheduler-test-admin-token"
REGISTRY = tasks.load(include_test_tasks=False)


@pytest.fixture
def db(memory_db: SyncDatabase) -> SyncDatabase:
    return memory_db


class Submitted:
    """The reporter's ``submit``: the jobs a firing made."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, view: store.JobView) -> None:
        self.jobs.append(view.job)


def _fire(db: SyncDatabase, **settings: Any) -> list[Job]:
    made = Submitted()
    ctx = SimpleNamespace(db=db, reporter=made, settings=Settings(
        admin_token=ADMIN_TOKEN, **{"schedule_min_interval_s": 300,
                                    "webhook_max_in_flight_per_user": 3,
                                    "email_allowed_recipients": ("@test.example",),
                                    **settings}))
    fire_due(ctx, REGISTRY)  # type: ignore[arg-type]
    return made.jobs


def _user(db: SyncDatabase, *, token_hash: str | None = None) -> str:
    return db.write(store.create_user, token_hash=token_hash or secrets.token_hex(32)).id


def _due(db: SyncDatabase, user_id: str, task_type: str, payload: dict[str, Any], *,
         cron: str = "0 * * * *", priority: str = "normal", max_attempts: int = 2) -> str:
    """A schedule due now, as one made under older rules may be stored."""
    schedule = db.write(store.create_schedule, user_id=user_id, task_type=task_type,
                        payload=payload, cron=cron, timezone="UTC", priority=priority,
                        max_attempts=max_attempts,
                        next_run_at=utcnow() - timedelta(seconds=1))
    assert schedule is not None
    return schedule.id


HOOK = {"url": "https://hooks.example/in"}
MAIL = {"to": "ana@test.example", "subject": "Daily"}


def test_attempts_are_cut_to_the_types_ceiling(db: SyncDatabase) -> None:
    user_id = _user(db)
    _due(db, user_id, "webhook.deliver", HOOK, max_attempts=20)
    _due(db, user_id, "email.send", MAIL, max_attempts=20)
    made = {job.type: job.max_attempts for job in _fire(db)}
    assert made == {"webhook.deliver": 5, "email.send": 3}
    _due(db, user_id, "email.send", MAIL, max_attempts=2)  # fewer: kept
    assert [job.max_attempts for job in _fire(db)] == [2]


def test_a_plain_users_high_fires_as_normal_an_admins_stays_high(db: SyncDatabase) -> None:
    plain = _user(db)
    marked = _user(db)
    db.write(store.set_admin, user_id=marked)
    env_admin = _user(db, token_hash=hash_token(ADMIN_TOKEN))  # ADMIN_TOKEN's user
    for user_id in (plain, marked, env_admin):
        _due(db, user_id, "email.send", MAIL, priority="high")
    made = {job.user_id: (job.priority, job.queue) for job in _fire(db)}
    assert made == {plain: ("normal", "email"), marked: ("high", "email.high"),
                    env_admin: ("high", "email.high")}


def test_a_schedule_now_too_frequent_is_deleted_not_fired(
        db: SyncDatabase, caplog: pytest.LogCaptureFixture) -> None:
    user_id = _user(db)
    every_minute = _due(db, user_id, "email.send", MAIL, cron="* * * * *")
    hourly = _due(db, user_id, "email.send", MAIL, cron="0 * * * *")
    with caplog.at_level(logging.WARNING, logger="workers.scheduler"):
        made = _fire(db)
    assert len(made) == 1
    assert [s.id for s in db.read(store.list_schedules, user_id=user_id)] == [hourly]
    assert any(every_minute in r.getMessage() and "SCHEDULE_MIN_INTERVAL_S" in r.getMessage()
               for r in caplog.records)
    # With no minimum (0), any cron fires.
    _due(db, user_id, "email.send", MAIL, cron="* * * * *")
    assert len(_fire(db, schedule_min_interval_s=0)) == 1


def test_an_email_schedule_to_a_recipient_no_longer_allowed_is_deleted_not_fired(
        db: SyncDatabase, caplog: pytest.LogCaptureFixture) -> None:
    # It fired on every due time, and each job failed for good (a dead letter each time).
    plain = _user(db)
    admin = _user(db, token_hash=hash_token(ADMIN_TOKEN))
    elsewhere = {**MAIL, "to": "eve@else.example"}
    refused = _due(db, plain, "email.send", elsewhere)
    allowed = _due(db, plain, "email.send", MAIL)
    admins = _due(db, admin, "email.send", elsewhere)  # admins may mail anyone
    relay = _due(db, admin, "email.send", {**MAIL, "to": "a@test.example,postmaster"})
    with caplog.at_level(logging.WARNING, logger="workers.scheduler"):
        made = _fire(db)
    assert sorted((job.user_id, job.payload["to"]) for job in made) == sorted(
        [(plain, MAIL["to"]), (admin, "eve@else.example")])
    assert [s.id for s in db.read(store.list_schedules, user_id=plain)] == [allowed]
    assert [s.id for s in db.read(store.list_schedules, user_id=admin)] == [admins]
    assert any(refused in r.getMessage() and "EMAIL_ALLOWED_RECIPIENTS" in r.getMessage()
               for r in caplog.records)
    assert any(relay in r.getMessage() and "exactly one address" in r.getMessage()
               for r in caplog.records)


def test_a_webhook_firing_is_skipped_while_its_owner_is_at_the_delivery_cap(
        db: SyncDatabase, caplog: pytest.LogCaptureFixture) -> None:
    user_id = _user(db)
    for _ in range(3):  # webhook_max_in_flight_per_user here
        db.write(store.create_job, user_id=user_id, task_type=WEBHOOK_DELIVER.name,
                 queue=WEBHOOK_DELIVER.queue, payload=HOOK, max_attempts=5)
    schedule_id = _due(db, user_id, "webhook.deliver", HOOK)
    _due(db, user_id, "email.send", MAIL)  # other types fire as ever
    with caplog.at_level(logging.WARNING, logger="workers.scheduler"):
        made = _fire(db)
    assert [job.type for job in made] == ["email.send"]
    assert any(schedule_id in r.getMessage() and "WEBHOOK_MAX_IN_FLIGHT_PER_USER"
               in r.getMessage() for r in caplog.records)
    # Skipped, not held back: moved on to its next run, as a firing is.
    (moved,) = [s for s in db.read(store.list_schedules, user_id=user_id)
                if s.id == schedule_id]
    assert as_utc(moved.next_run_at) > utcnow()
    # Under the cap, a webhook schedule fires.
    _due(db, user_id, "webhook.deliver", HOOK)
    assert [job.type for job in _fire(db, webhook_max_in_flight_per_user=4)] == [
        "webhook.deliver"]
