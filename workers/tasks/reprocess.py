"""image.reprocess: run the image pipeline again for one of the caller's images."""

from __future__ import annotations

import dataclasses

from server.core import imaging
from server.core.tasks import IMAGE_REPROCESS
from server.data import store
from server.data.store import JobView
from workers.context import WorkerContext
from workers.tasks.image import process_image
from workers.tasks.registry import Completed, TaskType, register


class ImageGone(Exception):
    """The image to reprocess does not exist (or is not the job owner's)."""


def reprocess_image(ctx: WorkerContext, view: JobView) -> Completed:
    image_id = str(view.job.payload["image_id"])
    image = ctx.db.read(store.get_image, image_id=image_id, user_id=view.job.user_id)
    if image is None:
        raise ImageGone(f"image {image_id} not found")
    done = process_image(ctx, view, image_id=image_id)
    return dataclasses.replace(done, result={"image_id": image_id,
                                             "metadata": done.image_outputs.get("meta")})


register(TaskType.of(IMAGE_REPROCESS, run=reprocess_image,
                     permanent=(imaging.ImageError, ImageGone)))
