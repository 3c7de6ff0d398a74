"""Every query and write, as sync functions of a Session.

The web process runs them through ``Database`` (aiosqlite/psycopg, via ``run_sync``),
workers through ``SyncDatabase``; either way each call is one short transaction.
All arguments after the session are keyword-only.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from server.core.events import PROGRESS, event_for_state
from server.core.jobs import (
    PRIORITY_ORDER,
    AttemptsExhausted,
    ImageBusy,
    ImageDeleted,
    JobState,
    Stage,
    TransitionError,
    base_queue,
    check_transition,
    is_final,
    queue_family,
)
from server.core.tasks import WEBHOOK_DELIVER, WEBHOOK_MAX_ATTEMPTS
from server.data.models import (
    Batch,
    DeadLetter,
    Image,
    Job,
    JobEventRecord,
    Schedule,
    Token,
    User,
    Webhook,
    as_utc,
    iso,
    new_id,
    utcnow,
)

# Image status follows its job's state.
_IMAGE_STATUS = {
    JobState.QUEUED: "queued",
    JobState.ACTIVE: "processing",
    JobState.RETRYING: "processing",
    JobState.COMPLETED: "ready",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
}


@dataclass(frozen=True)
class JobView:
    """A job row with its image (if any), as needed to present it."""

    job: Job
    image: Image | None


# -- users -------------------------------------------------------------------------------------

def create_user(s: Session, *, token_hash: str, is_admin: bool = False,
                label: str = "") -> User:
    """A new user with one token (its hash)."""
    user = User(id=new_id(), is_admin=is_admin, created_at=utcnow())
    s.add(user)
    s.flush()
    create_token(s, user_id=user.id, token_hash=token_hash, label=label)
    return user


def create_token(s: Session, *, user_id: str, token_hash: str, label: str = "") -> Token:
    """Another token for an existing user."""
    token = Token(id=new_id(), user_id=user_id, token_hash=token_hash, label=label,
                  created_at=utcnow())
    s.add(token)
    s.flush()
    return token


def user_by_token_hash(s: Session, *, token_hash: str) -> tuple[User, Token] | None:
    """The user a token belongs to, and the token; None for an unknown or revoked one."""
    row = s.execute(select(User, Token).join(Token, Token.user_id == User.id)
                    .where(Token.token_hash == token_hash)).first()
    return (row[0], row[1]) if row else None


def ensure_user(s: Session, *, token_hash: str) -> tuple[User, Token]:
    """The user behind a token, created on first use (the ADMIN_TOKEN's user)."""
    found = user_by_token_hash(s, token_hash=token_hash)
    if found is not None:
        return found
    user = create_user(s, token_hash=token_hash, label="ADMIN_TOKEN")
    found = user_by_token_hash(s, token_hash=token_hash)
    assert found is not None and found[0] is user
    return found


def revoke_token(s: Session, *, token_id: str) -> bool:
    """Delete one token; its bearer is unknown from now on. False if it was gone already."""
    result = s.execute(delete(Token).where(Token.id == token_id))
    return bool(getattr(result, "rowcount", 0))


def existing_token_ids(s: Session, *, token_ids: set[str]) -> set[str]:
    """Those of ``token_ids`` that are not revoked."""
    if not token_ids:
        return set()
    return set(s.scalars(select(Token.id).where(Token.id.in_(token_ids))))


def user_is_admin(s: Session, *, user_id: str, admin_token_hash: str | None) -> bool:
    """Whether the user has admin rights now: marked admin, or the ADMIN_TOKEN's user
    (one of their tokens hashes to ``admin_token_hash``, the hash of ADMIN_TOKEN as it is
    set now; None when it is unset). One indexed query, for workers that know no token."""
    holds_admin_token = [] if admin_token_hash is None else [
        exists().where(Token.user_id == User.id, Token.token_hash == admin_token_hash)]
    return bool(s.scalar(select(or_(User.is_admin, *holds_admin_token))
                         .where(User.id == user_id)))


def set_admin(s: Session, *, user_id: str) -> User | None:
    """Make an existing user an admin; None if there is no such user."""
    user = s.get(User, user_id)
    if user is not None:
        user.is_admin = True
    return user


# -- images ------------------------------------------------------------------------------------

def create_job(
    s: Session,
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
) -> JobView:
    """Record a queued job (its message is not sent yet); with ``image``, tied to it.

    ``stage`` is ``paused`` when its queue is paused.
    """
    now = utcnow()
    job = Job(
        id=new_id(), user_id=user_id, type=task_type, queue=queue,
        state=JobState.QUEUED.value, stage=stage, progress=0, attempt=0,
        max_attempts=max_attempts, priority=priority, payload=payload, seq=1,
        created_at=now, updated_at=now, run_at=run_at, message_id=new_message_id(),
        image_id=image.id if image is not None else None, batch_id=batch_id,
    )
    s.add(job)
    if image is not None:
        image.job_id, image.status = job.id, "queued"
    _record(s, job)
    s.flush()
    return JobView(job, image)


def create_task_job(s: Session, *, user_id: str, image_id: str | None = None,
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


def delete_job(s: Session, *, job_id: str) -> None:
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
            image.status = _IMAGE_STATUS[JobState(previous.state)]


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
        id=image_id, user_id=user_id, status="queued", filename=filename,
        content_type=content_type, size_bytes=size_bytes, sha256=sha256, format=fmt,
        width=width, height=height, created_at=utcnow(),
    )
    s.add(image)
    return create_job(s, user_id=user_id, task_type=task_type, queue=queue,
                      payload={"image_id": image_id}, max_attempts=max_attempts,
                      priority=priority, run_at=run_at, image=image, stage=stage,
                      batch_id=batch_id)


def create_upload(s: Session, *, user_id: str, sha256: str,
                  **fields: Any) -> tuple[JobView, bool]:
    """``(view, False)`` for a new upload, or ``(earlier view, True)`` for the same bytes again.

    The user's row is locked first so that parallel uploads of one file by one user
    cannot both pass the duplicate check (SQLite writes are serialised anyway).
    """
    s.execute(select(User.id).where(User.id == user_id).with_for_update())
    duplicate = find_duplicate(s, user_id=user_id, sha256=sha256)
    if duplicate is not None:
        return duplicate, True
    return create_image_job(s, user_id=user_id, sha256=sha256, **fields), False


def find_duplicate(s: Session, *, user_id: str, sha256: str) -> JobView | None:
    """The user's earlier upload of the same bytes, unless it failed (then it may be retried)."""
    image = s.scalars(
        select(Image)
        .where(Image.user_id == user_id, Image.sha256 == sha256, Image.status != "failed")
        .order_by(Image.id.desc())
    ).first()
    if image is None or image.job_id is None:
        return None
    job = s.get(Job, image.job_id)
    return JobView(job, image) if job else None


def delete_upload(s: Session, *, image_id: str, job_id: str) -> None:
    """Undo ``create_image_job`` when the message could not be enqueued."""
    s.execute(delete(Job).where(Job.id == job_id))
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id == job_id))
    s.execute(delete(Image).where(Image.id == image_id))


