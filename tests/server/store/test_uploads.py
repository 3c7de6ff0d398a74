"""Uploads: an image and its job recorded together, and duplicates (``store.uploads``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete, text

from server.core.jobs import JobState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Image, Job, JobEventRecord, as_utc, new_id
from tests.server.store.rows import (
    count_rows,
    count_statements,
    finish,
    new_upload,
    new_user,
    stored_image,
    stored_job,
    timeline_names,
)


def _comparable(value: Any) -> Any:
    """A stored value as read back anywhere (SQLite keeps no time zone: ours is UTC)."""
    return as_utc(value) if isinstance(value, datetime) else value


def test_create_image_job_stores_the_upload_and_its_job(db: SyncDatabase) -> None:
    """The image row carries the file's facts and names its job; the job's payload names it."""
    user_id = new_user(db)
    sha = secrets.token_hex(32)
    batch = db.write(store.create_batch, user_id=user_id, files=1)
    view = new_upload(db, user_id, sha256=sha, priority="low", queue="images.low",
                   batch_id=batch.id)
    assert view.image is not None
    image = stored_image(db, view.image.id)
    assert image is not None
    assert (image.user_id, image.status, image.filename, image.content_type, image.size_bytes,
            image.sha256, image.format, image.width, image.height) == (
        user_id, "queued", "a.jpg", "image/jpeg", 3, sha, "JPEG", 4, 3)
    assert image.job_id == view.job.id and not image.has_thumbnail and image.meta is None
    job = stored_job(db, view.job.id)
    assert job.payload == {"image_id": image.id} and job.image_id == image.id
    assert (job.type, job.queue, job.priority, job.batch_id) == (
        "image.process", "images.low", "low", batch.id)
    # The rows go in through Core statements, built with every column set: what the
    # caller is handed is what was stored, column for column.
    for given, stored in ((view.image, image), (view.job, job)):
        columns = [c.key for c in type(stored).__table__.columns]
        assert {k: _comparable(getattr(given, k)) for k in columns} == {
            k: _comparable(getattr(stored, k)) for k in columns}
    assert (job.enqueued, job.error, job.result, job.started_at) == (False, None, None, None)
    assert [name for _, name, _ in timeline_names(db, job.id)] == ["job:queued"]
    # A JSON column left None is SQL NULL, as the ORM stores it, not the JSON text "null".
    db.write(store.begin_attempt, job_id=job.id)
    nulls = db.read(lambda s: s.execute(text(
        "SELECT (SELECT count(*) FROM images WHERE id = :image AND meta IS NULL),"
        " (SELECT count(*) FROM jobs WHERE id = :job AND error IS NULL AND result IS NULL),"
        " (SELECT count(*) FROM job_events WHERE job_id = :job AND error IS NULL"
        "  AND stages IS NULL)"), {"image": image.id, "job": job.id}).one())
    assert tuple(nulls) == (1, 1, 2)


def _upload(db: SyncDatabase, fields: dict[str, Any]) -> tuple[store.JobView, bool]:
    """One upload recorded alone: its view and whether it was a duplicate."""
    view, duplicate, _position = db.write(store.create_uploads,
                                          [{"upload": store.new_upload(**fields)}])[0]
    return view, duplicate


def _upload_fields(user_id: str, sha256: str) -> dict[str, Any]:
    return {"image_id": new_id(), "user_id": user_id, "sha256": sha256, "filename": "b.png",
            "content_type": "image/png", "size_bytes": 5, "fmt": "PNG", "width": 2,
            "height": 2, "task_type": "image.process", "queue": "images", "max_attempts": 1}


def test_uploads_recorded_together_get_their_positions_and_see_each_other(
        db: SyncDatabase) -> None:
    """A group commit's uploads (``Database.write_grouped``), in one flush, with their
    positions from one reading of the line. A file sent twice in the group is one upload;
    each new job's position counts the group's jobs ahead of it."""
    user_id, other = new_user(db), new_user(db)
    ahead = _upload(db, _upload_fields(user_id, secrets.token_hex(32)))[0]
    same = secrets.token_hex(32)
    fields = [_upload_fields(user_id, same), _upload_fields(other, secrets.token_hex(32)),
              _upload_fields(user_id, same), _upload_fields(user_id, secrets.token_hex(32))]
    with count_statements(db) as statements:
        made = db.write(store.create_uploads,
                        [{"upload": store.new_upload(**upload)} for upload in fields])
    inserts = [sql.split("(")[0].strip() for sql in statements if sql.startswith("INSERT")]
    # The three new uploads' images, jobs and timeline entries in one statement each
    # (executemany), not three.
    assert inserts.count("INSERT INTO images") == inserts.count("INSERT INTO jobs") == 1
    assert inserts.count("INSERT INTO job_events") == 1, inserts
    (first, new1, pos1), (theirs, new2, pos2), (again, dup, pos3), (last, new4, pos4) = made
    assert (new1, new2, dup, new4) == (False, False, True, False)
    assert again.job.id == first.job.id and again.image is not None
    assert again.image.id == first.image.id  # type: ignore[union-attr]
    # In line: ahead (turn 1), theirs (turn 1 of the other user), then first and last
    # (made in the same millisecond, their ids' order is the line's).
    assert pos2 == 1 and pos3 == pos1 and {pos1, pos4} == {2, 3}
    for view, position in ((ahead, 0), (theirs, 1), (first, pos1), (last, pos4)):
        assert db.read(lambda s, v=view: store.queue_position(
            s, job=stored_job(db, v.job.id))) == position
    assert count_rows(db, Image, Image.user_id == user_id) == 3


def test_an_upload_of_the_same_bytes_again_returns_the_earlier_upload(db: SyncDatabase) -> None:
    """Same user and bytes: the earlier view, flagged, nothing new stored. Another user, or
    after the earlier one failed: a new upload."""
    user_id, other = new_user(db), new_user(db)
    sha = secrets.token_hex(32)
    first, duplicate = _upload(db, _upload_fields(user_id, sha))
    assert duplicate is False and first.image is not None

    again, duplicate = _upload(db, _upload_fields(user_id, sha))
    assert duplicate is True
    assert again.job.id == first.job.id and again.image is not None
    assert again.image.id == first.image.id
    assert count_rows(db, Image, Image.user_id == user_id) == 1

    theirs, duplicate = _upload(db, _upload_fields(other, sha))
    assert duplicate is False and theirs.job.id != first.job.id

    finish(db, first.job.id, JobState.FAILED)
    retried, duplicate = _upload(db, _upload_fields(user_id, sha))
    assert duplicate is False and retried.job.id != first.job.id
    assert count_rows(db, Image, Image.user_id == user_id) == 2


def test_the_duplicate_is_the_newest_usable_upload(db: SyncDatabase) -> None:
    """Of several uploads of the same bytes, the newest not failed (nor cancelled); a
    new upload when none is left, or when the newest has no job or its job is gone."""
    user_id = new_user(db)
    sha = secrets.token_hex(32)

    def upload() -> tuple[store.JobView, bool]:
        return _upload(db, _upload_fields(user_id, sha))

    older, newer = new_upload(db, user_id, sha256=sha), new_upload(db, user_id, sha256=sha)
    found, duplicate = upload()
    assert duplicate and found.image is not None and newer.image is not None
    assert (found.job.id, found.image.id) == (newer.job.id, newer.image.id)

    finish(db, newer.job.id, JobState.CANCELLED)  # a cancelled image counts as failed
    found, duplicate = upload()
    assert duplicate and found.job.id == older.job.id

    assert older.image is not None
    db.write(store.record_image_output, image_id=older.image.id, job_id=None)
    made, duplicate = upload()
    assert not duplicate
    db.write(lambda s: s.execute(delete(Job).where(Job.id == made.job.id)))
    again, duplicate = upload()  # its newest has no job: a new upload again
    assert not duplicate and again.job.id != made.job.id


def test_delete_upload_removes_image_job_and_timeline(db: SyncDatabase) -> None:
    """Undoing an upload leaves neither its image nor its job nor their events."""
    user_id = new_user(db)
    view = new_upload(db, user_id)
    assert view.image is not None
    db.write(store.delete_upload, image_id=view.image.id, job_id=view.job.id)
    assert stored_image(db, view.image.id) is None
    assert db.read(store.get_job, job_id=view.job.id, user_id=None) is None
    assert count_rows(db, JobEventRecord, JobEventRecord.job_id == view.job.id) == 0
