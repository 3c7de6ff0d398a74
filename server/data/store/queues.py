"""A paused queue family's waiting jobs, shown as paused (the pause itself is in Redis)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.core.jobs import JobState, Stage, queue_family
from server.data.models import Job, utcnow
from server.data.store.timeline import record
from server.data.store.views import JobView, locked_job, view


def mark_paused(s: Session, /, *, base: str, paused: bool) -> list[JobView]:
    """Show the family's waiting jobs as paused (or waiting again); returns those changed."""
    before, after = (Stage.STORED.value, Stage.PAUSED.value) if paused else \
        (Stage.PAUSED.value, Stage.STORED.value)
    jobs = list(s.scalars(select(Job).where(
        Job.queue.in_(queue_family(base)), Job.state == JobState.QUEUED.value,
        Job.stage == before).with_for_update()))
    for job in jobs:
        job.stage, job.seq, job.updated_at = after, job.seq + 1, utcnow()
        record(s, job)
    return [view(s, job) for job in jobs]


def show_paused(s: Session, /, *, job_id: str) -> JobView | None:
    """Mark one waiting job as held by a paused queue; None if there is nothing to change."""
    job = locked_job(s, job_id)
    if job is None or job.state != JobState.QUEUED.value or job.stage == Stage.PAUSED.value:
        return None
    job.stage, job.seq, job.updated_at = Stage.PAUSED.value, job.seq + 1, utcnow()
    record(s, job)
    return view(s, job)
