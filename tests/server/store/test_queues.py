"""A paused queue's waiting jobs (``store.queues``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import new_id
from tests.server.store.rows import new_job, new_queue, new_user, stored_job, timeline_names


def test_mark_paused_shows_the_familys_waiting_jobs_as_paused_and_back(
        db: SyncDatabase) -> None:
    """Pausing marks the family's waiting jobs paused (seq and timeline grow); resuming
    puts back only those; running jobs and other families are untouched."""
    user_id, base = new_user(db), new_queue()
    waiting = [new_job(db, user_id, queue=base), new_job(db, user_id, queue=f"{base}.high")]
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    elsewhere = new_job(db, user_id, queue=new_queue())

    paused = db.write(store.mark_paused, base=base, paused=True)
    assert sorted(v.job.id for v in paused) == sorted(j.id for j in waiting)
    for job in waiting:
        stored = stored_job(db, job.id)
        assert (stored.stage, stored.seq, stored.state) == ("paused", 2, "queued")
        assert timeline_names(db, job.id)[-1] == (2, "job:queued", "queued")
    assert stored_job(db, running.id).stage == "stored"
    assert stored_job(db, elsewhere.id).stage == "stored"
    assert db.write(store.mark_paused, base=base, paused=True) == []

    resumed = db.write(store.mark_paused, base=base, paused=False)
    assert sorted(v.job.id for v in resumed) == sorted(j.id for j in waiting)
    assert [(stored_job(db, j.id).stage, stored_job(db, j.id).seq) for j in waiting] == [
        ("stored", 3), ("stored", 3)]


def test_show_paused_marks_one_waiting_job(db: SyncDatabase) -> None:
    """A waiting job becomes paused (seq + 1); already paused, running or unknown: None."""
    user_id = new_user(db)
    job = new_job(db, user_id)
    shown = db.write(store.show_paused, job_id=job.id)
    assert shown is not None and shown.job.stage == "paused"
    assert (stored_job(db, job.id).stage, stored_job(db, job.id).seq) == ("paused", 2)
    assert db.write(store.show_paused, job_id=job.id) is None
    assert stored_job(db, job.id).seq == 2
    running = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=running.id)
    assert db.write(store.show_paused, job_id=running.id) is None
    assert db.write(store.show_paused, job_id=new_id()) is None
