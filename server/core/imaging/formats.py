"""Which files are images we accept: formats, MIME types, magic numbers (``sniff``), and
opening a file as the one format its first bytes show, with the pixel cap checked."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pillow_heif
from PIL import Image, ImageFile

from server.core.imaging.errors import (
    UnsupportedImage,
    check_pixels,
    damaged_message,
    label,
    pillow_errors,
)

# HEIC is the default format of iPhone cameras; Pillow needs the plugin to read it.
pillow_heif.register_heif_opener()

StrPath = str | os.PathLike[str]

# Pillow format names we accept. "MPO" (multi-picture JPEG, e.g. from 3D cameras and some phones)
# is reported by Pillow's JPEG opener itself; it must never be passed in Image.open(formats=...),
# where it raises KeyError.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF", "AVIF")
_REPORTED_FORMATS = frozenset((*ALLOWED_FORMATS, "MPO"))

MIME_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}

# Bytes of the file that sniff() looks at; 32 cover every magic number here, the rest lets an
# ISO-BMFF 'ftyp' box list more compatible brands.
SNIFF_BYTES = 64

_HEIF_BRANDS = frozenset((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"))
_AVIF_BRANDS = frozenset((b"avif", b"avis"))
# Sizes of the BMP info headers Pillow reads (BITMAPCOREHEADER .. BITMAPV5HEADER, OS/2 2.x).
_BMP_HEADER_SIZES = frozenset((12, 16, 40, 52, 56, 64, 108, 124))


def sniff(head: bytes) -> str | None:
    """Pillow format name from the first bytes (magic numbers), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    # Classic TIFF (42) and BigTIFF (43), little- and big-endian.
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    # "BM" alone is too weak (any text starting with "BM"); the info header size must be real.
    if head[:2] == b"BM" and len(head) >= 18:
        if struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES:
            return "BMP"
        return None
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    return None


def _sniff_ftyp(head: bytes) -> str | None:
    """HEIF or AVIF from an ISO-BMFF 'ftyp' box: its major brand and compatible brands."""
    box_size = struct.unpack_from(">I", head, 0)[0]
    if box_size < 16:
        return None
    end = min(box_size, len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    # An AVIF file often also lists mif1/miaf; AV1 content decides.
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


@contextmanager
def open_image(path: StrPath, *, max_pixels: int) -> Iterator[ImageFile.ImageFile]:
    """Open lazily, restricted to the one sniffed format, with the pixel cap checked."""
    with open(path, "rb") as fp:
        fmt = sniff(fp.read(SNIFF_BYTES))
        if fmt is None:
            raise UnsupportedImage(
                "The file is not an image type we accept "
                "(JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC or AVIF)."
            )
        if not _pillow_reads(fmt):
            raise UnsupportedImage(f"{label(fmt)} images cannot be read by this server.")
        fp.seek(0)
        # Restricting formats= to the sniffed one keeps Pillow from picking another plugin by
        # content, e.g. EPS, which would run Ghostscript on load.
        with pillow_errors(damaged_message(fmt), max_pixels=max_pixels):
            im = Image.open(fp, formats=[fmt])
        try:
            if im.format not in _REPORTED_FORMATS:
                raise UnsupportedImage(f"{label(im.format)} images are not accepted.")
            check_pixels(im.width, im.height, max_pixels)
            yield im
        finally:
            im.close()


def _pillow_reads(fmt: str) -> bool:
    """Whether this Pillow build has an opener for the format (AVIF needs libavif)."""
    if fmt not in Image.OPEN:
        # Plugins register lazily; this is the same one-time import Image.open would do.
        Image.init()
    return fmt in Image.OPEN
