"""Uploads: an accepted file's image row and its processing job, recorded together, and
the duplicate check that makes the same bytes one upload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.core import lifecycle
from server.core.jobs import JobState, Stage
from server.data.models import Image, Job, JobEventRecord, User, utcnow
from server.data.store.jobs import create_job
from server.data.store.line import queue_positions
from server.data.store.views import JobView


def create_image_job(
    s: Session,
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
    """Record an accepted upload and its queued processing job.

    Call ``find_duplicate`` in the same transaction first (``create_upload`` does).
    """
    image = Image(
        id=image_id, user_id=user_id, status=lifecycle.image_status(JobState.QUEUED).value,
        filename=filename, content_type=content_type, size_bytes=size_bytes, sha256=sha256,
        format=fmt, width=width, height=height, created_at=utcnow(),
    )
    s.add(image)
    return create_job(s, user_id=user_id, task_type=task_type, queue=queue,
                      payload={"image_id": image_id}, max_attempts=max_attempts,
                      priority=priority, run_at=run_at, image=image, stage=stage,
                      batch_id=batch_id)


def create_upload(s: Session, /, *, user_id: str, sha256: str,
                  **fields: Any) -> tuple[JobView, bool]:
    """``(view, False)`` for a new upload, or ``(earlier view, True)`` for the same bytes again.

    The user's row is locked first so that parallel uploads of one file by one user
    cannot both pass the duplicate check. SQLite has no row locks and needs none: its
    write transactions (BEGIN IMMEDIATE) are serialised already, so the statement, a
    plain SELECT there, is skipped.
    """
    if s.get_bind().dialect.name != "sqlite":
        s.execute(select(User.id).where(User.id == user_id).with_for_update())
    duplicate = find_duplicate(s, user_id=user_id, sha256=sha256)
    if duplicate is not None:
        return duplicate, True
    return create_image_job(s, user_id=user_id, sha256=sha256, **fields), False


def positioned_uploads(s: Session, created: list[tuple[JobView, bool]], /
                       ) -> list[tuple[JobView, bool, int | None]]:
    """``create_upload``'s results (of uploads recorded together) with their jobs' queue
    positions, from one reading of the line."""
    positions = queue_positions(s, jobs=[view.job for view, _ in created])
    return [(view, duplicate, position)
            for (view, duplicate), position in zip(created, positions, strict=True)]


def find_duplicate(s: Session, /, *, user_id: str, sha256: str) -> JobView | None:
    """The user's earlier upload of the same bytes, unless it failed (then it may be retried)."""
    failed = lifecycle.ImageStatus.FAILED.value
    image = s.scalars(
        select(Image)
        .where(Image.user_id == user_id, Image.sha256 == sha256, Image.status != failed)
        .order_by(Image.id.desc())
    ).first()
    if image is None or image.job_id is None:
        return None
    job = s.get(Job, image.job_id)
    return JobView(job, image) if job else None


def delete_upload(s: Session, /, *, image_id: str, job_id: str) -> None:
    """Undo ``create_image_job`` when the message could not be enqueued."""
    s.execute(delete(Job).where(Job.id == job_id))
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id == job_id))
    s.execute(delete(Image).where(Image.id == image_id))
