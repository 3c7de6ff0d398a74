"""Batches: several uploads made in one request, and how far their jobs have got."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.core import live
from server.core.batches import BatchTally, tally
from server.core.jobs import JobState
from server.data.models import Batch, Job, new_id, utcnow
from server.data.store.views import JobView, view


@dataclass(frozen=True)
class BatchJob:
    """What a batch's count needs of one of its jobs."""

    id: str
    state: str
    attempt: int
    seq: int
    progress: int


@dataclass(frozen=True)
class BatchProgress:
    """A batch row with its jobs, counted by ``tally`` (``server.core.batches``)."""

    batch: Batch
    jobs: tuple[BatchJob, ...]

    @property
    def tally(self) -> BatchTally:
        return tally((job.state, job.progress) for job in self.jobs)

    def running(self) -> list[str]:
        """The ids of its active jobs (whose progress may be live: ``server.core.live``)."""
        return [job.id for job in self.jobs if job.state == JobState.ACTIVE.value]

    def with_live(self, states: Mapping[str, live.LiveState]) -> BatchProgress:
        """The batch with its running jobs' live progress laid over their rows'."""
        jobs = []
        for job in self.jobs:
            shown = live.shown(job.state, job.attempt, job.seq, states.get(job.id))
            jobs.append(job if shown is None else replace(job, progress=shown.progress))
        return BatchProgress(self.batch, tuple(jobs))


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
    rows = s.execute(select(Job.id, Job.state, Job.attempt, Job.seq, Job.progress)
                     .where(Job.batch_id == batch_id)).all()
    return BatchProgress(batch, tuple(BatchJob(*row) for row in rows))


def batch_jobs(s: Session, /, *, batch_id: str) -> list[JobView]:
    """The batch's jobs, oldest first."""
    return [view(s, job) for job in
            s.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id))]
