"""Jobs: recording them, reading them, and their state changes (the rules: ``core``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.core import lifecycle, live
from server.core.events import PROGRESS
from server.core.jobs import (
    UNFINISHED_STATES,
    ImageBusy,
    ImageDeleted,
    JobState,
    Stage,
    TransitionError,
    is_final,
)
from server.core.live import PushedStep
from server.data.models import Image, Job, JobEventRecord, new_id, utcnow
from server.data.store.images import get_image, record_image_output
from server.data.store.messages import new_message_id
from server.data.store.timeline import record, record_pushed
from server.data.store.views import JobView, locked_job, locked_view, save, view


def new_job(
    *,
    user_id: str,
    task_type: str,
    queue: str,
    payload: dict[str, Any],
    max_attempts: int,
    priority: str = "normal",
    run_at: datetime | None = None,
    image: Image | None = None,
    stage: str = Stage.STORED.value,
    batch_id: str | None = None,
    parent_id: str | None = None,
) -> Job:
    """A queued job's row, every column set, not stored yet (its message is not sent
    either); with ``image``, tied to it.

    ``stage`` is ``paused`` when its queue is paused; ``parent_id``: the job it serves (a
    webhook delivery's).
    """
    now = utcnow()
    job = Job(
        id=new_id(), user_id=user_id, type=task_type, queue=queue,
        state=JobState.QUEUED.value, stage=stage, progress=0, attempt=0,
        max_attempts=max_attempts, priority=priority, payload=payload, error=None,
        traceback=None, result=None, seq=1, created_at=now, updated_at=now, run_at=run_at,
        started_at=None, finished_at=None, message_id=new_message_id(), enqueued=False,
        image_id=image.id if image is not None else None, batch_id=batch_id,
        parent_id=parent_id,
    )
    if image is not None:
        image.job_id, image.status = job.id, lifecycle.image_status(JobState.QUEUED).value
    return job


def create_job(s: Session, *, image: Image | None = None, **fields: Any) -> JobView:
    """Record a queued job (``new_job``'s fields) and its first timeline entry."""
    job = new_job(image=image, **fields)
    s.add(job)
    record(s, job)
    s.flush()
    return JobView(job, image)


def create_task_job(s: Session, /, *, user_id: str, image_id: str | None = None,
                    **fields: Any) -> JobView | None:
    """``create_job`` for a submitted task; None if ``image_id`` is not one of the user's.

    Raises ImageBusy while the image's current job is unfinished.
    """
    image = None
    if image_id is not None:
        image = get_image(s, image_id=image_id, user_id=user_id)
        if image is None:
            return None
        current = s.get(Job, image.job_id) if image.job_id else None
        if current is not None and not is_final(current.state):
            raise ImageBusy(f"image {image_id} is still being processed (job {current.id})")
    return create_job(s, user_id=user_id, image=image, **fields)


def delete_job(s: Session, /, *, job_id: str) -> None:
    """Undo ``create_task_job`` when the message could not be enqueued.

    An image the job was made for gets its previous job back, and that job's status.
    """
    s.execute(delete(Job).where(Job.id == job_id))
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id == job_id))
    for image in list(s.scalars(select(Image).where(Image.job_id == job_id))):
        previous = s.scalars(select(Job).where(Job.image_id == image.id)
                             .order_by(Job.id.desc())).first()
        image.job_id = previous.id if previous is not None else None
        if previous is not None:
            image.status = lifecycle.image_status(previous.state).value


def get_job(s: Session, /, *, job_id: str, user_id: str | None) -> JobView | None:
    """The job, if it exists and (unless user_id is None) belongs to that user."""
    query = select(Job).where(Job.id == job_id)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    job = s.scalars(query).first()
    return view(s, job) if job else None


def count_unfinished(s: Session, /, *, user_id: str, task_type: str) -> int:
    """How many of the user's jobs of ``task_type`` are queued, running or retrying."""
    return int(s.scalar(select(func.count()).select_from(Job).where(
        Job.user_id == user_id, Job.type == task_type, Job.state.in_(UNFINISHED_STATES))) or 0)


