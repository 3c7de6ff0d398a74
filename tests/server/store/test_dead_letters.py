"""The dead-letter queue (``store.dead_letters``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import select

from server.core.jobs import JobState, TransitionError
from server.core.search import JobSearch
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import DeadLetter, Job, new_id
from tests.server.store.rows import ERROR, finish, new_job, new_user, stored_job


def _dead(db: SyncDatabase, user_id: str, *, task_type: str = "t.echo",
          error: dict[str, Any] | None = None) -> Job:
    job = new_job(db, user_id, task_type=task_type)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, error=error or ERROR, traceback="tb")
    return job


def test_dead_letter_fails_the_job_and_records_the_final_error(db: SyncDatabase) -> None:
    """The job is failed with the error; its entry holds the error, traceback, attempts and
    payload; ``attempts`` overrides the job's count."""
    user_id = new_user(db)
    job = new_job(db, user_id, payload={"k": "v"})
    db.write(store.begin_attempt, job_id=job.id)
    view = db.write(store.dead_letter, job_id=job.id, error=ERROR, traceback="tb1", attempts=3)
    assert view is not None and view.job.state == "failed"
    after = stored_job(db, job.id)
    assert (after.state, after.stage, after.error, after.traceback, after.attempt) == (
        "failed", "failed", ERROR, "tb1", 3)
    entry = db.read(lambda s: s.get(DeadLetter, job.id))
    assert entry is not None
    assert (entry.user_id, entry.type, entry.payload, entry.error_type, entry.error_message,
            entry.traceback, entry.attempts) == (
        user_id, "t.echo", {"k": "v"}, "ValueError", "bad pixels", "tb1", 3)
    assert entry.failed_at is not None


def test_dead_letter_again_updates_the_one_entry(db: SyncDatabase) -> None:
    """A job failed, queued again and failed anew keeps one entry, with the newest error."""
    job = _dead(db, new_user(db))
    db.write(store.transition, job_id=job.id, state=JobState.QUEUED)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, error={"type": "OSError", "message": "disk"},
             traceback=None)
    entries = db.read(lambda s: list(s.scalars(select(DeadLetter)
                                               .where(DeadLetter.job_id == job.id))))
    assert [(e.error_type, e.error_message, e.traceback, e.attempts) for e in entries] == [
        ("OSError", "disk", None, 1)]


def test_dead_letter_of_an_unknown_or_stale_job_records_nothing(db: SyncDatabase) -> None:
    """Unknown job: None. A report on a past attempt: TransitionError. No entry either way."""
    missing = new_id()
    assert db.write(store.dead_letter, job_id=missing, error=ERROR, traceback=None) is None
    assert db.read(lambda s: s.get(DeadLetter, missing)) is None
    job = new_job(db, new_user(db))
    db.write(store.begin_attempt, job_id=job.id)
    with pytest.raises(TransitionError):
        db.write(store.dead_letter, job_id=job.id, error=ERROR, traceback=None, of_attempt=7)
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is None
    assert stored_job(db, job.id).state == "active"


def test_list_dead_letters_pages_and_filters(db: SyncDatabase) -> None:
    """Newest job first with its view; ``before`` pages; type and error text (either field,
    any case) filter."""
    user_id = new_user(db)
    kind, other_kind = f"t.{secrets.token_hex(3)}", f"t.{secrets.token_hex(3)}"
    jobs = [_dead(db, user_id, task_type=kind) for _ in range(3)]
    odd = _dead(db, user_id, task_type=other_kind,
                error={"type": "Timeout" + kind, "message": "Took TOO long"})
    mine = sorted([j.id for j in jobs], reverse=True)

    def ids(limit: int = 10, before: str | None = None, **filters: Any) -> list[str]:
        return [entry.job_id for entry, _ in db.read(
            store.list_dead_letters, limit=limit, before=before, search=JobSearch(**filters))]

    assert ids(type=kind) == mine
    assert ids(limit=2, type=kind) == mine[:2]
    assert ids(type=kind, before=mine[0]) == mine[1:]
    assert ids(error="too LONG") == [odd.id]
    assert ids(error=("timeout" + kind).upper()) == [odd.id]
    assert ids(type=kind, error="took") == []
    entry, view = db.read(store.list_dead_letters, limit=1,
                          search=JobSearch(type=other_kind))[0]
    assert entry.job_id == view.job.id == odd.id and view.job.state == "failed"


