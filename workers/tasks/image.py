"""image.process: decode, thumbnail, preview, metadata — each stage reported live."""

from __future__ import annotations

import time
from typing import Any

from server.core import imaging
from server.core.jobs import STAGE_PROGRESS, JobState, Stage
from server.core.tasks import IMAGE_PROCESS
from server.data import store
from server.data.store import JobView
from workers import handoff
from workers.context import WorkerContext
from workers.faults import JobCancelled, image_deleted_error
from workers.middleware import timings
from workers.tasks.registry import Completed, TaskType, register

# Above this many pixels a non-JPEG decode takes long enough to push "decoding" at once.
_SLOW_DECODE_PIXELS = 4_000_000


def process_image(ctx: WorkerContext, view: JobView,
                  image_id: str | None = None) -> Completed:
    """Run the pipeline for the job's image; partial outputs are removed if it fails.
    The last stage's outputs are stored with the job's completion."""
    image_id = image_id or str(view.job.payload.get("image_id") or view.job.image_id)
    try:
        outputs = _process(ctx, view, image_id)
    except BaseException:
        # Whatever stopped this attempt, no partial output stays visible; a retry redoes
        # it. Unless the job completed after all (another run finished it), or a later
        # attempt took over from this (hung) run: those outputs are theirs.
        if ctx.db.write(store.withdraw_outputs, job_id=view.job.id, image_id=image_id,
                        attempt=view.job.attempt):
            ctx.storage.remove_renditions(image_id)
        raise
    # The presenter puts the finished <Image> into the result.
    return Completed(image_id=image_id, image_outputs=outputs)


def _cancel(ctx: WorkerContext, job_id: str, error: dict[str, str]) -> JobCancelled:
    """Record that the job is cancelled because its input is gone, and say so."""
    ctx.reporter.transition(job_id, JobState.CANCELLED, stage="cancelled", error=error,
                            of_attempt=handoff.attempt_of(job_id))
    return JobCancelled(error["message"])


class _Stages:
    """Reports each stage as it starts; what the stages produce goes with the completion.

    A stage that starts within PROGRESS_INTERVAL_MS of the last report (``job:active``
    included, pushed just before the first stage) is folded into the next report: nobody
    sees a 20 ms step. A stage known to be slow is always reported. The last stage is not
    reported at all (``finish``): it only stores what the stages found, which the
    completion does, so a report of its own would be an event for a step of no length.
    The outputs are stored with the completion, in its write, not step by step: the steps
    themselves are pushed from Redis alone (``workers.progress.Reporter.progress``).
    """

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.interval_s = ctx.settings.progress_interval_ms / 1000
        self.reported_at = time.monotonic()  # job:active has just been pushed
        self.outputs: dict[str, object] = {}

    def enter(self, stage: Stage, *, slow: bool = False, **outputs: object) -> None:
        """``slow``: the stage is known to take long, so it is pushed however soon."""
        self.outputs.update(outputs)
        now = time.monotonic()
        if not slow and now - self.reported_at < self.interval_s:
            timings.stage_entered(stage.value)  # timed all the same
            return
        self.ctx.reporter.progress(self.job_id, stage.value, STAGE_PROGRESS[stage])
        self.reported_at = time.monotonic()

    def finish(self, stage: Stage, **outputs: object) -> dict[str, Any]:
        """The last stage: timed, and every stage's outputs returned for the completion to
        store."""
        timings.stage_entered(stage.value)
        return {**self.outputs, **outputs}


def _image_exists(ctx: WorkerContext, view: JobView, image_id: str) -> bool:
    """Whether the image's row exists: the job's view holds it, read as the attempt
    began, when it is the job's own image."""
    if view.job.image_id == image_id:
        return view.image is not None
    return ctx.db.read(store.get_image, image_id=image_id, user_id=None) is not None


def _process(ctx: WorkerContext, view: JobView, image_id: str) -> dict[str, Any]:
    job_id = view.job.id
    source = ctx.storage.original(image_id)
    max_pixels = ctx.settings.max_image_pixels
    stages = _Stages(ctx, job_id)

    if not _image_exists(ctx, view, image_id) or not source.exists():
        raise _cancel(ctx, job_id, image_deleted_error(before=True))
    # The header facts first: cheap, and a bomb hidden in a later frame fails here, before
    # any decoding. They are stored with the metadata stage below.
    meta = imaging.read_metadata(source, max_pixels=max_pixels)
    # JPEGs decode at a reduced scale in tens of milliseconds; a large PNG, WebP or HEIC
    # decodes in full, for a second or more: that is worth showing as it starts.
    slow = meta.format not in ("JPEG", "MPO") and meta.width * meta.height > _SLOW_DECODE_PIXELS
    stages.enter(Stage.DECODING, slow=slow)
    # Each stage rewrites its output atomically, so a redelivered job simply runs again.
    # Over MAX_DECODE_MB the picture is shrunk as it is converted, or the job fails for good
    # (ImageTooLarge, an ImageError) before anything is decoded.
    picture = imaging.decode_picture(source, max_pixels=max_pixels,
                                     max_decode_bytes=ctx.settings.max_decode_bytes)
    # Read in full now; its pages are of no more use in the cache than they were past it.
    ctx.storage.uncache_original(image_id)
    method = ctx.settings.webp_method
    stages.enter(Stage.THUMBNAIL)
    # The preview's pixels are made here already: the thumbnail is cut from them.
    preview = imaging.preview_image(picture)
    ctx.storage.write_rendition(image_id, "thumbnail",
                                imaging.make_thumbnail(picture, preview, method=method))
    stages.enter(Stage.PREVIEW, has_thumbnail=True)
    ctx.storage.write_rendition(image_id, "preview",
                                imaging.encode_preview(preview, method=method))
    return stages.finish(Stage.METADATA, has_preview=True, meta=meta.as_dict(),
                         width=meta.width, height=meta.height, format=meta.format)


register(TaskType.of(
    IMAGE_PROCESS, run=process_image,
    # A file that cannot be decoded now never will be: don't waste attempts on it.
    permanent=(imaging.ImageError,),
))
