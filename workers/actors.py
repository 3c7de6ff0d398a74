"""The actors: load the job, call the pure pipeline, store the outputs, report each stage."""

from __future__ import annotations

import dramatiq

from server import store
from server.jobs import Stage
from workers import imaging
from workers.broker import IMAGE_ACTOR, IMAGE_QUEUE
from workers.context import WorkerContext
from workers.middleware import JobCancelled


def process_image(ctx: WorkerContext, job_id: str) -> None:
    """Decode, make the thumbnail and preview, read metadata; each stage is reported."""
    try:
        _process_image(ctx, job_id)
    except JobCancelled:
        # Cancelled (or deleted) mid-run: no partial outputs are left behind.
        view = ctx.db.read(store.get_job, job_id=job_id, user_id=None)
        if view is not None and view.image is not None:
            ctx.storage.remove_renditions(view.image.id)
            ctx.db.write(store.record_image_output, image_id=view.image.id,
                         has_thumbnail=False, has_preview=False)
        raise


def _process_image(ctx: WorkerContext, job_id: str) -> None:
    view = ctx.db.read(store.get_job, job_id=job_id, user_id=None)
    if view is None or view.image is None:
        raise JobCancelled("the image was deleted before it was processed")
    image_id = view.image.id
    source = ctx.storage.original(image_id)
    max_pixels = ctx.settings.max_image_pixels

    def enter(stage: Stage) -> None:
        if not ctx.reporter.progress(job_id, stage):
            raise JobCancelled("the job was cancelled")

    def keep(**fields: object) -> None:
        if ctx.db.write(store.record_image_output, image_id=image_id, **fields) is None:
            ctx.storage.remove_renditions(image_id)
            raise JobCancelled("the image was deleted while it was processed")

    enter(Stage.DECODING)
    if not source.exists():
        raise JobCancelled("the image was deleted before it was processed")
    picture = imaging.decode(source, max_pixels=max_pixels)
    enter(Stage.THUMBNAIL)
    ctx.storage.write_rendition(image_id, "thumbnail", imaging.make_thumbnail(picture))
    keep(has_thumbnail=True)
    enter(Stage.PREVIEW)
    ctx.storage.write_rendition(image_id, "preview", imaging.make_preview(picture))
    keep(has_preview=True)
    enter(Stage.METADATA)
    meta = imaging.read_metadata(source, max_pixels=max_pixels)
    keep(meta=meta.as_dict(), width=meta.width, height=meta.height, format=meta.format)


def declare_actors(broker: dramatiq.Broker, ctx: WorkerContext) -> None:
    """Register the actors on ``broker`` with retry policy and time limit from settings."""
    settings = ctx.settings

    def image_process(job_id: str) -> None:
        process_image(ctx, job_id)

    dramatiq.actor(
        image_process,
        broker=broker,
        actor_name=IMAGE_ACTOR,
        queue_name=IMAGE_QUEUE,
        max_retries=settings.retry_max_attempts - 1,
        min_backoff=settings.retry_min_backoff_ms,
        max_backoff=settings.retry_max_backoff_ms,
        time_limit=settings.job_time_limit_s * 1000,
        # Permanent: a file that cannot be decoded now never will be; don't waste attempts.
        throws=(imaging.ImageError, JobCancelled),
    )
