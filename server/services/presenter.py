"""The JSON shapes of <Image> and <Job> that REST responses and events carry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from server.core import signing
from server.core.events import JobEvent, event_for_state
from server.data.models import Image, Job, iso
from server.data.store import JobView


@dataclass(frozen=True)
class Presenter:
    """Turns rows into wire dicts; signs file URLs with the deployment's secret."""

    secret: str
    url_ttl_s: int
    public_url: str = ""

    def file_url(self, image_id: str, kind: str) -> str:
        expires, sig = signing.sign(self.secret, image_id, kind, now=time.time(),
                                    ttl_s=self.url_ttl_s)
        return f"{self.public_url}/api/images/{image_id}/{kind}?expires={expires}&sig={sig}"

    def image(self, image: Image) -> dict[str, Any]:
        """<Image> as in CONTRACT.md; file URLs are null until the file exists."""
        return {
            "id": image.id,
            "status": image.status,
            "filename": image.filename,
            "content_type": image.content_type,
            "size_bytes": image.size_bytes,
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "metadata": image.meta,
            "thumbnail_url": self.file_url(image.id, "thumbnail") if image.has_thumbnail else None,
            "preview_url": self.file_url(image.id, "preview") if image.has_preview else None,
            "original_url": self.file_url(image.id, "original"),
            "created_at": iso(image.created_at),
            "job_id": image.job_id,
        }

    def job(self, job: Job, image: Image | None = None,
            queue_position: int | None = None) -> dict[str, Any]:
        """<Job> as in CONTRACT.md; a completed image job carries its <Image> in result."""
        result = job.result
        if job.state == "completed" and image is not None:
            result = {**(result or {}), "image": self.image(image)}
        return {
            "id": job.id,
            "type": job.type,
            "state": job.state,
            "progress": job.progress,
            "stage": job.stage,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "error": job.error,
            "result": result,
            "image_id": job.image_id,
            "batch_id": job.batch_id,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at),
            "run_at": iso(job.run_at),
            "priority": job.priority,
            "queue_position": queue_position if job.state == "queued" else None,
            "seq": job.seq,
        }

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