def test_dead_letter_count_ids_delete_and_clear(empty: SyncDatabase) -> None:
    """Counted and listed (by job id) across all users; deleted one by one (False when gone)
    or all at once (how many)."""
    db = empty
    assert (db.read(store.dead_letter_count), db.read(store.dead_letter_ids)) == (0, [])
    jobs = [_dead(db, new_user(db)) for _ in range(3)]
    ids = sorted(j.id for j in jobs)
    assert db.read(store.dead_letter_count) == 3
    assert db.read(store.dead_letter_ids) == ids
    assert db.write(store.delete_dead_letter, job_id=ids[0]) is True
    assert db.write(store.delete_dead_letter, job_id=ids[0]) is False
    assert db.read(store.dead_letter_ids) == ids[1:]
    assert stored_job(db, ids[0]).state == "failed"  # the job itself stays
    assert db.write(store.clear_dead_letters) == ids[1:]
    assert (db.read(store.dead_letter_count), db.write(store.clear_dead_letters)) == (0, [])


def test_requeue_failed_queues_a_dead_letter_again(db: SyncDatabase) -> None:
    """Fresh attempts under the same id and a new unsent message; the entry goes; ``undo``
    holds what dead_letter needs to put it back."""
    user_id = new_user(db)
    job = _dead(db, user_id)
    undo, view = db.write(store.requeue_failed, job_id=job.id, user_id=user_id)
    assert undo == {"error": ERROR, "traceback": "tb", "attempts": 1}
    assert view.job.id == job.id
    after = stored_job(db, job.id)
    assert (after.state, after.attempt, after.error) == ("queued", 0, None)
    assert after.message_id != job.message_id and after.enqueued is False
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is None

    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, **undo)
    entry = db.read(lambda s: s.get(DeadLetter, job.id))
    assert entry is not None
    assert (entry.error_type, entry.traceback, entry.attempts) == ("ValueError", "tb", 1)


def test_requeue_failed_refuses_others_and_jobs_not_dead_lettered(db: SyncDatabase) -> None:
    """Another user's job, an unknown job, or one not in the dead-letter queue: None and
    nothing changes."""
    owner = new_user(db)
    job = _dead(db, owner)
    assert db.write(store.requeue_failed, job_id=job.id, user_id=new_user(db)) is None
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is not None
    assert db.write(store.requeue_failed, job_id=new_id()) is None
    db.write(store.delete_dead_letter, job_id=job.id)
    assert db.write(store.requeue_failed, job_id=job.id) is None
    assert stored_job(db, job.id).state == "failed"


def test_requeue_failed_outside_the_dead_letter_queue(db: SyncDatabase) -> None:
    """dead_letters_only=False: a failed job without an entry is requeued; ``undo`` comes
    from the job (or a generic error when it has none). A job that did not fail raises."""
    user_id = new_user(db)
    job = _dead(db, user_id)
    db.write(store.delete_dead_letter, job_id=job.id)
    undo, _ = db.write(store.requeue_failed, job_id=job.id, dead_letters_only=False)
    assert undo == {"error": ERROR, "traceback": "tb", "attempts": 1}
    assert stored_job(db, job.id).state == "queued"

    bare = new_job(db, user_id)
    db.write(store.transition, job_id=bare.id, state=JobState.FAILED)
    undo, _ = db.write(store.requeue_failed, job_id=bare.id, dead_letters_only=False)
    assert undo == {"error": {"type": "Failed", "message": "failed"}, "traceback": None,
                    "attempts": 0}

    done = new_job(db, user_id)
    finish(db, done.id)
    with pytest.raises(TransitionError):
        db.write(store.requeue_failed, job_id=done.id, dead_letters_only=False)
    assert stored_job(db, done.id).state == "completed"
