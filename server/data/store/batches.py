"""Batches: several uploads made in one request, and how far their jobs have got."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.core.batches import BatchTally, tally
from server.data.models import Batch, Job, new_id, utcnow
from server.data.store.views import JobView, view


@dataclass(frozen=True)
class BatchProgress:
    """A batch row with its jobs counted (``server.core.batches``)."""

    batch: Batch
    tally: BatchTally


def create_batch(s: Session, /, *, user_id: str, files: int) -> Batch:
    """Record a batch of ``files`` uploads (their jobs name it as they are made)."""
    batch = Batch(id=new_id(), user_id=user_id, files=files, created_at=utcnow())
    s.add(batch)
    s.flush()
    return batch


def batch_progress(s: Session, /, *, batch_id: str, user_id: str | None) -> BatchProgress | None:
    """The batch with its jobs counted, if it exists and (unless user_id is None) belongs to
    that user."""
    query = select(Batch).where(Batch.id == batch_id)
    if user_id is not None:
        query = query.where(Batch.user_id == user_id)
    batch = s.scalars(query).first()
    if batch is None:
        return None
    rows = s.execute(select(Job.state, Job.progress).where(Job.batch_id == batch_id)).all()
    return BatchProgress(batch, tally((state, progress) for state, progress in rows))


def batch_jobs(s: Session, /, *, batch_id: str) -> list[JobView]:
    """The batch's jobs, oldest first."""
    return [view(s, job) for job in
            s.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id))]
