"""The pure image pipeline: sniff, probe, decode, renditions and metadata.

Imports only the standard library, Pillow and pillow-heif, so it can be tested with plain
files and reused by the upload handler (``probe``) and the worker (metadata, decode and
renditions). Every failure caused by the file itself comes out as an ImageError subclass;
anything else (a missing file, a bug) propagates unchanged.

One concept per module, in the order a file goes through them:

- ``formats``: the formats we accept, ``sniff`` (magic numbers), opening a file as one format;
- ``errors``: the ImageError family, and Pillow's errors turned into it;
- ``exif``: orientation, camera, capture time and GPS: ``read_metadata``;
- ``decoding``: decoding within the memory budget: ``decode_cost``, ``decode_picture``;
- ``colour``: any pixel mode to RGB or RGBA, and which colour profile may follow;
- ``render``: the thumbnail and the preview, as pixels and as WebP;
- ``pipeline``: the whole steps, ``probe`` (upload) and ``process`` (one file's renditions).

Callers use the names below (``from server.core import imaging; imaging.probe(...)``).
"""

from __future__ import annotations

from server.core.imaging.decoding import decode, decode_cost, decode_picture
from server.core.imaging.errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedImage
from server.core.imaging.exif import Metadata, read_metadata
from server.core.imaging.formats import ALLOWED_FORMATS, MIME_TYPES, SNIFF_BYTES, StrPath, sniff
from server.core.imaging.pipeline import Probe, Renditions, probe, process
from server.core.imaging.render import (
    PREVIEW_QUALITY,
    PREVIEW_WIDTH,
    THUMBNAIL_QUALITY,
    THUMBNAIL_SIZE,
    WEBP_METHOD,
    Picture,
    encode_preview,
    encode_webp,
    make_preview,
    make_thumbnail,
    preview_image,
    thumbnail_image,
)

__all__ = [
    "ALLOWED_FORMATS",
    "MIME_TYPES",
    "PREVIEW_QUALITY",
    "PREVIEW_WIDTH",
    "SNIFF_BYTES",
    "THUMBNAIL_QUALITY",
    "THUMBNAIL_SIZE",
    "WEBP_METHOD",
    "ImageError",
    "ImageTooLarge",
    "InvalidImage",
    "Metadata",
    "Picture",
    "Probe",
    "Renditions",
    "StrPath",
    "UnsupportedImage",
    "decode",
    "decode_cost",
    "decode_picture",
    "encode_preview",
    "encode_webp",
    "make_preview",
    "make_thumbnail",
    "preview_image",
    "probe",
    "process",
    "read_metadata",
    "sniff",
    "thumbnail_image",
]
