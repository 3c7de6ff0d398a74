"""The wire shapes (``server.core.wire.responses``) built from rows, as plain JSON values.

REST answers and events carry what this module returns: each shape is built as its
Struct, then turned into builtins (dicts, lists, strings), which the JSON encoders of
Starlette, python-socketio and the bus take as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import msgspec

from server.core import history, signing
from server.core.events import PROGRESS, JobEvent, event_for_state
from server.core.jobs import JobState
from server.core.lifecycle import ImageStatus
from server.core.queue_figures import QueueFigures
from server.core.tasks import TaskSpec
from server.core.wire import responses as wire
from server.core.wire.fields import Priority
from server.data.models import DeadLetter, Image, Job, JobEventRecord, Schedule, Webhook, iso
from server.data.store import BatchProgress, JobView

S = TypeVar("S", bound=msgspec.Struct)


def builtins(shape: msgspec.Struct) -> dict[str, Any]:
    """A wire shape as the JSON object it is sent as (UNSET fields left out)."""
    out: dict[str, Any] = msgspec.to_builtins(shape)
    return out


def _stored(value: Any, shape: type[S]) -> S | None:
    """A JSON column's value as its wire shape (None stays None); the worker writes these
    columns in exactly that shape, so a mismatch is a bug, and raises."""
    return None if value is None else msgspec.convert(value, shape)


def _time(value: Any) -> str:
    """A timestamp that is never null on the wire."""
    out = iso(value)
    assert out is not None
    return out


@dataclass(frozen=True)
class Presenter:
    """Turns rows into wire shapes; signs file URLs with the deployment's secret."""

    secret: str
    url_ttl_s: int
    public_url: str = ""

    def file_url(self, image_id: str, kind: str) -> str:
        expires, sig = signing.sign(self.secret, image_id, kind, now=time.time(),
                                    ttl_s=self.url_ttl_s)
        return f"{self.public_url}/api/images/{image_id}/{kind}?expires={expires}&sig={sig}"

    def image_shape(self, image: Image) -> wire.Image:
        """<Image> as in CONTRACT.md; file URLs are null until the file exists."""
        return wire.Image(
            id=image.id,
            status=ImageStatus(image.status),
            filename=image.filename,
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            format=image.format,
            metadata=_stored(image.meta, wire.ImageMetadata),
            thumbnail_url=self.file_url(image.id, "thumbnail") if image.has_thumbnail else None,
            preview_url=self.file_url(image.id, "preview") if image.has_preview else None,
            original_url=self.file_url(image.id, "original"),
            created_at=_time(image.created_at),
            job_id=image.job_id,
        )

    def image(self, image: Image) -> dict[str, Any]:
        """<Image> as JSON values."""
        return builtins(self.image_shape(image))

    def job_shape(self, job: Job, image: Image | None = None,
                  queue_position: int | None = None) -> wire.Job:
        """<Job> as in CONTRACT.md; a completed image job carries its <Image> in result."""
        result = job.result
        if job.state == JobState.COMPLETED and image is not None:
            result = {**(result or {}), "image": self.image(image)}
        return wire.Job(
            id=job.id,
            type=job.type,
            state=JobState(job.state),
            progress=job.progress,
            stage=job.stage,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            error=_stored(job.error, wire.JobError),
            result=result,
            image_id=job.image_id,
            batch_id=job.batch_id,
            created_at=_time(job.created_at),
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            run_at=iso(job.run_at),
            priority=cast(Priority, job.priority),
            queue_position=queue_position if job.state == JobState.QUEUED else None,
            seq=job.seq,
        )

    def job(self, job: Job, image: Image | None = None,
            queue_position: int | None = None) -> dict[str, Any]:
        """<Job> as JSON values."""
        return builtins(self.job_shape(job, image, queue_position))

    def webhook(self, view: JobView) -> tuple[str, dict[str, Any]]:
        """The event name and JSON body POSTed to the owner's webhooks when a job ends."""
        event = f"job.{view.job.state}"
        return event, {"event": event, "job": self.job(view.job, view.image)}

    def event(self, view: JobView, *, name: str | None = None,
              queue_position: int | None = None) -> JobEvent:
        """The bus event for a stored change: named after the new state unless given."""
        job = self.job(view.job, view.image, queue_position)
        return JobEvent(name=name or event_for_state(view.job.state), user_id=view.job.user_id,
                        job=job)

    def step(self, view: JobView, *, seq: int, stage: str, progress: int) -> JobEvent:
        """``job:progress`` for a step pushed from Redis alone (``server.core.live``): the
        attempt's row as last written, with the step's stage, progress and seq."""
        event = self.event(view, name=PROGRESS)
        return replace(event, job={**event.job, "seq": seq, "stage": stage,
                                   "progress": progress})

    def timeline(self, view: JobView, records: Sequence[JobEventRecord],
                 deliveries: Iterable[Job] = (), *, workers: bool = True) -> dict[str, Any]:
        """The job with its payload, traceback, attempts, deliveries and every stored change.

        ``workers``: name the worker thread of each attempt (host:pid:thread: for admins,
        not for the job's owner).
        """
        return builtins(wire.Timeline(
            job=self.job_shape(view.job, view.image),
            payload=view.job.payload,
            traceback=view.job.traceback,
            attempts=[wire.Attempt(
                number=a.number, worker=a.worker if workers else None,
                started_at=_time(a.started_at),
                ended_at=iso(a.ended_at), seconds=a.seconds, outcome=a.outcome,
                stages=[wire.StageTime(stage=t.stage, started_at=_time(t.started_at),
                                       seconds=t.seconds) for t in a.stages],
                error=_stored(a.error, wire.JobError), traceback=a.traceback,
                backoff_s=a.backoff_s) for a in history.attempts(records)],
            deliveries=[self._delivery(d) for d in deliveries],
            events=[wire.TimelineEvent(seq=r.seq, name=r.name, state=JobState(r.state),
                                       stage=r.stage, progress=r.progress,
                                       error=_stored(r.error, wire.JobError), at=_time(r.at),
                                       worker=r.worker if workers else None)
                    for r in records],
        ))

    @staticmethod
    def _delivery(job: Job) -> wire.Delivery:
        status = (job.result or {}).get("status")
        return wire.Delivery(
            id=job.id, url=str(job.payload.get("url", "")), event=str(job.payload.get("event", "")),
            state=JobState(job.state), attempt=job.attempt, max_attempts=job.max_attempts,
            status=status if isinstance(status, int) else None,
            error=_stored(job.error, wire.JobError), created_at=_time(job.created_at),
            started_at=iso(job.started_at), finished_at=iso(job.finished_at))

    def dead_letter(self, entry: DeadLetter, view: JobView) -> dict[str, Any]:
        """A dead letter: the job, its final error, attempts and payload."""
        return builtins(wire.DeadLetterItem(
            job=self.job_shape(view.job, view.image),
            error=wire.DeadLetterError(type=entry.error_type, message=entry.error_message,
                                       traceback=entry.traceback),
            attempts=entry.attempts,
            failed_at=_time(entry.failed_at),
            payload=entry.payload,
        ))


