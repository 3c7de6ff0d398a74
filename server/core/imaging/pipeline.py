"""The pipeline's two whole steps: ``probe``, the upload's check of a file's header before
it is stored, and ``process``, one file's metadata and renditions as the worker makes them."""

from __future__ import annotations

from dataclasses import dataclass

from server.core.imaging.decoding import decode_picture, plan_decode
from server.core.imaging.errors import damaged_message, pillow_errors
from server.core.imaging.exif import Metadata, read_metadata
from server.core.imaging.formats import MIME_TYPES, StrPath, open_image
from server.core.imaging.render import (
    WEBP_METHOD,
    encode_preview,
    make_thumbnail,
    preview_image,
)


@dataclass(frozen=True)
class Probe:
    """What the header says: the format and the size as stored (before EXIF orientation)."""

    format: str
    width: int
    height: int
    mime: str


@dataclass(frozen=True)
class Renditions:
    """Everything the worker stores for one image."""

    thumbnail: bytes
    preview: bytes
    metadata: Metadata


def probe(path: StrPath, *, max_pixels: int, max_decode_bytes: int | None = None) -> Probe:
    """Read only the header: sniff, open as that one format, check the pixel cap and (given
    ``max_decode_bytes``) that decoding it for the renditions fits that budget; no decoding."""
    with open_image(path, max_pixels=max_pixels) as im:
        fmt = str(im.format)
        found = Probe(format=fmt, width=im.width, height=im.height, mime=MIME_TYPES[fmt])
        if max_decode_bytes is not None:
            with pillow_errors(damaged_message(fmt), max_pixels=max_pixels):
                plan_decode(im, max_decode_bytes)
        return found


def process(path: StrPath, *, max_pixels: int, method: int = WEBP_METHOD,
            max_decode_bytes: int | None = None) -> Renditions:
    """Metadata, thumbnail and preview of one file, failing with an ImageError."""
    # Metadata first: it is cheap and finds bombs hidden in later frames before any decoding.
    metadata = read_metadata(path, max_pixels=max_pixels)
    picture = decode_picture(path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    preview = preview_image(picture)
    return Renditions(thumbnail=make_thumbnail(picture, preview, method=method),
                      preview=encode_preview(preview, method=method), metadata=metadata)