def get_image(s: Session, *, image_id: str, user_id: str | None) -> Image | None:
    """The image, if it exists and (unless user_id is None) belongs to that user."""
    query = select(Image).where(Image.id == image_id)
    if user_id is not None:
        query = query.where(Image.user_id == user_id)
    return s.scalars(query).first()


def list_images(s: Session, *, user_id: str, limit: int, before: str | None = None) -> list[Image]:
    """A page of the user's images, newest first; ``before`` is the last id of the previous page."""
    query = select(Image).where(Image.user_id == user_id)
    if before:
        query = query.where(Image.id < before)
    return list(s.scalars(query.order_by(Image.id.desc()).limit(limit)))


def delete_image(s: Session, *, image_id: str, user_id: str | None) -> Image | None:
    """Remove the image row; returns it (for file clean-up) or None if not found."""
    image = get_image(s, image_id=image_id, user_id=user_id)
    if image is not None:
        s.delete(image)
    return image


def record_image_output(s: Session, *, image_id: str, **fields: Any) -> Image | None:
    """Store what a pipeline stage produced (has_thumbnail, has_preview, meta, width, ...)."""
    image = s.get(Image, image_id)
    if image is None:
        return None
    for name, value in fields.items():
        setattr(image, name, value)
    return image


# -- jobs --------------------------------------------------------------------------------------

def _view(s: Session, job: Job) -> JobView:
    image = s.get(Image, job.image_id) if job.image_id else None
    return JobView(job, image)


def get_job(s: Session, *, job_id: str, user_id: str | None) -> JobView | None:
    """The job, if it exists and (unless user_id is None) belongs to that user."""
    query = select(Job).where(Job.id == job_id)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    job = s.scalars(query).first()
    return _view(s, job) if job else None


