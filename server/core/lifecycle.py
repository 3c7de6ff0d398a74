"""What a job's state change writes besides its state, and what it does to its image (pure).

The store reads a job row, asks these functions what changes, and writes the answer; the
rules live here so that they are read, and tested, without a database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from server.core.jobs import (
    AttemptsExhausted,
    JobState,
    Stage,
    check_transition,
    is_final,
)


class ImageStatus(StrEnum):
    """An image's status (CONTRACT <Image>); it follows the state of its current job."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


IMAGE_STATUS: dict[JobState, ImageStatus] = {
    JobState.QUEUED: ImageStatus.QUEUED,
    JobState.ACTIVE: ImageStatus.PROCESSING,
    JobState.RETRYING: ImageStatus.PROCESSING,
    JobState.COMPLETED: ImageStatus.READY,
    JobState.FAILED: ImageStatus.FAILED,
    JobState.CANCELLED: ImageStatus.FAILED,
}

# The stage a job ends in when it is cancelled or fails for good.
CANCELLED_STAGE = "cancelled"
FAILED_STAGE = "failed"

# Finished jobs still go into ``jobs:snapshot`` for this long (CONTRACT: 10 minutes).
SNAPSHOT_WINDOW = timedelta(minutes=10)
# See hung_after_ms.
HUNG_GRACE_MS = 600_000


def image_status(state: JobState | str) -> ImageStatus:
    """The status of an image whose current job is in ``state``."""
    return IMAGE_STATUS[JobState(state)]


def cancel_error() -> dict[str, Any]:
    """The error of a job cancelled on request (the CONTRACT's ``{"type", "message"}``)."""
    return {"type": "Cancelled", "message": "cancelled on request"}


def cancelled_image_fields() -> dict[str, Any]:
    """What a cancelled job leaves of its image: no renditions (their files may be gone)."""
    return {"has_thumbnail": False, "has_preview": False}


def transition_fields(
    current: JobState | str,
    target: JobState,
    *,
    now: datetime,
    started_at: datetime | None,
    stage: str | None = None,
    progress: int | None = None,
    attempt: int | None = None,
    run_at: datetime | None = None,
    error: dict[str, Any] | None = None,
    traceback: str | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns a move from ``current`` to ``target`` writes (name → value), besides
    seq and the message; raises TransitionError if the state machine forbids the move.

    The fields given are written as asked, then the target's own rules win: back in the
    queue (a dead-letter retry) is a fresh run with fresh attempts; a run starts once and
    clears the last error; an end is stamped. ``started_at``: the job's, before the move.
    """
    check_transition(current, target)
    fields: dict[str, Any] = {"state": target.value, "updated_at": now}
    asked = {"stage": stage, "progress": progress, "attempt": attempt, "run_at": run_at}
    fields.update({name: value for name, value in asked.items() if value is not None})
    if target is JobState.QUEUED:
        fields.update(attempt=0, progress=0, stage=Stage.STORED.value, error=None,
                      traceback=None, result=None, started_at=None, finished_at=None,
                      run_at=None)
    if target is JobState.ACTIVE:
        # The attempt before kept its error and traceback in the timeline (job_events).
        fields.update(started_at=started_at or now, error=None, traceback=None)
    if error is not None:
        fields.update(error=error, traceback=traceback)
    if result is not None:
        fields["result"] = result
    if is_final(target):
        fields["finished_at"] = now
    return fields


def next_attempt(*, state: JobState | str, attempt: int, max_attempts: int) -> int:
    """The number of the attempt a delivery of the job's message begins.

    Every delivery counts, so a job whose worker died mid-run every time runs out too.
    Raises TransitionError if the job may not run (cancelled, finished) and
    AttemptsExhausted once all its attempts are used.
    """
    check_transition(state, JobState.ACTIVE)
    if attempt >= max_attempts:
        lost = " (its worker stopped unexpectedly)" if state == JobState.ACTIVE.value else ""
        raise AttemptsExhausted(f"gave up after {attempt} attempts{lost}")
    return attempt + 1


def hung_after_ms(time_limit_ms: float, *, grace_ms: float = HUNG_GRACE_MS) -> float:
    """How long a run may last before it is taken for hung, stuck in a call that Dramatiq's
    time limit (an exception delivered between bytecodes) cannot interrupt: twice its time
    limit and a grace. The limit's exception, once delivered, and the failure's writes
    take far less."""
    return 2 * time_limit_ms + grace_ms


def reported_progress(current: int, reported: int) -> int:
    """The progress to store for a step: never backwards within an attempt (CONTRACT)."""
    return max(current, reported)


def snapshot_since(now: datetime) -> datetime:
    """Jobs finished after this instant still go into ``jobs:snapshot``."""
    return now - SNAPSHOT_WINDOW
