"""Each job's timeline: one row per stored change, in seq order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from server.core.events import PROGRESS, event_for_state
from server.core.jobs import JobState
from server.core.live import PushedStep
from server.data.models import WORKER_CHARS, Job, JobEventRecord


def record(s: Session, job: Job, name: str | None = None, *, worker: str | None = None,
           stages: Sequence[tuple[str, float]] | None = None) -> None:
    """Append the job's current state to its timeline (``name``: the event announcing it).

    ``worker``: who begins the attempt (job:active); ``stages``: the attempt's stages as
    its worker timed them (at its end). An attempt's end (retrying, failed) keeps its
    traceback: the job's own column holds only the last one.

    A Core statement, run at once: the ORM would insert the row at the next flush and
    read its generated key back, which nobody needs.
    """
    s.connection().execute(insert(JobEventRecord),
                           [_entry(job, name, worker=worker, stages=stages)])


def record_all(s: Session, jobs: Sequence[Job]) -> None:
    """``record`` for several jobs at once, in one statement (the ORM inserts rows with a
    generated key one at a time on SQLite, to read each key back; nobody needs it here)."""
    if jobs:
        s.connection().execute(insert(JobEventRecord), [_entry(job) for job in jobs])


def _entry(job: Job, name: str | None = None, *, worker: str | None = None,
           stages: Sequence[tuple[str, float]] | None = None) -> dict[str, Any]:
    ended = job.state in (JobState.RETRYING.value, JobState.FAILED.value)
    return {"job_id": job.id, "seq": job.seq, "name": name or event_for_state(job.state),
            "state": job.state, "stage": job.stage, "progress": job.progress,
            "error": job.error, "at": job.updated_at,
            "worker": worker[:WORKER_CHARS] if worker else None,
            "traceback": job.traceback if ended else None,
            "stages": [[name, seconds] for name, seconds in stages] if stages else None}


def record_pushed(s: Session, job: Job, steps: Sequence[PushedStep]) -> None:
    """Append the progress steps the job's attempt pushed from Redis alone (in one
    statement, as ``record``)."""
    if steps:
        s.connection().execute(insert(JobEventRecord), [
            {"job_id": job.id, "seq": step.seq, "name": PROGRESS,
             "state": JobState.ACTIVE.value, "stage": step.stage, "progress": step.progress,
             "error": None, "at": step.at, "worker": None, "traceback": None, "stages": None}
            for step in steps])


def keep_pushed(s: Session, /, *, job_id: str, steps: Sequence[PushedStep]) -> None:
    """Append steps a run pushed from Redis alone when no write of its own will keep them
    (a cancel or a later attempt ended the run); nothing if the job is gone."""
    job = s.get(Job, job_id)
    if job is not None:
        record_pushed(s, job, steps)


def job_timeline(s: Session, /, *, job_id: str) -> list[JobEventRecord]:
    """The job's stored changes, oldest first."""
    return list(s.scalars(select(JobEventRecord).where(JobEventRecord.job_id == job_id)
                          .order_by(JobEventRecord.seq, JobEventRecord.id)))


def forget_events(s: Session) -> None:
    """Drop the timelines of jobs that no longer exist."""
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id.not_in(select(Job.id))))
