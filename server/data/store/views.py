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