def schedule(row: Schedule) -> dict[str, Any]:
    """<Schedule> as JSON values."""
    return builtins(wire.Schedule(
        id=row.id, type=row.type, payload=row.payload, cron=row.cron, timezone=row.timezone,
        next_run_at=_time(row.next_run_at), priority=cast(Priority, row.priority),
        max_attempts=row.max_attempts, created_at=_time(row.created_at)))


def _webhook(hook: Webhook) -> wire.Webhook:
    return wire.Webhook(id=hook.id, url=hook.url, created_at=_time(hook.created_at))


def webhook_created(hook: Webhook, signing_secret: str | None) -> dict[str, Any]:
    """A new webhook and the key its deliveries are signed with, as JSON values."""
    return builtins(wire.WebhookCreated(webhook=_webhook(hook), signing_secret=signing_secret))


def webhooks(hooks: Iterable[Webhook], signing_secret: str | None) -> dict[str, Any]:
    """A user's webhooks and the key their deliveries are signed with, as JSON values."""
    return builtins(wire.Webhooks(items=[_webhook(hook) for hook in hooks],
                                  signing_secret=signing_secret))


def task_types(specs: Iterable[TaskSpec]) -> dict[str, Any]:
    """Task types as GET /api/tasks/types lists them, as JSON values."""
    return builtins(wire.TaskTypes(types=[
        wire.TaskType(type=spec.name, description=spec.description, queue=spec.queue,
                      payload_schema=spec.schema, max_attempts=spec.max_attempts,
                      time_limit_s=spec.time_limit_s)
        for spec in specs]))


def batch_summary(found: BatchProgress) -> dict[str, Any]:
    """A batch as ``batch:progress`` and the batch routes carry it: ``{"id", "total",
    "files", "done", "failed", "progress", "created_at"}`` (see ``core.batches``)."""
    batch, tally = found.batch, found.tally
    return builtins(wire.BatchSummary(
        id=batch.id, total=tally.total, files=batch.files, done=tally.done,
        failed=tally.failed, progress=tally.progress, created_at=_time(batch.created_at)))


def queue_stats(figures: QueueFigures) -> dict[str, Any]:
    """A queue family's figures as <Queue> carries them (beside its name and pause state)."""
    return {"counts": dict(figures.counts), "oldest_waiting_s": figures.oldest_waiting_s,
            "throughput_per_min": figures.throughput_per_min}
