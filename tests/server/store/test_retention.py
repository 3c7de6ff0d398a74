"""Retention (``store.retention``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from sqlalchemy import select

from server.core.jobs import JobState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Batch, Image, Job, JobEventRecord, new_id
from tests.server.store.rows import (
    ago,
    finish,
    new_job,
    new_queue,
    new_upload,
    new_user,
    set_columns,
    stored_image,
)


def test_purge_finished_deletes_what_ended_before_the_cutoff(empty: SyncDatabase) -> None:
    """Images whose current job ended before the cutoff go with all their jobs; other old
    ended jobs go; kept: dead letters, unfinished and recent work, batches with jobs;
    timelines of deleted jobs go too."""
    db = empty
    user_id = new_user(db)
    old, cutoff = ago(hours=2), ago(hours=1)

    gone = new_upload(db, user_id)  # image whose current job ended long ago...
    assert gone.image is not None
    finish(db, gone.job.id, finished_at=old)
    latest = db.write(store.create_task_job, user_id=user_id, image_id=gone.image.id,
                      task_type="image.reprocess", queue="images", payload={},
                      max_attempts=1)
    assert latest is not None
    finish(db, latest.job.id, finished_at=old)  # ...now its current job, also old
    fresh = new_upload(db, user_id)  # ended recently
    finish(db, fresh.job.id)
    dead = new_upload(db, user_id)  # failed long ago, in the dead-letter queue
    finish(db, dead.job.id, JobState.FAILED, finished_at=old)
    busy = new_upload(db, user_id)  # an old job of it ended, its current one runs
    assert busy.image is not None
    finish(db, busy.job.id, finished_at=old)
    rerun = db.write(store.create_task_job, user_id=user_id, image_id=busy.image.id,
                     task_type="image.reprocess", queue="images", payload={}, max_attempts=1)
    assert rerun is not None
    db.write(store.begin_attempt, job_id=rerun.job.id)
    old_plain, new_plain, waiting = new_job(db, user_id), new_job(db, user_id), new_job(db, user_id)
    finish(db, old_plain.id, JobState.CANCELLED, finished_at=old)
    finish(db, new_plain.id)
    set_columns(db, Job, waiting.id, created_at=old, updated_at=old)
    empty_old = db.write(store.create_batch, user_id=user_id, files=1)
    used_old = db.write(store.create_batch, user_id=user_id, files=1)
    empty_new = db.write(store.create_batch, user_id=user_id, files=1)
    in_batch = new_job(db, user_id, batch_id=used_old.id)
    for batch in (empty_old, used_old):
        set_columns(db, Batch, batch.id, created_at=old)

    purged = db.write(store.purge_finished, finished_before=cutoff)

    assert purged == [gone.image.id]
    assert stored_image(db, gone.image.id) is None
    alive = set(db.read(lambda s: list(s.scalars(select(Job.id)))))
    assert alive == {fresh.job.id, dead.job.id, rerun.job.id, new_plain.id, waiting.id,
                     in_batch.id}
    assert {i.id for i in db.read(lambda s: list(s.scalars(select(Image))))} == {
        v.image.id for v in (fresh, dead, busy) if v.image}
    assert set(db.read(lambda s: list(s.scalars(select(JobEventRecord.job_id))))) == alive
    assert set(db.read(lambda s: list(s.scalars(select(Batch.id))))) == {
        used_old.id, empty_new.id}
    assert db.read(store.dead_letter_ids) == [dead.job.id]
    assert db.write(store.purge_finished, finished_before=cutoff) == []


def test_existing_image_ids_answers_in_chunks(db: SyncDatabase) -> None:
    """Which ids still have a row, however many are asked about (more than one chunk)."""
    views = [new_upload(db, new_user(db)) for _ in range(2)]
    real = [v.image.id for v in views if v.image]
    asked = [new_id() for _ in range(1100)]
    asked[3], asked[1050] = real
    assert db.read(store.existing_image_ids, image_ids=asked) == set(real)
    assert db.read(store.existing_image_ids, image_ids=[]) == set()


def test_clean_finished_deletes_the_familys_old_ended_jobs(db: SyncDatabase) -> None:
    """Counted and deleted: ended before the cutoff in this family. Kept: recent, unfinished,
    dead-lettered, an image's current job, other families."""
    user_id, base = new_user(db), new_queue()
    old = ago(hours=2)
    doomed = [new_job(db, user_id, queue=base), new_job(db, user_id, queue=f"{base}.low")]
    for job in doomed:
        finish(db, job.id, finished_at=old)
    recent = new_job(db, user_id, queue=base)
    finish(db, recent.id)
    waiting = new_job(db, user_id, queue=base)
    dead = new_job(db, user_id, queue=base)
    finish(db, dead.id, JobState.FAILED, finished_at=old)
    current = new_upload(db, user_id, queue=base)
    finish(db, current.job.id, finished_at=old)
    elsewhere = new_job(db, user_id, queue=new_queue())
    finish(db, elsewhere.id, finished_at=old)

    assert db.write(store.clean_finished, base=base, finished_before=ago(hours=1)) == 2
    for job in doomed:
        assert db.read(store.get_job, job_id=job.id, user_id=None) is None
        assert db.read(store.job_timeline, job_id=job.id) == []
    for job_id in (recent.id, waiting.id, dead.id, current.job.id, elsewhere.id):
        assert db.read(store.get_job, job_id=job_id, user_id=None) is not None
    assert db.write(store.clean_finished, base=base, finished_before=ago(hours=1)) == 0