def snapshot_jobs(s: Session, *, user_id: str, finished_since: datetime,
                  limit: int = 500) -> list[tuple[JobView, int | None]]:
    """The user's unfinished jobs and those finished since the given time, oldest first,
    each with its queue position."""
    finals = [state.value for state in JobState if is_final(state)]
    query = (
        select(Job)
        .where(Job.user_id == user_id)
        .where(Job.state.not_in(finals) | (Job.finished_at >= finished_since))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    jobs = list(reversed(list(s.scalars(query))))
    lines: dict[str, _Line] = {}
    now = utcnow()
    positioned = []
    for job in jobs:
        base = base_queue(job.queue)
        if base not in lines:
            lines[base] = _Line(s, base, now)
            lines[base].preload(user_id)
        positioned.append((_view(s, job), lines[base].position(job)))
    return positioned


def _rank(priority: str) -> int:
    return PRIORITY_ORDER.get(priority, PRIORITY_ORDER["normal"])


class _Line:
    """The waiting (eligible) jobs of one queue family, as workers will take them.

    Workers take a priority's jobs round-robin across users (``server.infra.fair``): a user's
    first waiting job has turn 1, their second turn 2, and so on; every turn 1 goes before
    any turn 2. Within a turn, users go in the order they started waiting (their oldest
    waiting job). One grouped query (per user and priority: how many wait, the oldest)
    answers every position; no sort of the whole line. A job already handed to a worker's
    queue may still run before its turn, so a position is an estimate, off by at most the
    jobs there (about one per worker thread).
    """

    def __init__(self, s: Session, base: str, now: datetime) -> None:
        self.s, self.now = s, now
        self.family = queue_family(base)
        rank = case(PRIORITY_ORDER, value=Job.priority, else_=PRIORITY_ORDER["normal"])
        rows = s.execute(
            self._waiting(select(rank, Job.user_id, func.count(), func.min(Job.id)))
            .group_by(rank, Job.user_id)).all()
        # rank -> user -> (how many wait, their oldest waiting job's id)
        self.groups: dict[int, dict[str, tuple[int, str]]] = {}
        for rank_value, user_id, count, first in rows:
            self.groups.setdefault(int(rank_value), {})[user_id] = (int(count), first)
        self._turns: dict[tuple[str, str], list[str]] = {}

    def _waiting(self, query: Any) -> Any:
        return (query.where(Job.queue.in_(self.family), Job.state == JobState.QUEUED.value)
                .where((Job.run_at.is_(None)) | (Job.run_at <= self.now)))

    def _own(self, user_id: str, priority: str, limit: int | None = None) -> list[str]:
        """The user's waiting job ids of one priority, oldest first (the first ``limit``)."""
        query = self._waiting(select(Job.id)).where(
            Job.user_id == user_id, Job.priority == priority).order_by(Job.id)
        return list(self.s.scalars(query if limit is None else query.limit(limit)))

    def preload(self, user_id: str) -> None:
        """Keep the user's waiting job ids at hand: many positions of theirs to come."""
        for priority in PRIORITY_ORDER:
            if user_id in self.groups.get(_rank(priority), {}):
                self._turns[(user_id, priority)] = self._own(user_id, priority)

    def _earlier(self, job: Job) -> int:
        """How many of the owner's waiting jobs of its priority are older than it."""
        known = self._turns.get((job.user_id, job.priority))
        if known is not None:
            return bisect.bisect_left(known, job.id)
        return int(self.s.scalar(self._waiting(select(func.count())).where(
            Job.user_id == job.user_id, Job.priority == job.priority,
            Job.id < job.id)) or 0)

    def position(self, job: Job) -> int | None:
        if job.state != JobState.QUEUED.value or job.queue not in self.family:
            return None
        if job.run_at is not None and as_utc(job.run_at) > self.now:
            return None
        mine = _rank(job.priority)
        users = self.groups.get(mine, {})
        if job.user_id not in users:
            return None
        turn = self._earlier(job) + 1
        first = users[job.user_id][1]
        higher = sum(n for rank, group in self.groups.items() if rank < mine
                     for n, _ in group.values())
        same = turn - 1 + sum(min(n, turn - 1) + (1 if n >= turn and oldest < first else 0)
                              for user_id, (n, oldest) in users.items()
                              if user_id != job.user_id)
        return higher + same

    def front(self, limit: int) -> list[str]:
        """The ids of the first ``limit`` jobs in start order."""
        picks: list[tuple[str, int, str]] = []  # (user, turn, priority)
        for rank in sorted(self.groups):
            users = sorted(self.groups[rank].items(), key=lambda item: item[1][1])
            priority = next(p for p, r in PRIORITY_ORDER.items() if r == rank)
            turn = 1
            while len(picks) < limit:
                takers = [user for user, (n, _) in users if n >= turn]
                if not takers:
                    break
                picks += [(user, turn, priority) for user in takers[:limit - len(picks)]]
                turn += 1
            if len(picks) >= limit:
                break
        need: dict[tuple[str, str], int] = {}
        for user, turn, priority in picks:
            need[(user, priority)] = max(need.get((user, priority), 0), turn)
        own = {key: self._own(*key, limit=count) for key, count in need.items()}
        return [own[(user, priority)][turn - 1] for user, turn, priority in picks
                if turn <= len(own[(user, priority)])]


def queue_position(s: Session, *, job: Job) -> int | None:
    """How many waiting jobs of the same queue family start before this one: those of
    higher priorities, then those of its own whose turn comes first (``_Line``)."""
    if job.state != JobState.QUEUED.value:
        return None
    if job.run_at is not None and as_utc(job.run_at) > utcnow():
        return None
    return _Line(s, base_queue(job.queue), utcnow()).position(job)


def advance_line(s: Session, *, queue: str, limit: int) -> list[tuple[JobView, int]]:
    """The first ``limit`` jobs waiting in a queue family, in start order, each with its
    position; their seq grows so that clients take the new position (a job ahead of
    them just started)."""
    ids = _Line(s, base_queue(queue), utcnow()).front(limit)
    if not ids:
        return []
    jobs = {job.id: job for job in s.scalars(
        select(Job).where(Job.id.in_(ids), Job.state == JobState.QUEUED.value)
        .with_for_update())}
    line = [jobs[job_id] for job_id in ids if job_id in jobs]
    for job in line:
        job.seq += 1
    return [(_view(s, job), position) for position, job in enumerate(line)]


def get_job_positioned(s: Session, *, job_id: str,
                       user_id: str | None) -> tuple[JobView, int | None] | None:
    """``get_job`` plus the job's queue position (None unless it is waiting)."""
    view = get_job(s, job_id=job_id, user_id=user_id)
    return (view, queue_position(s, job=view.job)) if view else None


def _record(s: Session, job: Job, name: str | None = None) -> None:
    """Append the job's current state to its timeline (``name``: the event announcing it)."""
    s.add(JobEventRecord(job_id=job.id, seq=job.seq, name=name or event_for_state(job.state),
                         state=job.state, stage=job.stage, progress=job.progress,
                         error=job.error, at=job.updated_at))


def job_timeline(s: Session, *, job_id: str) -> list[JobEventRecord]:
    return list(s.scalars(select(JobEventRecord).where(JobEventRecord.job_id == job_id)
                          .order_by(JobEventRecord.seq, JobEventRecord.id)))


def list_jobs(s: Session, *, user_id: str | None, limit: int, before: str | None = None,
              state: str | None = None, task_type: str | None = None) -> list[JobView]:
    """A page of jobs, newest first: one user's, or everyone's (user_id None, for admins)."""
    query = select(Job)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    if before:
        query = query.where(Job.id < before)
    if state == "delayed":  # queued with a run_at still ahead, as queue_stats counts it
        query = query.where(Job.state == JobState.QUEUED.value, Job.run_at > utcnow())
    elif state:
        query = query.where(Job.state == state)
    if task_type:
        query = query.where(Job.type == task_type)
    return [_view(s, job) for job in s.scalars(query.order_by(Job.id.desc()).limit(limit))]


def _forget_events(s: Session) -> None:
    """Drop the timelines of jobs that no longer exist."""
    s.execute(delete(JobEventRecord).where(JobEventRecord.job_id.not_in(select(Job.id))))


def _locked_job(s: Session, job_id: str) -> Job | None:
    return s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()


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
) -> JobView | None:
    """Move a job to ``state`` (checked against the state machine) and bump its seq.

    ``of_attempt``: the change reports on that attempt; if a later one has begun, it is
    stale and refused. ``resend``: the job's message was lost (Redis refused the retry),
    so it gets a new message id and waits, unsent, for the sweeper.
    Returns None when the job no longer exists; raises TransitionError when not allowed.
    """
    job = _locked_job(s, job_id)
    if job is None:
        return None
    if of_attempt is not None and job.attempt != of_attempt:
        raise TransitionError(f"attempt {of_attempt} is over; the job is on attempt {job.attempt}")
    check_transition(job.state, state)
    if resend:
        job.message_id, job.enqueued = new_message_id(), False
    now = utcnow()
    job.state = state.value
    job.seq += 1
    job.updated_at = now
    if stage is not None:
        job.stage = stage
    if progress is not None:
        job.progress = progress
    if attempt is not None:
        job.attempt = attempt
    if run_at is not None:
        job.run_at = run_at
    if state is JobState.QUEUED:
        # Back in the queue (dead-letter retry): a fresh run with fresh attempts.
        job.attempt, job.progress, job.stage = 0, 0, Stage.STORED.value
        job.error = job.traceback = job.result = None
        job.started_at = job.finished_at = job.run_at = None
    if state is JobState.ACTIVE:
        job.started_at = job.started_at or now
        job.error = None
    if error is not None:
        job.error = error
        job.traceback = traceback
    if result is not None:
        job.result = result
    if is_final(state):
        job.finished_at = now
    _record(s, job)
    view = _view(s, job)
    if view.image is not None:
        view.image.status = _IMAGE_STATUS[state]
    return view


