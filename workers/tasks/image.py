"""image.process: decode, thumbnail, preview, metadata — each stage reported live."""

from __future__ import annotations

import time
from typing import Any

from server.core import imaging
from server.core.jobs import STAGE_PROGRESS, ImageDeleted, JobState, Stage
from server.core.tasks import IMAGE_PROCESS
from server.data import store
from server.data.store import JobView
from workers.context import WorkerContext
from workers.faults import JobCancelled
from workers.middleware import timings
from workers.tasks.registry import TaskType, register

# Above this many pixels a non-JPEG decode takes long enough to push "decoding" at once.
_SLOW_DECODE_PIXELS = 4_000_000


def process_image(ctx: WorkerContext, view: JobView,
                  image_id: str | None = None) -> dict[str, Any] | None:
    """Run the pipeline for the job's image; partial outputs are removed if it fails."""
    image_id = image_id or str(view.job.payload.get("image_id") or view.job.image_id)
    try:
        _process(ctx, view.job.id, image_id)
    except BaseException:
        # Whatever stopped this attempt, no partial output stays visible; a retry redoes
        # it. Unless the job completed after all (another run finished it): keep those.
        now = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
        if now is None or now.job.state != JobState.COMPLETED.value:
            ctx.storage.remove_renditions(image_id)
            ctx.db.write(store.record_image_output, image_id=image_id, has_thumbnail=False,
                         has_preview=False)
        raise
    return None  # the presenter puts the finished <Image> into result


def _cancel(ctx: WorkerContext, job_id: str, reason: str) -> JobCancelled:
    """Record that the job is cancelled because its input is gone, and say so."""
    ctx.reporter.transition(job_id, JobState.CANCELLED, stage="cancelled",
                            error={"type": "Cancelled", "message": reason})
    return JobCancelled(reason)


class _Stages:
    """Reports each stage as it starts, with what the stages before it produced.

    A stage that starts within PROGRESS_INTERVAL_MS of the last report (``job:active``
    included, pushed just before the first stage) is folded into the next report, its
    outputs travelling with it: nobody sees a 20 ms step, and each report is a database
    write. The last stage is always reported, and so is a stage known to be slow.
    """

    def __init__(self, ctx: WorkerContext, job_id: str, image_id: str) -> None:
        self.ctx, self.job_id, self.image_id = ctx, job_id, image_id
        self.interval_s = ctx.settings.progress_interval_ms / 1000
        self.reported_at = time.monotonic()  # job:active has just been pushed
        self.outputs: dict[str, object] = {}

    def enter(self, stage: Stage, *, last: bool = False, slow: bool = False,
              **outputs: object) -> None:
        """``slow``: the stage is known to take long, so it is pushed however soon."""
        self.outputs.update(outputs)
        now = time.monotonic()
        if not (last or slow) and now - self.reported_at < self.interval_s:
            timings.stage_entered(stage.value)  # timed all the same
            return
        try:
            self.ctx.reporter.progress(self.job_id, stage.value, STAGE_PROGRESS[stage],
                                       image_id=self.image_id, **self.outputs)
        except ImageDeleted:
            raise _cancel(self.ctx, self.job_id,
                          "the image was deleted while it was processed") from None
        self.outputs, self.reported_at = {}, time.monotonic()


def _process(ctx: WorkerContext, job_id: str, image_id: str) -> None:
    source = ctx.storage.original(image_id)
    max_pixels = ctx.settings.max_image_pixels
    stages = _Stages(ctx, job_id, image_id)

    if ctx.db.read(store.get_image, image_id=image_id, user_id=None) is None \
            or not source.exists():
        raise _cancel(ctx, job_id, "the image was deleted before it was processed")
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
    method = ctx.settings.webp_method
    stages.enter(Stage.THUMBNAIL)
    # The preview's pixels are made here already: the thumbnail is cut from them.
    preview = imaging.preview_image(picture)
    ctx.storage.write_rendition(image_id, "thumbnail",
                                imaging.make_thumbnail(picture, preview, method=method))
    stages.enter(Stage.PREVIEW, has_thumbnail=True)
    ctx.storage.write_rendition(image_id, "preview",
                                imaging.encode_preview(preview, method=method))
    stages.enter(Stage.METADATA, last=True, has_preview=True, meta=meta.as_dict(),
                 width=meta.width, height=meta.height, format=meta.format)


register(TaskType.of(
    IMAGE_PROCESS, run=process_image,
    # A file that cannot be decoded now never will be: don't waste attempts on it.
    permanent=(imaging.ImageError,),
))
