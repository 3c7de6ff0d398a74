"""Each job's message: its id, whether it reached Redis, and the sweeper's reads of those
that never did or whose run stopped."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from server.core.jobs import JobState
from server.data.models import Job, as_utc, utcnow
from server.data.store.views import locked_job

# A job's message is waiting to run (first or next attempt).
_WAITING = (JobState.QUEUED.value, JobState.RETRYING.value)


def new_message_id() -> str:
    """A fresh id for a job's next message; copies with an older one are skipped."""
    return str(uuid.uuid4())


def mark_enqueued(s: Session, /, *, job_id: str, message_id: str) -> None:
    """Note that the job's message reached Redis (unless a newer one replaced it)."""
    mark_enqueued_many(s, sent={job_id: message_id})


# A job whose message reached Redis, unless a newer message replaced it meanwhile.
_MARK_SENT = (update(Job).where(Job.id == bindparam("job"),
                                Job.message_id == bindparam("message"))
              .values(enqueued=True))


def mark_enqueued_many(s: Session, /, *, sent: dict[str, str]) -> None:
    """``mark_enqueued`` for many jobs at once (job id → the message id that was sent): one
    Core statement run for each, without reading the rows first, in id order (the order
    the ORM's flush wrote them in)."""
    if sent:
        s.connection().execute(_MARK_SENT, [{"job": job_id, "message": message_id}
                                            for job_id, message_id in sorted(sent.items())])


def unsent_jobs(s: Session, /, *, changed_before: datetime, limit: int = 100) -> list[Job]:
    """Waiting jobs whose message never reached Redis.

    A web process died between commit and enqueue, or Redis refused a retry's enqueue.
    """
    return list(s.scalars(
        select(Job).where(Job.state.in_(_WAITING), Job.enqueued.is_(False),
                          Job.updated_at < changed_before).order_by(Job.id).limit(limit)))


def silent_active_jobs(s: Session, /, *, changed_before: datetime, limit: int = 100) -> list[Job]:
    """Active jobs with no stored change for a long while (the caller checks their leases)."""
    return list(s.scalars(
        select(Job).where(Job.state == JobState.ACTIVE.value, Job.updated_at < changed_before)
        .order_by(Job.id).limit(limit)))


def renew_message(s: Session, /, *, job_id: str, changed_before: datetime,
                  lost_message_id: str | None = None) -> Job | None:
    """Give a stuck job a new message id (any older copy will be skipped) and return it.

    Stuck means: waiting with its message unsent, or active (its run is gone: the caller
    checked the lease); with ``lost_message_id``, waiting on that message, which the
    caller found lost. None if the job moved on since (it changed after
    ``changed_before``, was sent meanwhile, or waits on another message).
    """
    job = locked_job(s, job_id)
    if job is None or as_utc(job.updated_at) >= changed_before:
        return None
    if lost_message_id is not None:
        stuck = job.state in _WAITING and job.message_id == lost_message_id
    else:
        stuck = (job.state in _WAITING and not job.enqueued) or job.state == JobState.ACTIVE.value
    if not stuck:
        return None
    # A renewal counts as a change: the next sweep leaves the new message its time to
    # start (behind a backlog, say) instead of renewing it again, which would put the
    # job back at the end of its owner's line each time.
    job.message_id, job.enqueued, job.updated_at = new_message_id(), False, utcnow()
    return job
