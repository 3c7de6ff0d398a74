"""Batches (``store.batches``), and their summary as the wire carries it.

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from server.core.jobs import JobState
from server.core.live import LiveState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Batch, new_id
from server.services.presenter import batch_summary
from tests.server.store.rows import finish, new_upload, new_user, stored_job


def test_batch_progress_counts_its_jobs(db: SyncDatabase) -> None:
    """total/done/failed (failed or cancelled), progress the mean with ended jobs at 100;
    scoped to the owner unless user_id is None; the summary carries them as they are."""
    owner = new_user(db)
    batch = db.write(store.create_batch, user_id=owner, files=5)
    views = [new_upload(db, owner, batch_id=batch.id) for _ in range(5)]
    done, failed, cancelled, running, waiting = (v.job.id for v in views)
    finish(db, done)
    finish(db, failed, JobState.FAILED)
    db.write(store.cancel_job, job_id=cancelled, user_id=None)
    db.write(store.begin_attempt, job_id=running)
    db.write(store.report_progress, job_id=running, stage="preview", progress=65)

    found = db.read(store.batch_progress, batch_id=batch.id, user_id=owner)
    assert found is not None and found.batch.id == batch.id
    progress = round((100 * 3 + 65 + 0) / 5)
    assert (found.tally.total, found.tally.done, found.tally.failed, found.tally.progress) == (
        5, 1, 2, progress)
    summary = batch_summary(found)
    assert list(summary) == ["id", "total", "files", "done", "failed", "progress",
                             "created_at"]
    assert {k: summary[k] for k in ("id", "total", "files", "done", "failed", "progress")} == {
        "id": batch.id, "total": 5, "files": 5, "done": 1, "failed": 2, "progress": progress}
    assert str(summary["created_at"]).endswith("Z")
    assert db.read(store.batch_progress, batch_id=batch.id, user_id=None) is not None
    assert db.read(store.batch_progress, batch_id=batch.id, user_id=new_user(db)) is None

    # A running job's live progress (``server.core.live``) counts over its row's, but only
    # its own attempt's, pushed after the row; no other job's row is touched.
    row = stored_job(db, running)
    assert found.running() == [running]
    pushed = LiveState(attempt=row.attempt, seq=row.seq + 1, stage="x", progress=95)
    stale = LiveState(attempt=row.attempt + 1, seq=row.seq + 1, stage="x", progress=95)
    assert found.with_live({running: pushed, waiting: pushed}).tally.progress == round(
        (100 * 3 + 95 + 0) / 5)
    assert found.with_live({running: stale}).tally.progress == progress
    assert db.read(store.batch_progress, batch_id=new_id(), user_id=None) is None
    assert stored_job(db, waiting).progress == 0

    jobs = db.read(store.batch_jobs, batch_id=batch.id)
    assert [v.job.id for v in jobs] == sorted(v.job.id for v in views)
    assert all(v.image is not None and v.image.job_id == v.job.id for v in jobs)


def test_an_empty_batch_is_complete(db: SyncDatabase) -> None:
    """No jobs (all undone): total 0, progress 100; batch_jobs is empty."""
    owner = new_user(db)
    batch = db.write(store.create_batch, user_id=owner, files=2)
    stored = db.read(lambda s: s.get(Batch, batch.id))
    assert stored is not None and (stored.user_id, stored.files) == (owner, 2)
    found = db.read(store.batch_progress, batch_id=batch.id, user_id=owner)
    assert found is not None
    summary = batch_summary(found)
    assert (summary["total"], summary["done"], summary["failed"], summary["progress"]) == (
        0, 0, 0, 100)
    assert db.read(store.batch_jobs, batch_id=batch.id) == []
