"""The dead-letter queue: jobs failed for good, kept until an admin retries or clears them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from server.core import lifecycle
from server.core.jobs import JobState
from server.core.live import PushedStep
from server.core.search import EVERYTHING, JobSearch
from server.data.models import DeadLetter, Job, utcnow
from server.data.store.jobs import get_job, transition
from server.data.store.messages import new_message_id
from server.data.store.search import job_conditions, views_of
from server.data.store.views import JobView

# Ids per DELETE statement: under SQLite's and PostgreSQL's bound-parameter limits.
_DELETE_CHUNK = 500


def dead_letter(s: Session, /, *, job_id: str, error: dict[str, Any], traceback: str | None,
                attempts: int | None = None, of_attempt: int | None = None,
                stage_times: Sequence[tuple[str, float]] | None = None,
                pushed: Sequence[PushedStep] = ()) -> JobView | None:
    """Fail the job for good and record the final error in the dead-letter queue
    (``stage_times``: the last attempt's stages as timed, and ``pushed`` its progress steps
    pushed from Redis alone, for its timeline)."""
    failed = transition(s, job_id=job_id, state=JobState.FAILED,
                        stage=lifecycle.FAILED_STAGE, error=error, traceback=traceback,
                        attempt=attempts, of_attempt=of_attempt, stage_times=stage_times,
                        pushed=pushed)
    if failed is None:
        return None
    job = failed.job
    entry = s.get(DeadLetter, job.id) or DeadLetter(job_id=job.id)
    entry.user_id, entry.type, entry.payload = job.user_id, job.type, job.payload
    entry.error_type, entry.error_message = error["type"], error["message"]
    entry.traceback, entry.attempts, entry.failed_at = traceback, job.attempt, utcnow()
    s.add(entry)
    return failed


def _matching(search: JobSearch) -> list[ColumnElement[bool]]:
    """``search`` on dead letters: the job's fields, and the error as the entry keeps it."""
    return job_conditions(search, error_columns=(DeadLetter.error_type,
                                                 DeadLetter.error_message))


def list_dead_letters(s: Session, /, *, limit: int, before: str | None = None,
                      search: JobSearch = EVERYTHING) -> list[tuple[DeadLetter, JobView]]:
    """A page of the dead letters ``search`` matches, newest job first."""
    query = (select(DeadLetter, Job).join(Job, Job.id == DeadLetter.job_id)
             .where(*_matching(search)))
    if before:
        query = query.where(DeadLetter.job_id < before)
    rows = s.execute(query.order_by(DeadLetter.job_id.desc()).limit(limit)).all()
    views = views_of(s, (job for _, job in rows))
    return [(entry, found) for (entry, _), found in zip(rows, views, strict=True)]


def dead_letter_count(s: Session) -> int:
    """How many jobs the dead-letter queue holds."""
    return int(s.scalar(select(func.count()).select_from(DeadLetter)) or 0)


def dead_letter_ids(s: Session, /, *, search: JobSearch = EVERYTHING) -> list[str]:
    """The ids of the dead-lettered jobs ``search`` matches, oldest first."""
    query = select(DeadLetter.job_id)
    if not search.empty:
        query = query.join(Job, Job.id == DeadLetter.job_id).where(*_matching(search))
    return list(s.scalars(query.order_by(DeadLetter.job_id)))


def delete_dead_letter(s: Session, /, *, job_id: str) -> bool:
    """Drop one entry (its job stays failed); False if there was none."""
    result = s.execute(delete(DeadLetter).where(DeadLetter.job_id == job_id))
    return bool(getattr(result, "rowcount", 0))


def clear_dead_letters(s: Session, /, *, search: JobSearch = EVERYTHING) -> list[str]:
    """Drop the entries ``search`` matches (every one by default); their job ids."""
    ids = dead_letter_ids(s, search=search)
    for start in range(0, len(ids), _DELETE_CHUNK):
        s.execute(delete(DeadLetter).where(
            DeadLetter.job_id.in_(ids[start:start + _DELETE_CHUNK])))
    return ids


def requeue_failed(s: Session, /, *, job_id: str, user_id: str | None = None,
                   dead_letters_only: bool = True) -> tuple[dict[str, Any], JobView] | None:
    """Queue a failed job again under the same id with fresh attempts.

    Takes it out of the dead-letter queue. Returns what ``dead_letter`` needs to undo it
    and the job; None if there is no such (dead-lettered) job of that user.
    """
    entry = s.get(DeadLetter, job_id)
    found = get_job(s, job_id=job_id, user_id=user_id)
    if found is None or (entry is None and dead_letters_only):
        return None
    job = found.job
    # The job's own error first: it keeps "retryable" (the dead letter has only type and
    # message), so an undone retry leaves the owner able to retry again.
    undo = {"error": job.error or ({"type": entry.error_type, "message": entry.error_message}
                                   if entry else {"type": "Failed", "message": "failed"}),
            "traceback": entry.traceback if entry else job.traceback,
            "attempts": entry.attempts if entry else job.attempt}
    queued = transition(s, job_id=job_id, state=JobState.QUEUED)
    if queued is None:
        return None
    queued.job.message_id, queued.job.enqueued = new_message_id(), False
    if entry is not None:
        s.delete(entry)
    return undo, queued
