"""The REST answers, and the <Job> and <Image> that events carry (pure).

Every field is sent (null where the type allows it) unless its default is UNSET, and no
other field is: ``forbid_unknown_fields`` makes the OpenAPI schema of each one closed.
Times are strings already in the contract's form (``data.models.iso``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from server.core.jobs import JobState
from server.core.lifecycle import ImageStatus
from server.core.queue_figures import COUNTED_STATES
from server.core.wire.fields import Count, Id, JsonObject, Percent, Priority, Time, ref


class Shape(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A closed JSON object of the API."""


# --------------------------------------------------------------------------- errors

class ErrorDetail(Shape, frozen=True):
    """What went wrong: switch on ``code``, show ``message``."""

    code: Annotated[str, Meta(pattern="^[a-z][a-z0-9_]*$",
                              description="Stable, snake_case; switch on this.")]
    message: Annotated[str, Meta(description="For people; may change.")]
    fields: Annotated[dict[str, str], Meta(
        description="Payload validation: field path → problem.")] | UnsetType = UNSET


class Error(Shape, frozen=True):
    """Every error answer (CONTRACT ``{"error": {"code", "message"}}``)."""

    error: ErrorDetail


class ErrorBody(Shape, frozen=True):
    """An error inside a successful answer (a refused file, a dead letter not retried)."""

    code: str
    message: str


# --------------------------------------------------------------------------- images, jobs

class Session(Shape, frozen=True):
    """A new user and its bearer token."""

    token: Annotated[str, Meta(description="The bearer token.")]
    user_id: Id


class ImageMetadata(Shape, frozen=True):
    """Read by the worker; width and height after EXIF orientation."""

    width: Annotated[int, Meta(ge=1)]
    height: Annotated[int, Meta(ge=1)]
    format: str
    mode: Annotated[str, Meta(description="Pillow mode, e.g. RGB.")]
    frames: Annotated[int, Meta(ge=1)]
    camera_make: str | None
    camera_model: str | None
    taken_at: str | None
    has_gps: bool


class Image(Shape, frozen=True):
    """<Image> (CONTRACT.md); file URLs are signed, expiring, and null until the file exists."""

    id: Id
    status: ImageStatus
    filename: Annotated[str, Meta(description="Display-safe; never a path.")]
    content_type: Annotated[str, Meta(description="Sniffed from the bytes.")]
    size_bytes: Annotated[int, Meta(ge=1)]
    width: Annotated[int, Meta(ge=1)]
    height: Annotated[int, Meta(ge=1)]
    format: str
    metadata: ImageMetadata | None
    thumbnail_url: Annotated[str, Meta(
        description="Signed, expiring; null until the file exists.")] | None
    preview_url: str | None
    original_url: Annotated[str, Meta(description="Signed, expiring.")]
    created_at: Time
    job_id: Id | None


class JobError(Shape, frozen=True):
    """Why a job's attempt failed."""

    type: Annotated[str, Meta(description="The exception type, e.g. InvalidImage.")]
    message: str
    retryable: Annotated[bool, Meta(
        description="Whether another run could succeed (transient).")] | UnsetType = UNSET


class Job(Shape, frozen=True):
    """<Job> (CONTRACT.md): what GET /api/jobs/{id} answers and every job event carries."""

    id: Id
    type: Annotated[str, Meta(description="The task type, e.g. image.process.")]
    state: JobState
    progress: Percent
    stage: Annotated[str, Meta(description=(
        "Human-readable step: stored, decoding, thumbnail, preview, metadata, done for "
        "images; paused while its queue is; each type has its own."))]
    attempt: Count
    max_attempts: Annotated[int, Meta(ge=1)]
    error: JobError | None
    result: Annotated[dict[str, Any], Meta(description=(
        'Type-specific; a completed image job has {"image": <Image>}.'))] | None
    image_id: Id | None
    batch_id: Id | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    run_at: Annotated[str, Meta(description="When a delayed or retrying job may run.",
                                extra_json_schema={"format": "date-time"})] | None
    priority: Priority
    queue_position: Annotated[int, Meta(
        ge=0, description="Jobs that will start before it, while queued.")] | None
    seq: Annotated[int, Meta(ge=1, description=(
        "Grows with every stored change; drop older events."))]


