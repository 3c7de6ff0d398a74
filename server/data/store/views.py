"""A job row with its image, as callers present it, and the row reads every module uses."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.data.models import Image, Job


@dataclass(frozen=True)
class JobView:
    """A job row with its image (if any), as needed to present it."""

    job: Job
    image: Image | None


def view(s: Session, job: Job) -> JobView:
    """The job with its image."""
    image = s.get(Image, job.image_id) if job.image_id else None
    return JobView(job, image)


def locked_job(s: Session, job_id: str) -> Job | None:
    """The job's row, locked for the rest of the transaction (PostgreSQL)."""
    return s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()


def locked_view(s: Session, job_id: str) -> JobView | None:
    """``locked_job`` with its image (if any, not locked). While the view is held, the
    session has the image at hand: ``view`` and writes to the image need no query of
    their own.

    On SQLite the image comes in the job's statement (writes are serialised, so nothing
    changes between them). On PostgreSQL it is read after the lock: a statement that waits
    for the job's lock re-reads the job's row when it gets it but not a joined image's,
    which could be older than what the lock's holder wrote."""
    if s.get_bind().dialect.name != "sqlite":
        job = locked_job(s, job_id)
        return view(s, job) if job is not None else None
    row = s.execute(select(Job, Image).outerjoin(Image, Image.id == Job.image_id)
                    .where(Job.id == job_id)).first()
    return JobView(row[0], row[1]) if row is not None else None
