"""Images: an upload's row, what its processing produced, its owner's pages of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.data.models import Image


def get_image(s: Session, /, *, image_id: str, user_id: str | None) -> Image | None:
    """The image, if it exists and (unless user_id is None) belongs to that user."""
    query = select(Image).where(Image.id == image_id)
    if user_id is not None:
        query = query.where(Image.user_id == user_id)
    return s.scalars(query).first()


def list_images(s: Session, /, *, user_id: str, limit: int,
                before: str | None = None) -> list[Image]:
    """A page of the user's images, newest first; ``before`` is the last id of the previous page."""
    query = select(Image).where(Image.user_id == user_id)
    if before:
        query = query.where(Image.id < before)
    return list(s.scalars(query.order_by(Image.id.desc()).limit(limit)))


def delete_image(s: Session, /, *, image_id: str, user_id: str | None) -> Image | None:
    """Remove the image row; returns it (for file clean-up) or None if not found."""
    image = get_image(s, image_id=image_id, user_id=user_id)
    if image is not None:
        s.delete(image)
    return image


def record_image_output(s: Session, /, *, image_id: str, **fields: Any) -> Image | None:
    """Store what a pipeline stage produced (has_thumbnail, has_preview, meta, width, ...)."""
    image = s.get(Image, image_id)
    if image is None:
        return None
    for name, value in fields.items():
        setattr(image, name, value)
    return image