class JobEnvelope(Shape, frozen=True):
    """One job."""

    job: Job


class JobPage(Shape, frozen=True):
    """A page of jobs, newest first; ``next_before`` is the next page's cursor."""

    items: list[Job]
    next_before: Id | None


class ImagePage(Shape, frozen=True):
    """A page of images, newest first; ``next_before`` is the next page's cursor."""

    items: list[Image]
    next_before: Id | None


class Upload(Shape, frozen=True):
    """A stored upload and its job."""

    image: Image
    job: Job
    duplicate: Annotated[Literal[True], Meta(
        description="Present when these bytes were uploaded before.")] | UnsetType = UNSET


class RefusedFile(Shape, frozen=True):
    """A file of a batch that was refused, and why."""

    error: ErrorBody
    filename: str


class BatchSummary(Shape, frozen=True):
    """Where a batch upload stands (``batch:progress`` carries the same)."""

    id: Id
    total: Annotated[int, Meta(ge=0, description="Jobs in the batch.")]
    files: Annotated[int, Meta(ge=0, description="Files sent, refused ones included.")]
    done: Annotated[int, Meta(ge=0, description="Jobs completed.")]
    failed: Annotated[int, Meta(ge=0, description="Jobs failed or cancelled.")]
    progress: Percent
    created_at: Time


# Upload | RefusedFile: msgspec takes unions of untagged Structs in no schema, and the
# contract's items carry no tag; the schema names both (``schema.components`` adds them).
BatchItem = Annotated[Any, Meta(extra_json_schema={"anyOf": [ref("Upload"),
                                                             ref("RefusedFile")]})]


class BatchUpload(Shape, frozen=True):
    """A batch upload: each good file became a job; each refused one is an item with its
    error."""

    batch: BatchSummary
    items: list[BatchItem]


class Batch(Shape, frozen=True):
    """A batch and its jobs."""

    batch: BatchSummary
    jobs: list[Job]


class TimelineEvent(Shape, frozen=True):
    """One stored change of a job."""

    seq: Annotated[int, Meta(ge=1)]
    name: Annotated[str, Meta(description="The event, e.g. job:progress.")]
    state: JobState
    stage: str
    progress: Percent
    error: JobError | None
    at: Time
    worker: Annotated[str, Meta(description=(
        "job:active: the worker thread that began the attempt, host:pid:thread."))] | None


class StageTime(Shape, frozen=True):
    """A stage of an attempt, as reported: its start and how long it took."""

    stage: str
    started_at: Time
    seconds: Annotated[float, Meta(ge=0, description="null while it runs.")] | None


class Attempt(Shape, frozen=True):
    """One run of a job: who ran it, its stages, how it ended and the wait after it."""

    number: Annotated[int, Meta(ge=1, description="1 for the job's first run.")]
    worker: Annotated[str, Meta(description="host:pid:thread.")] | None
    started_at: Time
    ended_at: Time | None
    seconds: Annotated[float, Meta(ge=0)] | None
    outcome: Annotated[str, Meta(description=(
        "The state it ended in (completed, retrying, failed, cancelled); lost when its "
        "worker died before it ended; null while it runs."))] | None
    stages: list[StageTime]
    error: JobError | None
    traceback: str | None
    backoff_s: Annotated[float, Meta(ge=0, description=(
        "From its end to the next attempt's start."))] | None


class Delivery(Shape, frozen=True):
    """A webhook delivery of a job's end: where, which event, and how it went."""

    id: Id
    url: str
    event: Annotated[str, Meta(description="e.g. job.completed.")]
    state: JobState
    attempt: Count
    max_attempts: Annotated[int, Meta(ge=1)]
    status: Annotated[int, Meta(description="The receiver's HTTP status, once delivered.")] \
        | None
    error: JobError | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None


