"""Uploads: an accepted file's image row and its processing job, recorded together, and
the duplicate check that makes the same bytes one upload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from server.core import lifecycle
from server.core.jobs import JobState, Stage
from server.data.models import Image, Job, JobEventRecord, User, utcnow
from server.data.store.jobs import new_job
from server.data.store.line import queue_positions
from server.data.store.timeline import record_all
from server.data.store.views import JobView, insert_rows


def new_upload(
    *,
    image_id: str,
    user_id: str,
    filename: str,
    content_type: str,
    size_bytes: int,
    sha256: str,
    fmt: str,
    width: int,
    height: int,
    task_type: str,
    queue: str,
    max_attempts: int,
    priority: str = "normal",
    run_at: datetime | None = None,
    stage: str = Stage.STORED.value,
    batch_id: str | None = None,
) -> JobView:
    """An accepted upload's image row and its queued processing job's, every column set,
    not stored yet."""
    image = Image(
        id=image_id, user_id=user_id, status=lifecycle.image_status(JobState.QUEUED).value,
        filename=filename, content_type=content_type, size_bytes=size_bytes, sha256=sha256,
        format=fmt, width=width, height=height, meta=None, has_thumbnail=False,
        has_preview=False, job_id=None, created_at=utcnow(),
    )
    job = new_job(user_id=user_id, task_type=task_type, queue=queue,
                  payload={"image_id": image_id}, max_attempts=max_attempts,
                  priority=priority, run_at=run_at, image=image, stage=stage,
                  batch_id=batch_id)
    return JobView(job, image)


def create_image_job(s: Session, **fields: Any) -> JobView:
    """Record an accepted upload and its queued processing job (``new_upload``'s fields).

    Check for duplicates in the same transaction first (``create_uploads`` does).
    """
    view = new_upload(**fields)
    _insert(s, [view])
    return view


def _insert(s: Session, views: Sequence[JobView]) -> None:
    """Store new uploads' rows and their jobs' first timeline entries: one Core statement
    per table for all of them (the ORM's flush would cost several times the CPU, and a
    group commit's uploads are written while every other writer waits)."""
    if not views:
        return
    insert_rows(s, [view.image for view in views if view.image is not None])
    insert_rows(s, [view.job for view in views])
    record_all(s, [view.job for view in views])


def create_uploads(s: Session, uploads: Sequence[Mapping[str, JobView]], /
                   ) -> list[tuple[JobView, bool, int | None]]:
    """Record accepted uploads together, each given as ``{"upload": view}`` (``new_upload``'s,
    built before the write, so that a group commit holds SQLite's one write turn for its
    statements only): for each, ``(view, duplicate, queue position)``. The same bytes
    uploaded before by the same user (or earlier in ``uploads``) give the earlier view,
    flagged, and nothing new is stored.

    The rows are written in one statement per table and the duplicates and positions
    read once for all (a group commit's uploads: ``Database.write_grouped``). On
    PostgreSQL the users' rows are locked first (in id order) so that parallel uploads of
    one file by one user cannot both pass the duplicate check; SQLite serialises its write
    transactions (BEGIN IMMEDIATE) already, so there the statement is skipped.
    """
    if not uploads:
        return []
    views = [call["upload"] for call in uploads]
    keys = [_upload_key(view) for view in views]
    if s.get_bind().dialect.name != "sqlite":
        for user_id in sorted({user_id for user_id, _ in keys}):
            s.execute(select(User.id).where(User.id == user_id).with_for_update())
    earlier = _earlier_uploads(s, set(keys))
    made: list[tuple[JobView, bool]] = []
    for view, key in zip(views, keys, strict=True):
        found = earlier.get(key)
        if found is None:
            found = earlier[key] = view
            made.append((found, False))
        else:
            made.append((found, True))
    _insert(s, [view for view, duplicate in made if not duplicate])
    positions = queue_positions(s, jobs=[view.job for view, _ in made])
    return [(view, duplicate, position)
            for (view, duplicate), position in zip(made, positions, strict=True)]


def _upload_key(view: JobView) -> tuple[str, str]:
    """(user, SHA-256) of a new upload's view: what makes it a duplicate."""
    if view.image is None:
        raise ValueError("an upload's view has its image")
    return (view.image.user_id, view.image.sha256)


# Built once (building them cost more than running them): the users' latest images of
# some bytes, and the jobs of some images.
_LATEST_IMAGES = (select(Image)
                  .where(Image.user_id.in_(bindparam("users", expanding=True)),
                         Image.sha256.in_(bindparam("hashes", expanding=True)),
                         Image.status != lifecycle.ImageStatus.FAILED.value)
                  .order_by(Image.id.desc()))
_JOBS = select(Job).where(Job.id.in_(bindparam("ids", expanding=True)))


def _earlier_uploads(s: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], JobView]:
    """For each (user, SHA-256): the user's latest upload of those bytes, unless it failed
    (then it may be uploaded again), with its job; two queries for all of them."""
    latest: dict[tuple[str, str], Image] = {}
    for image in s.scalars(_LATEST_IMAGES, {"users": sorted({user for user, _ in keys}),
                                            "hashes": sorted({sha for _, sha in keys})}):
        key = (image.user_id, image.sha256)
        if key in keys and key not in latest:
            latest[key] = image
    job_ids = [image.job_id for image in latest.values() if image.job_id is not None]
    jobs = {job.id: job for job in s.scalars(_JOBS, {"ids": job_ids})} if job_ids else {}
    return {key: JobView(jobs[image.job_id], image) for key, image in latest.items()
            if image.job_id in jobs}


def delete_upload(s: Session, /, *, image_id: str, job_id: str) -> None:
    """Undo ``create_image_job`` when the message could not be enqueued."""
    s.execute(delete(Job).where(Job.id == job_id))
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id == job_id))
    s.execute(delete(Image).where(Image.id == image_id))