def cancel_job(s: Session, *, job_id: str, user_id: str | None) -> JobView | None:
    """Cancel the job on request; raises TransitionError if it already finished."""
    view = get_job(s, job_id=job_id, user_id=user_id)
    if view is None:
        return None
    cancelled = transition(s, job_id=job_id, state=JobState.CANCELLED, stage="cancelled",
                           error={"type": "Cancelled", "message": "cancelled on request"})
    if cancelled is not None and cancelled.image is not None:
        cancelled.image.has_thumbnail = cancelled.image.has_preview = False
    return cancelled


def begin_attempt(s: Session, *, job_id: str, message_id: str | None = None) -> JobView | None:
    """Mark the job active for its next attempt; every delivery of its message counts.

    Raises TransitionError if it may not run (cancelled, finished) and AttemptsExhausted
    once all attempts are used (e.g. its worker died mid-run every time).
    """
    job = _locked_job(s, job_id)
    if job is None:
        return None
    if message_id is not None and job.message_id is not None and message_id != job.message_id:
        # A stale copy: the sweeper (or a DLQ retry) sent a newer message for this job.
        raise TransitionError(f"message {message_id} was superseded by {job.message_id}")
    check_transition(job.state, JobState.ACTIVE)
    if job.attempt >= job.max_attempts:
        lost = " (its worker stopped unexpectedly)" if job.state == JobState.ACTIVE.value else ""
        raise AttemptsExhausted(f"gave up after {job.attempt} attempts{lost}")
    return transition(s, job_id=job_id, state=JobState.ACTIVE, stage=Stage.STORED.value,
                      progress=0, attempt=job.attempt + 1)


def report_progress(s: Session, *, job_id: str, stage: str, progress: int,
                    image_id: str | None = None,
                    outputs: dict[str, Any] | None = None) -> JobView | None:
    """Record a progress step of an active job; None if it is not active (e.g. cancelled).

    ``outputs``: what the stage before produced, stored on image ``image_id`` in the same
    transaction (one write per step, not two); raises ImageDeleted if the image is gone.
    """
    job = _locked_job(s, job_id)
    if job is None or job.state != JobState.ACTIVE.value:
        return None
    target = image_id or str(job.image_id)
    if outputs and record_image_output(s, image_id=target, **outputs) is None:
        raise ImageDeleted(f"image {target} was deleted")
    job.stage = stage
    # Never backwards within an attempt (CONTRACT: job:progress never goes backwards).
    job.progress = max(job.progress, progress)
    job.seq += 1
    job.updated_at = utcnow()
    _record(s, job, PROGRESS)
    return _view(s, job)


# -- dead letters ------------------------------------------------------------------------------