class Timeline(Shape, frozen=True):
    """A job, its payload, traceback, attempts, webhook deliveries and every stored change."""

    job: Job
    payload: JsonObject
    traceback: str | None
    attempts: list[Attempt]
    deliveries: Annotated[list[Delivery], Meta(description=(
        "The newest webhook deliveries of its ends (at most 50), newest first."))]
    events: list[TimelineEvent]


# --------------------------------------------------------------------------- tasks

class TaskType(Shape, frozen=True):
    """A registered task type."""

    type: str
    description: str
    queue: str
    payload_schema: Annotated[dict[str, Any], Meta(description="A JSON Schema subset.")]
    max_attempts: Annotated[int, Meta(ge=1, description=(
        "A ceiling on the attempts a job of this type gets; null: RETRY_MAX_ATTEMPTS "
        "unless the caller asks."))] | None
    time_limit_s: Annotated[int, Meta(ge=1)] | None


class TaskTypes(Shape, frozen=True):
    """Every public task type."""

    types: list[TaskType]


class Schedule(Shape, frozen=True):
    """A repeating task: each firing creates a job of its owner's."""

    id: Id
    type: str
    payload: JsonObject
    cron: str
    timezone: str
    next_run_at: Time
    priority: Priority
    max_attempts: Annotated[int, Meta(ge=1)]
    created_at: Time


class ScheduleEnvelope(Shape, frozen=True):
    """One schedule."""

    schedule: Schedule


class Schedules(Shape, frozen=True):
    """The caller's schedules."""

    items: list[Schedule]


# --------------------------------------------------------------------------- webhooks

class Webhook(Shape, frozen=True):
    """A URL that receives every final state of its owner's jobs."""

    id: Id
    url: str
    created_at: Time


SigningSecret = Annotated[str | None, Meta(description=(
    "Signs deliveries (X-Darkroom-Signature); null when the server has no WEBHOOK_SECRET."))]


class WebhookCreated(Shape, frozen=True):
    """A new webhook and the key its deliveries are signed with."""

    webhook: Webhook
    signing_secret: SigningSecret


class Webhooks(Shape, frozen=True):
    """The caller's webhooks and the key their deliveries are signed with."""

    items: list[Webhook]
    signing_secret: SigningSecret


# --------------------------------------------------------------------------- admin

class DeadLetterError(Shape, frozen=True):
    """The error a dead letter ended with."""

    type: str
    message: str
    traceback: str | None


class DeadLetterItem(Shape, frozen=True):
    """A job that failed for good."""

    job: Job
    error: DeadLetterError
    attempts: Count
    failed_at: Time
    payload: JsonObject


class DeadLetterPage(Shape, frozen=True):
    """A page of dead letters, newest first."""

    items: list[DeadLetterItem]
    next_before: Id | None


class RetryRefusal(Shape, frozen=True):
    """A dead letter that could not be queued again."""

    job_id: Id
    error: ErrorBody


class DeadLetterRetry(Shape, frozen=True):
    """What was queued again and what could not be."""

    retried: list[Id]
    errors: list[RetryRefusal]


# Jobs by state, every state of COUNTED_STATES (declared once, in core.queue_figures).
QueueCounts = Annotated[dict[str, Count], Meta(
    description="Jobs by state; delayed = queued with a future run_at.",
    extra_json_schema={"properties": {state: {"type": "integer", "minimum": 0}
                                      for state in COUNTED_STATES},
                       "required": list(COUNTED_STATES)})]


class Queue(Shape, frozen=True):
    """One queue family's statistics."""

    name: str
    paused: bool
    counts: QueueCounts
    oldest_waiting_s: Annotated[float, Meta(ge=0)] | None
    throughput_per_min: Annotated[float, Meta(
        ge=0, description="Completions per minute, last 5 minutes.")]


