"""Job states, stages and the transitions allowed between them (pure)."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life; the wire value is the member's value."""

    QUEUED = "queued"
    """Waiting in the queue; with a future ``run_at`` it is delayed."""
    ACTIVE = "active"
    """A worker is running it."""
    RETRYING = "retrying"
    """An attempt failed with a transient error; the next one is scheduled."""
    COMPLETED = "completed"
    """Finished with a result."""
    FAILED = "failed"
    """Finished without a result after its last attempt; it is in the dead-letter queue."""
    CANCELLED = "cancelled"
    """Stopped on request (or its input vanished) before it finished."""


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
# The states of a job not finished yet (waiting or running).
UNFINISHED_STATES = (JobState.QUEUED.value, JobState.ACTIVE.value, JobState.RETRYING.value)

# The contract's state diagram; re-queueing from a final state happens only via DLQ retry.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ACTIVE, JobState.CANCELLED, JobState.FAILED}),
    JobState.ACTIVE: frozenset(
        {JobState.ACTIVE, JobState.RETRYING, JobState.COMPLETED, JobState.FAILED,
         JobState.CANCELLED}
    ),
    JobState.RETRYING: frozenset({JobState.ACTIVE, JobState.CANCELLED, JobState.FAILED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset(),
}


class Stage(StrEnum):
    """Human-readable steps of an image job, in order."""

    PAUSED = "paused"  # waiting in a paused queue (admin), not a processing step
    STORED = "stored"
    DECODING = "decoding"
    THUMBNAIL = "thumbnail"
    PREVIEW = "preview"
    METADATA = "metadata"
    DONE = "done"


# Progress (0-100) reported when each stage starts; it only ever rises within an attempt.
STAGE_PROGRESS: dict[Stage, int] = {
    Stage.PAUSED: 0,
    Stage.STORED: 0,
    Stage.DECODING: 10,
    Stage.THUMBNAIL: 40,
    Stage.PREVIEW: 65,
    Stage.METADATA: 90,
    Stage.DONE: 100,
}


class TransitionError(Exception):
    """A state change the job's state machine does not allow."""


def can_transition(current: JobState | str, target: JobState | str) -> bool:
    """Whether a job in ``current`` may move to ``target``."""
    return JobState(target) in ALLOWED[JobState(current)]


def check_transition(current: JobState | str, target: JobState | str) -> None:
    """Raise TransitionError unless ``current`` → ``target`` is allowed."""
    if not can_transition(current, target):
        raise TransitionError(f"job cannot go from {current} to {target}")


def is_final(state: JobState | str) -> bool:
    """Whether no further work will happen for a job in ``state``."""
    return JobState(state) in FINAL_STATES


class ImageBusy(Exception):
    """The image already has a job waiting or running; a second one would race it."""


class ImageDeleted(Exception):
    """The image a job works on was deleted while the job ran."""


class AttemptsExhausted(Exception):
    """The job has used all its attempts (each delivery of its message counts as one)."""


# One queue (and one actor) per priority: Dramatiq's Redis broker has no per-message
# priority (FACTS.md §1). Workers order what they have fetched by actor priority
# (lower first), so a high job overtakes waiting normal and low ones.
PRIORITY_ORDER = {"high": 0, "normal": 50, "low": 100}


def queue_for(base_queue: str, priority: str) -> str:
    """The Redis queue of a priority: ``images``, ``images.high``, ``images.low``."""
    return base_queue if priority == "normal" else f"{base_queue}.{priority}"


def actor_for(type_name: str, priority: str) -> str:
    """The actor name of a type at a priority: ``image.process``, ``image.process@high``."""
    return type_name if priority == "normal" else f"{type_name}@{priority}"


def base_queue(queue: str) -> str:
    """``images.high`` → ``images``; Dramatiq's delay queues too (``images.low.DQ``)."""
    queue = queue.removesuffix(".DQ")
    head, _, tail = queue.rpartition(".")
    return head if head and tail in PRIORITY_ORDER else queue


def queue_family(base: str) -> list[str]:
    """Every priority's queue of one base queue."""
    return [queue_for(base, priority) for priority in PRIORITY_ORDER]
