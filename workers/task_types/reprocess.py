"""image.reprocess: run the image pipeline again for one of the caller's images."""

from __future__ import annotations

from typing import Any

from server import store
from server.store import JobView
from workers import imaging
from workers.context import WorkerContext
from workers.task_types.image import process_image
from workers.tasks import TaskType, register


class ImageGone(Exception):
    """The image to reprocess does not exist (or is not the job owner's)."""


def reprocess_image(ctx: WorkerContext, view: JobView) -> dict[str, Any] | None:
    image_id = str(view.job.payload["image_id"])
    image = ctx.db.read(store.get_image, image_id=image_id, user_id=view.job.user_id)
    if image is None:
        raise ImageGone(f"image {image_id} not found")
    process_image(ctx, view, image_id=image_id)
    done = ctx.db.read(store.get_image, image_id=image_id, user_id=view.job.user_id)
    return {"image_id": image_id, "metadata": done.meta if done else None}


register(TaskType(
    name="image.reprocess",
    description="Make the thumbnail, preview and metadata of an existing image again.",
    schema={"type": "object", "properties": {"image_id": {"type": "string", "minLength": 1}},
            "required": ["image_id"], "additionalProperties": False},
    run=reprocess_image,
    queue="images",
    permanent=(imaging.ImageError, ImageGone),
    image_field="image_id",
))