class QueueReport(Shape, frozen=True):
    """Every queue's statistics."""

    queues: list[Queue]
    workers: Annotated[int, Meta(ge=0, description="Worker processes with a fresh heartbeat.")]


class RunningJob(Shape, frozen=True):
    """What one worker thread runs now."""

    thread: str
    job_id: Id
    type: str
    since: Time


class Worker(Shape, frozen=True):
    """A worker process as it last reported (every quarter of WORKER_HEARTBEAT_TIMEOUT_MS).

    A process silent for longer than that timeout is shown dead (``alive`` false) until
    WORKER_FORGET_S after its last report; a process that stops cleanly leaves at once.
    """

    id: Annotated[str, Meta(description="host:pid")]
    host: str
    pid: Annotated[int, Meta(ge=1)]
    pool: Annotated[str, Meta(description="images or io (WORKER_POOL).")]
    queues: list[str]
    threads: Count
    busy: Count
    running: list[RunningJob]
    memory_bytes: Annotated[int, Meta(ge=0, description="Resident memory.")]
    jobs_done: Annotated[int, Meta(ge=0, description="Messages handled since it started.")]
    jobs_failed: Annotated[int, Meta(ge=0, description="Of those, ended by an error.")]
    started_at: Time
    reported_at: Time
    heartbeat_age_s: Annotated[float, Meta(ge=0)]
    alive: bool


class WorkerRoster(Shape, frozen=True):
    """Every worker process that reported lately, alive ones first."""

    workers: list[Worker]


class Quantiles(Shape, frozen=True):
    """p50 and p95 of a minute's observations, in seconds (read from histogram buckets)."""

    p50: Annotated[float, Meta(ge=0)]
    p95: Annotated[float, Meta(ge=0)]
    count: Annotated[int, Meta(ge=1, description="Observations in the minute.")]


class ChartPoint(Shape, frozen=True, omit_defaults=True):
    """One minute of the whole deployment, as the dashboard's charts draw it (``partial``
    only when true: stored points stay as an earlier version wrote and reads them)."""

    at: Annotated[str, Meta(description="The minute's start (UTC, ISO-8601 with Z).")]
    finished: Annotated[int, Meta(ge=0, description="Runs that completed their job.")]
    failed: Annotated[int, Meta(ge=0, description="Runs that failed their job for good.")]
    retried: Annotated[int, Meta(ge=0, description="Runs that ended in a retry.")]
    uploads_accepted: Annotated[int, Meta(ge=0)]
    uploads_refused: Annotated[int, Meta(ge=0)]
    queue_depth: Annotated[dict[str, int], Meta(description=(
        "Waiting jobs (queued or retrying) per queue as the minute ended."))]
    wait: Annotated[dict[str, Quantiles], Meta(description=(
        "Wait before a run began, per queue (runs that began in the minute)."))]
    run: Annotated[dict[str, Quantiles], Meta(description="Run time per queue.")]
    stages: Annotated[dict[str, Quantiles], Meta(description=(
        "Time per stage of image.process (stages that ended in the minute)."))]
    push: Annotated[Quantiles, Meta(description=(
        "Publish to Socket.IO emit, every web process's events."))] | None
    partial: Annotated[bool, Meta(description=(
        "The minute still running, counted so far (queue depth as of now); never stored: "
        "the minute's point replaces it once the minute ends."))] = False


class Charts(Shape, frozen=True):
    """The last minutes, oldest first (a point per minute that had a sample); the newest
    may be the minute still running (``partial``)."""

    points: list[ChartPoint]


class QueueState(Shape, frozen=True):
    """Whether a queue is paused."""

    name: str
    paused: bool


class QueueCleaned(Shape, frozen=True):
    """How many old finished jobs a clean-up removed."""

    name: str
    removed: Count


class Health(Shape, frozen=True):
    """Whether Redis, the database and the event relay are up."""

    status: Literal["ok", "unavailable"]
    redis: Annotated[str, Meta(description="ok, or error: <reason>")]
    database: str
    relay: Literal["ok", "stopped"]