def dead_letter(s: Session, *, job_id: str, error: dict[str, Any], traceback: str | None,
                attempts: int | None = None, of_attempt: int | None = None) -> JobView | None:
    """Fail the job for good and record the final error in the dead-letter queue."""
    view = transition(s, job_id=job_id, state=JobState.FAILED, stage="failed", error=error,
                      traceback=traceback, attempt=attempts, of_attempt=of_attempt)
    if view is None:
        return None
    job = view.job
    entry = s.get(DeadLetter, job.id) or DeadLetter(job_id=job.id)
    entry.user_id, entry.type, entry.payload = job.user_id, job.type, job.payload
    entry.error_type, entry.error_message = error["type"], error["message"]
    entry.traceback, entry.attempts, entry.failed_at = traceback, job.attempt, utcnow()
    s.add(entry)
    return view


def list_dead_letters(s: Session, *, limit: int, before: str | None = None,
                      task_type: str | None = None,
                      error: str | None = None) -> list[tuple[DeadLetter, JobView]]:
    """A page of dead letters, newest job first, optionally by type and error text."""
    query = select(DeadLetter, Job).join(Job, Job.id == DeadLetter.job_id)
    if before:
        query = query.where(DeadLetter.job_id < before)
    if task_type:
        query = query.where(DeadLetter.type == task_type)
    if error:
        pattern = f"%{error.lower()}%"
        query = query.where(func.lower(DeadLetter.error_type).like(pattern)
                            | func.lower(DeadLetter.error_message).like(pattern))
    rows = s.execute(query.order_by(DeadLetter.job_id.desc()).limit(limit)).all()
    return [(entry, _view(s, job)) for entry, job in rows]


def dead_letter_count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(DeadLetter)) or 0)


def dead_letter_ids(s: Session) -> list[str]:
    return list(s.scalars(select(DeadLetter.job_id).order_by(DeadLetter.job_id)))


def delete_dead_letter(s: Session, *, job_id: str) -> bool:
    result = s.execute(delete(DeadLetter).where(DeadLetter.job_id == job_id))
    return bool(getattr(result, "rowcount", 0))


def clear_dead_letters(s: Session) -> int:
    result = s.execute(delete(DeadLetter))
    return int(getattr(result, "rowcount", 0) or 0)


