"""The queries a metrics scrape runs (``server.data.store``), on SQLite in memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import DeadLetter, Job, new_id, utcnow

NOW = utcnow()


@pytest.fixture
def db() -> Iterator[SyncDatabase]:
    database = SyncDatabase("sqlite:///:memory:")
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def _job(db: SyncDatabase, state: str, *, queue: str = "images", task_type: str = "t.x",
         **fields: Any) -> str:
    job_id = new_id()
    db.write(lambda s: s.add(Job(
        id=job_id, user_id="u", type=task_type, queue=queue, state=state, stage=state,
        progress=0, attempt=0, max_attempts=1, priority="normal", payload={}, seq=1,
        **{"created_at": NOW, "updated_at": NOW, **fields})))
    return job_id


def test_unfinished_jobs_by_queue_type_and_state_with_delayed_apart(db: SyncDatabase) -> None:
    _job(db, "queued")
    _job(db, "queued", queue="images.high")
    _job(db, "queued", run_at=NOW + timedelta(minutes=5))  # not due yet: delayed
    _job(db, "queued", run_at=NOW - timedelta(minutes=5))  # due: waiting
    _job(db, "active", task_type="t.y")
    _job(db, "retrying")
    _job(db, "completed", finished_at=NOW)  # history: not counted here
    counts = {(q, t, st): n for q, t, st, n in db.read(store.unfinished_job_counts, now=NOW)}
    assert counts == {("images", "t.x", "queued"): 2, ("images.high", "t.x", "queued"): 1,
                      ("images", "t.x", "delayed"): 1, ("images", "t.y", "active"): 1,
                      ("images", "t.x", "retrying"): 1}


def test_oldest_waiting_is_per_queue_and_only_jobs_due(db: SyncDatabase) -> None:
    _job(db, "queued", created_at=NOW - timedelta(minutes=3))
    _job(db, "queued", run_at=NOW - timedelta(minutes=7))
    _job(db, "queued", run_at=NOW + timedelta(hours=1), created_at=NOW - timedelta(hours=2))
    _job(db, "active", created_at=NOW - timedelta(days=1))
    _job(db, "queued", queue="default", created_at=NOW - timedelta(seconds=5))
    oldest = db.read(store.oldest_waiting, now=NOW)
    assert oldest == {"images": NOW - timedelta(minutes=7),
                      "default": NOW - timedelta(seconds=5)}


def test_finished_jobs_with_recent_completions_and_dead_letters(db: SyncDatabase) -> None:
    _job(db, "completed", finished_at=NOW - timedelta(minutes=1))
    _job(db, "completed", finished_at=NOW - timedelta(minutes=10))
    failed = _job(db, "failed", finished_at=NOW)
    _job(db, "cancelled", queue="default", finished_at=NOW)
    _job(db, "queued")
    db.write(lambda s: s.add(DeadLetter(job_id=failed, user_id="u", type="t.x",
                                        error_type="E", error_message="m", attempts=1)))
    rows, dead = db.read(store.finished_job_counts, since=NOW - timedelta(minutes=5))
    assert sorted(rows) == [("default", "t.x", "cancelled", 1, 0),
                            ("images", "t.x", "completed", 2, 1),
                            ("images", "t.x", "failed", 1, 0)]
    assert dead == 1