def transition(
    s: Session,
    *,
    job_id: str,
    state: JobState,
    stage: str | None = None,
    progress: int | None = None,
    attempt: int | None = None,
    error: dict[str, Any] | None = None,
    traceback: str | None = None,
    result: dict[str, Any] | None = None,
    run_at: datetime | None = None,
    of_attempt: int | None = None,
    resend: bool = False,
    image_id: str | None = None,
    image_outputs: dict[str, Any] | None = None,
    worker: str | None = None,
    stage_times: Sequence[tuple[str, float]] | None = None,
    pushed: Sequence[PushedStep] = (),
    locked: JobView | None = None,
) -> JobView | None:
    """Move a job to ``state`` (checked against the state machine) and bump its seq.

    What else the move writes is ``lifecycle.transition_fields``'s; the job's image takes
    the status that follows the new state. ``of_attempt``: the change reports on that
    attempt; if a later one has begun, it is stale and refused. ``resend``: the job's
    message was lost (Redis refused the retry), so it gets a new message id and waits,
    unsent, for the sweeper. ``image_outputs``: what the job's last stage produced, stored
    on image ``image_id`` (else the job's) in the same transaction; ImageDeleted if that
    image is gone (nothing is written then). ``worker``: who begins the attempt, and
    ``stage_times`` how long the stages of the attempt that ends took, for the timeline,
    and ``pushed`` the progress steps it pushed from Redis alone (``server.core.live``).
    ``locked``: the job, if the caller locked it already (``locked_view``).
    Returns None when the job no longer exists; raises TransitionError when not allowed.
    """
    current = locked if locked is not None else locked_view(s, job_id)
    if current is None:
        return None
    job = current.job
    if of_attempt is not None and job.attempt != of_attempt:
        raise TransitionError(f"attempt {of_attempt} is over; the job is on attempt {job.attempt}")
    seq = live.next_seq(job.seq, job.state)
    if image_outputs:
        target = image_id or str(job.image_id)
        if record_image_output(s, image_id=target, **image_outputs) is None:
            raise ImageDeleted(f"image {target} was deleted")
    fields = lifecycle.transition_fields(
        job.state, state, now=utcnow(), started_at=job.started_at, stage=stage,
        progress=progress, attempt=attempt, run_at=run_at, error=error, traceback=traceback,
        result=result)
    if resend:
        job.message_id, job.enqueued = new_message_id(), False
    for name, value in fields.items():
        setattr(job, name, value)
    if pushed:
        record_pushed(s, job, pushed)
    job.seq = seq
    record(s, job, worker=worker, stages=stage_times)
    save(s, job)  # before reading anything more: a read would flush it through the ORM
    found = view(s, job)
    if found.image is not None:
        found.image.status = lifecycle.image_status(state).value
    save(s, found.image)
    return found


def cancel_job(s: Session, /, *, job_id: str, user_id: str | None) -> JobView | None:
    """Cancel the job on request; raises TransitionError if it already finished."""
    if get_job(s, job_id=job_id, user_id=user_id) is None:
        return None
    cancelled = transition(s, job_id=job_id, state=JobState.CANCELLED,
                           stage=lifecycle.CANCELLED_STAGE, error=lifecycle.cancel_error())
    if cancelled is not None and cancelled.image is not None:
        for name, value in lifecycle.cancelled_image_fields().items():
            setattr(cancelled.image, name, value)
    return cancelled


def begin_attempt(s: Session, /, *, job_id: str, message_id: str | None = None,
                  worker: str | None = None) -> JobView | None:
    """Mark the job active for its next attempt (``lifecycle.next_attempt``), run by
    ``worker`` ("host:pid:thread", kept in its timeline).

    Raises TransitionError if it may not run (cancelled, finished, or ``message_id`` is a
    superseded copy) and AttemptsExhausted once all attempts are used.
    """
    current = locked_view(s, job_id)
    if current is None:
        return None
    job = current.job
    if message_id is not None and job.message_id is not None and message_id != job.message_id:
        # A stale copy: the sweeper (or a DLQ retry) sent a newer message for this job.
        raise TransitionError(f"message {message_id} was superseded by {job.message_id}")
    attempt = lifecycle.next_attempt(state=job.state, attempt=job.attempt,
                                     max_attempts=job.max_attempts)
    return transition(s, job_id=job_id, state=JobState.ACTIVE, stage=Stage.STORED.value,
                      progress=0, attempt=attempt, worker=worker, locked=current)


def withdraw_outputs(s: Session, /, *, job_id: str, image_id: str, attempt: int) -> bool:
    """A run of ``attempt`` stopped: mark its image as having no renditions, unless the job
    completed (whoever finished it keeps them) or a later attempt runs it now (one that
    took over from a hung run: they are its own). True if withdrawn: the caller removes
    the files."""
    job = locked_job(s, job_id)
    if job is not None and (job.state == JobState.COMPLETED.value or (
            job.state == JobState.ACTIVE.value and job.attempt != attempt)):
        return False
    record_image_output(s, image_id=image_id, has_thumbnail=False, has_preview=False)
    return True


def report_progress(s: Session, /, *, job_id: str, stage: str, progress: int,
                    image_id: str | None = None,
                    outputs: dict[str, Any] | None = None,
                    of_attempt: int | None = None,
                    pushed: Sequence[PushedStep] = ()) -> JobView | None:
    """Record a progress step of an active job; None if it is not active (e.g. cancelled)
    or, given ``of_attempt``, runs another attempt (a later one took over a hung run).

    ``outputs``: what the stage before produced, stored on image ``image_id`` in the same
    transaction (one write per step, not two); raises ImageDeleted if the image is gone.
    ``pushed``: the attempt's steps pushed from Redis alone since its last write, kept in
    its timeline now (``server.core.live``).
    """
    job = locked_job(s, job_id)
    if job is None or job.state != JobState.ACTIVE.value:
        return None
    if of_attempt is not None and job.attempt != of_attempt:
        return None
    target = image_id or str(job.image_id)
    if outputs and record_image_output(s, image_id=target, **outputs) is None:
        raise ImageDeleted(f"image {target} was deleted")
    if pushed:
        record_pushed(s, job, pushed)
    job.stage = stage
    job.progress = lifecycle.reported_progress(
        max([job.progress, *(step.progress for step in pushed)]), progress)
    job.seq = live.next_seq(job.seq, job.state)
    job.updated_at = utcnow()
    record(s, job, PROGRESS)
    save(s, job)  # before ``view`` reads the image: that read would flush it through the ORM
    found = view(s, job)
    save(s, found.image)  # the outputs, if any
    return found