def requeue_failed(s: Session, *, job_id: str, user_id: str | None = None,
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
    view = transition(s, job_id=job_id, state=JobState.QUEUED)
    if view is None:
        return None
    view.job.message_id, view.job.enqueued = new_message_id(), False
    if entry is not None:
        s.delete(entry)
    return undo, view


# -- webhooks ----------------------------------------------------------------------------------

MAX_WEBHOOKS_PER_USER = 20
WEBHOOK_TASK = WEBHOOK_DELIVER.name
WEBHOOK_QUEUE = WEBHOOK_DELIVER.queue


def create_webhook(s: Session, *, user_id: str, url: str,
                   max_per_user: int = MAX_WEBHOOKS_PER_USER) -> Webhook | None:
    """Register a URL; None when the user already has ``max_per_user``
    (MAX_WEBHOOKS_PER_USER)."""
    count = s.scalar(select(func.count()).select_from(Webhook).where(Webhook.user_id == user_id))
    if (count or 0) >= max_per_user:
        return None
    hook = Webhook(id=new_id(), user_id=user_id, url=url, created_at=utcnow())
    s.add(hook)
    s.flush()
    return hook


def list_webhooks(s: Session, *, user_id: str) -> list[Webhook]:
    return list(s.scalars(select(Webhook).where(Webhook.user_id == user_id)
                          .order_by(Webhook.id)))


def delete_webhook(s: Session, *, user_id: str, webhook_id: str) -> bool:
    result = s.execute(delete(Webhook).where(Webhook.id == webhook_id,
                                             Webhook.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


def end_with_deliveries(s: Session, *, change: Callable[..., JobView | None],
                        webhook: Callable[[JobView], tuple[str, dict[str, Any]]],
                        **fields: Any) -> tuple[JobView | None, list[JobView]]:
    """Run a state change (``transition``, ``dead_letter``, ``cancel_job``…); if it ended the
    job, queue its owner's webhook deliveries in the same transaction, so that no job ends
    without them. ``webhook`` makes the delivery's event name and body from the ended job.
    Every delivery gets the type's own attempts (WEBHOOK_MAX_ATTEMPTS) and none is dropped
    (see create_webhook_deliveries)."""
    view = change(s, **fields)
    if view is None or not is_final(view.job.state):
        return view, []
    event, body = webhook(view)
    return view, create_webhook_deliveries(s, job=view.job, event=event, body=body)


def create_webhook_deliveries(s: Session, *, job: Job, event: str,
                              body: dict[str, Any]) -> list[JobView]:
    """One queued ``webhook.deliver`` job per URL the job's owner registered, each with the
    type's own attempts (WEBHOOK_MAX_ATTEMPTS).

    Deliveries of deliveries are not made: a failing webhook must not feed itself. None is
    ever dropped, however many of the owner's are unfinished: every final state is POSTed
    (the public contract). Their number is bounded upstream (job rates, at most
    MAX_WEBHOOKS_PER_USER URLs), and how many run at once is the dispatcher's to cap.
    """
    if job.type == WEBHOOK_TASK:
        return []
    return [
        create_job(s, user_id=job.user_id, task_type=WEBHOOK_TASK, queue=WEBHOOK_QUEUE,
                   payload={"url": hook.url, "event": event, "body": body},
                   max_attempts=WEBHOOK_MAX_ATTEMPTS)
        for hook in list_webhooks(s, user_id=job.user_id)
    ]


def count_unfinished(s: Session, *, user_id: str, task_type: str) -> int:
    """How many of the user's jobs of ``task_type`` are queued, running or retrying."""
    unfinished = (JobState.QUEUED.value, JobState.ACTIVE.value, JobState.RETRYING.value)
    return int(s.scalar(select(func.count()).select_from(Job).where(
        Job.user_id == user_id, Job.type == task_type, Job.state.in_(unfinished))) or 0)


# -- batches -----------------------------------------------------------------------------------

def create_batch(s: Session, *, user_id: str, files: int) -> Batch:
    batch = Batch(id=new_id(), user_id=user_id, files=files, created_at=utcnow())
    s.add(batch)
    s.flush()
    return batch


def batch_summary(s: Session, *, batch_id: str, user_id: str | None) -> dict[str, Any] | None:
    """``{"id", "total", "done", "failed", "progress"}``: total counts the batch's jobs,
    done the completed ones, failed those failed or cancelled; progress (0-100) is the
    mean of their progress, ended jobs counting as 100."""
    query = select(Batch).where(Batch.id == batch_id)
    if user_id is not None:
        query = query.where(Batch.user_id == user_id)
    batch = s.scalars(query).first()
    if batch is None:
        return None
    rows = s.execute(select(Job.state, Job.progress).where(Job.batch_id == batch_id)).all()
    done = sum(1 for state, _ in rows if state == JobState.COMPLETED.value)
    failed = sum(1 for state, _ in rows
                 if state in (JobState.FAILED.value, JobState.CANCELLED.value))
    points = [100 if is_final(state) else progress for state, progress in rows]
    return {"id": batch.id, "total": len(rows), "files": batch.files, "done": done,
            "failed": failed, "progress": round(sum(points) / len(points)) if points else 100,
            "created_at": iso(batch.created_at)}


def batch_jobs(s: Session, *, batch_id: str) -> list[JobView]:
    return [_view(s, job) for job in
            s.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id))]


# -- schedules ---------------------------------------------------------------------------------

MAX_SCHEDULES_PER_USER = 100


def create_schedule(s: Session, *, user_id: str, task_type: str, payload: dict[str, Any],
                    cron: str, timezone: str, priority: str, max_attempts: int,
                    next_run_at: datetime,
                    max_per_user: int = MAX_SCHEDULES_PER_USER) -> Schedule | None:
    """Record a schedule; None when the user already has ``max_per_user``
    (MAX_SCHEDULES_PER_USER)."""
    count = s.scalar(select(func.count()).select_from(Schedule)
                     .where(Schedule.user_id == user_id))
    if (count or 0) >= max_per_user:
        return None
    schedule = Schedule(id=new_id(), user_id=user_id, type=task_type, payload=payload,
                        cron=cron, timezone=timezone, priority=priority,
                        max_attempts=max_attempts, next_run_at=_utc(next_run_at),
                        created_at=utcnow())
    s.add(schedule)
    s.flush()
    return schedule


def _utc(value: datetime) -> datetime:
    """The same instant in UTC: SQLite stores a datetime's wall-clock time and drops its
    zone, so a next run in the schedule's own zone (cron.next_run) would move."""
    return as_utc(value).astimezone(UTC)


def list_schedules(s: Session, *, user_id: str) -> list[Schedule]:
    return list(s.scalars(select(Schedule).where(Schedule.user_id == user_id)
                          .order_by(Schedule.id)))


def delete_schedule(s: Session, *, user_id: str, schedule_id: str) -> bool:
    result = s.execute(delete(Schedule).where(Schedule.id == schedule_id,
                                              Schedule.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


def due_schedules(s: Session, *, now: datetime, limit: int = 100) -> list[Schedule]:
    return list(s.scalars(select(Schedule).where(Schedule.next_run_at <= now)
                          .order_by(Schedule.next_run_at).limit(limit)))


def fire_schedule(s: Session, *, schedule_id: str, due: datetime, next_run_at: datetime,
                  queue: str | None, image_field: str | None = None,
                  priority: str | None = None, max_attempts: int | None = None
                  ) -> JobView | None:
    """Make one firing's job and move the schedule on, in one transaction.

    None if that firing was already made (another scheduler moved the schedule on), or
    makes no job: ``queue`` None (its type is gone, or the firing is skipped) or its image
    is busy. A schedule whose image was deleted is deleted too. ``priority`` and
    ``max_attempts``, when given, replace the schedule's own for this job (the rules of
    today, for a schedule made under older ones).
    """
    schedule = s.scalars(select(Schedule).where(Schedule.id == schedule_id)
                         .with_for_update()).first()
    if schedule is None or as_utc(schedule.next_run_at) != as_utc(due):
        return None
    schedule.next_run_at = _utc(next_run_at)
    if queue is None:
        return None
    image_id = schedule.payload.get(image_field) if image_field else None
    try:
        view = create_task_job(s, user_id=schedule.user_id, task_type=schedule.type,
                               queue=queue, payload=dict(schedule.payload),
                               max_attempts=max_attempts or schedule.max_attempts,
                               priority=priority or schedule.priority, image_id=image_id)
    except ImageBusy:
        return None
    if view is None:
        s.delete(schedule)
    return view


# -- retention -----------------------------------------------------------------------------------

def purge_finished(s: Session, *, finished_before: datetime) -> list[str]:
    """Delete what finished before the cutoff; returns the ids of images whose files go too.

    Images whose current job ended before the cutoff go with all their jobs; other jobs
    that ended before it go too. Kept: anything in the dead-letter queue (until an admin
    clears it) and anything unfinished.
    """
    finals = [state.value for state in JobState if is_final(state)]
    dead = select(DeadLetter.job_id)
    old_jobs = select(Job.id).where(Job.state.in_(finals), Job.finished_at < finished_before,
                                    Job.id.not_in(dead))
    image_ids = list(s.scalars(select(Image.id).where(Image.job_id.in_(old_jobs))))
    if image_ids:
        s.execute(delete(Image).where(Image.id.in_(image_ids)))
        s.execute(delete(Job).where(Job.image_id.in_(image_ids), Job.id.not_in(dead),
                                    Job.state.in_(finals)))
    s.execute(delete(Job).where(Job.state.in_(finals), Job.finished_at < finished_before,
                                Job.id.not_in(dead),
                                Job.id.not_in(select(Image.job_id)
                                              .where(Image.job_id.is_not(None)))))
    s.execute(delete(Batch).where(Batch.created_at < finished_before,
                                  Batch.id.not_in(select(Job.batch_id)
                                                  .where(Job.batch_id.is_not(None)))))
    _forget_events(s)
    return image_ids


def existing_image_ids(s: Session, *, image_ids: list[str]) -> set[str]:
    """Which of these ids still have an image row (for the orphan-file clean-up)."""
    found: set[str] = set()
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start:start + 500]
        found.update(s.scalars(select(Image.id).where(Image.id.in_(chunk))))
    return found


# -- queues ------------------------------------------------------------------------------------

_COUNTED_STATES = ("queued", "delayed", "active", "retrying", "completed", "failed", "cancelled")
THROUGHPUT_WINDOW = timedelta(minutes=5)


def queue_stats(s: Session, *, base: str) -> dict[str, Any]:
    """Counts by state (``delayed`` = queued with a future run_at), the oldest waiting job's
    age, and completions per minute over the last five minutes, for one queue family."""
    now = utcnow()
    family = queue_family(base)
    delayed = (Job.state == JobState.QUEUED.value) & (Job.run_at > now)
    label = case((delayed, "delayed"), else_=Job.state)
    counts = dict.fromkeys(_COUNTED_STATES, 0)
    for state, count in s.execute(select(label, func.count()).where(Job.queue.in_(family))
                                  .group_by(label)):
        counts[str(state)] = int(count)
    oldest = s.scalar(
        select(func.min(func.coalesce(Job.run_at, Job.created_at)))
        .where(Job.queue.in_(family), Job.state == JobState.QUEUED.value)
        .where(Job.run_at.is_(None) | (Job.run_at <= now)))
    done = s.scalar(select(func.count()).select_from(Job).where(
        Job.queue.in_(family), Job.state == JobState.COMPLETED.value,
        Job.finished_at >= now - THROUGHPUT_WINDOW)) or 0
    return {
        "counts": counts,
        "oldest_waiting_s": round((now - as_utc(oldest)).total_seconds(), 1) if oldest else None,
        "throughput_per_min": round(done / (THROUGHPUT_WINDOW.total_seconds() / 60), 2),
    }


def job_counts_by_type(s: Session, *, types: Iterable[str] = ()) -> dict[tuple[str, str], int]:
    """How many jobs of each type are in each state (``delayed`` as in queue_stats); the
    ``types`` given and every type found get all states, zeros included."""
    now = utcnow()
    delayed = (Job.state == JobState.QUEUED.value) & (Job.run_at > now)
    label = case((delayed, "delayed"), else_=Job.state)
    counts: dict[tuple[str, str], int] = {}
    for job_type, state, count in s.execute(
            select(Job.type, label, func.count()).group_by(Job.type, label)):
        counts[(str(job_type), str(state))] = int(count)
    for job_type in {*types, *(job_type for job_type, _ in counts)}:
        for state in _COUNTED_STATES:
            counts.setdefault((job_type, state), 0)
    return counts


# What a metrics scrape reads. Unfinished jobs are the backlog: counted on every scrape,
# through the state index, so a scrape costs the work waiting, never the history. Finished
# jobs are the history: counted by ``finished_job_counts``, a pass over them all, which the
# scrape runs at most once per METRICS_RECOUNT_S for the whole deployment.
_UNFINISHED = (JobState.QUEUED.value, JobState.ACTIVE.value, JobState.RETRYING.value)


def unfinished_job_counts(s: Session, *, now: datetime) -> list[tuple[str, str, str, int]]:
    """``(queue, type, state, jobs)`` of unfinished jobs (``delayed`` as in queue_stats)."""
    delayed = (Job.state == JobState.QUEUED.value) & (Job.run_at > now)
    label = case((delayed, "delayed"), else_=Job.state)
    rows = s.execute(select(Job.queue, Job.type, label, func.count())
                     .where(Job.state.in_(_UNFINISHED)).group_by(Job.queue, Job.type, label))
    return [(str(queue), str(job_type), str(state), int(count))
            for queue, job_type, state, count in rows]


def oldest_waiting(s: Session, *, now: datetime) -> dict[str, datetime]:
    """Per queue, since when its oldest job due to run has waited (run_at, else created)."""
    rows = s.execute(
        select(Job.queue, func.min(func.coalesce(Job.run_at, Job.created_at)))
        .where(Job.state == JobState.QUEUED.value)
        .where(Job.run_at.is_(None) | (Job.run_at <= now)).group_by(Job.queue))
    return {str(queue): as_utc(since) for queue, since in rows if since is not None}


def finished_job_counts(s: Session, *,
                        since: datetime) -> tuple[list[tuple[str, str, str, int, int]], int]:
    """``(queue, type, state, jobs, completed at or after since)`` of finished jobs, and the
    dead letters: a pass over every stored finished job (see above)."""
    finals = [state.value for state in JobState if is_final(state)]
    recent = (Job.state == JobState.COMPLETED.value) & (Job.finished_at >= since)
    rows = s.execute(
        select(Job.queue, Job.type, Job.state, func.count(),
               func.sum(case((recent, 1), else_=0)))
        .where(Job.state.in_(finals)).group_by(Job.queue, Job.type, Job.state))
    counts = [(str(queue), str(job_type), str(state), int(count), int(done or 0))
              for queue, job_type, state, count, done in rows]
    return counts, dead_letter_count(s)


def mark_paused(s: Session, *, base: str, paused: bool) -> list[JobView]:
    """Show the family's waiting jobs as paused (or waiting again); returns those changed."""
    before, after = (Stage.STORED.value, Stage.PAUSED.value) if paused else \
        (Stage.PAUSED.value, Stage.STORED.value)
    jobs = list(s.scalars(select(Job).where(
        Job.queue.in_(queue_family(base)), Job.state == JobState.QUEUED.value,
        Job.stage == before).with_for_update()))
    for job in jobs:
        job.stage, job.seq, job.updated_at = after, job.seq + 1, utcnow()
        _record(s, job)
    return [_view(s, job) for job in jobs]


def show_paused(s: Session, *, job_id: str) -> JobView | None:
    """Mark one waiting job as held by a paused queue; None if there is nothing to change."""
    job = _locked_job(s, job_id)
    if job is None or job.state != JobState.QUEUED.value or job.stage == Stage.PAUSED.value:
        return None
    job.stage, job.seq, job.updated_at = Stage.PAUSED.value, job.seq + 1, utcnow()
    _record(s, job)
    return _view(s, job)


def clean_finished(s: Session, *, base: str, finished_before: datetime) -> int:
    """Delete the family's final jobs finished before the cutoff; returns how many.

    Kept: jobs in the dead-letter queue (until an admin clears them) and the current
    job of an existing image (its <Image> names it).
    """
    finals = [state.value for state in JobState if is_final(state)]
    keep_dead = select(DeadLetter.job_id)
    keep_current = select(Image.job_id).where(Image.job_id.is_not(None))
    result = s.execute(delete(Job).where(
        Job.queue.in_(queue_family(base)), Job.state.in_(finals),
        Job.finished_at < finished_before, Job.id.not_in(keep_dead),
        Job.id.not_in(keep_current)))
    _forget_events(s)
    return int(getattr(result, "rowcount", 0) or 0)


# -- message bookkeeping -----------------------------------------------------------------------

def new_message_id() -> str:
    return str(uuid.uuid4())


def mark_enqueued(s: Session, *, job_id: str, message_id: str) -> None:
    """Note that the job's message reached Redis (unless a newer one replaced it)."""
    job = s.get(Job, job_id)
    if job is not None and job.message_id == message_id:
        job.enqueued = True


def mark_enqueued_many(s: Session, *, sent: dict[str, str]) -> None:
    """``mark_enqueued`` for many jobs at once (job id → the message id that was sent)."""
    for job in s.scalars(select(Job).where(Job.id.in_(sent))):
        if job.message_id == sent[job.id]:
            job.enqueued = True


_WAITING = (JobState.QUEUED.value, JobState.RETRYING.value)


def unsent_jobs(s: Session, *, changed_before: datetime, limit: int = 100) -> list[Job]:
    """Waiting jobs whose message never reached Redis.

    A web process died between commit and enqueue, or Redis refused a retry's enqueue.
    """
    return list(s.scalars(
        select(Job).where(Job.state.in_(_WAITING), Job.enqueued.is_(False),
                          Job.updated_at < changed_before).order_by(Job.id).limit(limit)))


def silent_active_jobs(s: Session, *, changed_before: datetime, limit: int = 100) -> list[Job]:
    """Active jobs with no stored change for a long while (the caller checks their leases)."""
    return list(s.scalars(
        select(Job).where(Job.state == JobState.ACTIVE.value, Job.updated_at < changed_before)
        .order_by(Job.id).limit(limit)))


def renew_message(s: Session, *, job_id: str, changed_before: datetime) -> Job | None:
    """Give a stuck job a new message id (any older copy will be skipped) and return it.

    Stuck means: waiting with its message unsent, or active (its run is gone: the caller
    checked the lease). None if the job moved on since (it changed after
    ``changed_before``, or was sent meanwhile).
    """
    job = _locked_job(s, job_id)
    if job is None or as_utc(job.updated_at) >= changed_before:
        return None
    waiting_unsent = job.state in _WAITING and not job.enqueued
    if not (waiting_unsent or job.state == JobState.ACTIVE.value):
        return None
    job.message_id, job.enqueued = new_message_id(), False
    return job


def snapshot_window() -> datetime:
    """Jobs finished after this instant still go into ``jobs:snapshot`` (10 minutes, CONTRACT)."""
    return utcnow() - timedelta(minutes=10)
