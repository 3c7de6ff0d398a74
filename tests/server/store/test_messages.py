"""Each job's message and the sweeper's reads (``store.messages``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import uuid

from server.core.jobs import JobState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, new_id
from tests.server.store.rows import ago, finish, new_job, new_user, set_columns, stored_job


def test_new_message_id_is_a_fresh_uuid4() -> None:
    """A different version-4 UUID string every time."""
    ids = {store.new_message_id() for _ in range(50)}
    assert len(ids) == 50 and all(uuid.UUID(i).version == 4 for i in ids)


def test_mark_enqueued_marks_only_the_current_message(db: SyncDatabase) -> None:
    """Sent: the job's current message id marks it; an older one does not; unknown is a no-op."""
    job = new_job(db, new_user(db))
    db.write(store.mark_enqueued, job_id=job.id, message_id=store.new_message_id())
    assert stored_job(db, job.id).enqueued is False
    db.write(store.mark_enqueued, job_id=job.id, message_id=str(job.message_id))
    assert stored_job(db, job.id).enqueued is True
    db.write(store.mark_enqueued, job_id=new_id(), message_id=str(job.message_id))


def test_mark_enqueued_many_marks_those_whose_message_is_current(db: SyncDatabase) -> None:
    """Each job is marked only if the id sent is its current message id."""
    user_id = new_user(db)
    sent, stale, untouched = new_job(db, user_id), new_job(db, user_id), new_job(db, user_id)
    db.write(store.mark_enqueued_many, sent={sent.id: str(sent.message_id),
                                             stale.id: store.new_message_id(),
                                             new_id(): store.new_message_id()})
    assert [stored_job(db, j.id).enqueued for j in (sent, stale, untouched)] == [True, False, False]


def test_unsent_jobs_lists_waiting_jobs_whose_message_never_left(empty: SyncDatabase) -> None:
    """Queued or retrying, not enqueued, unchanged since the cutoff; by id, at most limit."""
    db = empty
    user_id, old = new_user(db), ago(minutes=5)
    queued, retrying, sent, recent, running = (new_job(db, user_id) for _ in range(5))
    db.write(store.begin_attempt, job_id=retrying.id)
    db.write(store.transition, job_id=retrying.id, state=JobState.RETRYING)
    db.write(store.mark_enqueued, job_id=sent.id, message_id=str(sent.message_id))
    db.write(store.begin_attempt, job_id=running.id)
    for job in (queued, retrying, sent, running):
        set_columns(db, Job, job.id, updated_at=old)

    cutoff = ago(minutes=1)
    assert [j.id for j in db.read(store.unsent_jobs, changed_before=cutoff)] == [
        queued.id, retrying.id]
    assert [j.id for j in db.read(store.unsent_jobs, changed_before=cutoff, limit=1)] == [
        queued.id]
    assert recent.id not in {j.id for j in db.read(store.unsent_jobs, changed_before=cutoff)}


def test_silent_active_jobs_lists_running_jobs_unchanged_since_the_cutoff(
        empty: SyncDatabase) -> None:
    """Active and unchanged since the cutoff; by id, at most limit."""
    db = empty
    user_id = new_user(db)
    silent = [new_job(db, user_id) for _ in range(2)]
    talking, waiting = new_job(db, user_id), new_job(db, user_id)
    for job in (*silent, talking):
        db.write(store.begin_attempt, job_id=job.id)
    for job in (*silent, waiting):
        set_columns(db, Job, job.id, updated_at=ago(minutes=10))
    cutoff = ago(minutes=1)
    assert [j.id for j in db.read(store.silent_active_jobs, changed_before=cutoff)] == [
        j.id for j in silent]
    assert [j.id for j in db.read(store.silent_active_jobs, changed_before=cutoff,
                                  limit=1)] == [silent[0].id]


def test_renew_message_gives_a_stuck_job_a_new_message(db: SyncDatabase) -> None:
    """Waiting and unsent, or active: a new unsent message id (stored). Sent, recently
    changed, ended or unknown: None and unchanged."""
    user_id = new_user(db)
    unsent, sent, running, recent, done = (new_job(db, user_id) for _ in range(5))
    db.write(store.mark_enqueued, job_id=sent.id, message_id=str(sent.message_id))
    db.write(store.begin_attempt, job_id=running.id)
    db.write(store.mark_enqueued, job_id=running.id, message_id=str(running.message_id))
    finish(db, done.id)
    for job in (unsent, sent, running, done):
        set_columns(db, Job, job.id, updated_at=ago(minutes=10))
    cutoff = ago(minutes=1)

    for job in (unsent, running):
        renewed = db.write(store.renew_message, job_id=job.id, changed_before=cutoff)
        assert renewed is not None and renewed.message_id != job.message_id
        stored = stored_job(db, job.id)
        assert stored.message_id == renewed.message_id and stored.enqueued is False
    for job in (sent, recent, done):
        assert db.write(store.renew_message, job_id=job.id, changed_before=cutoff) is None
        assert stored_job(db, job.id).message_id == job.message_id
    assert db.write(store.renew_message, job_id=new_id(), changed_before=cutoff) is None
