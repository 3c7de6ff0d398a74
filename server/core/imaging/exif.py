"""What a file says about itself: EXIF orientation, camera, capture time and GPS, read as
``Metadata`` without decoding pixels where the format allows."""

from __future__ import annotations

import dataclasses
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from PIL import ExifTags, Image, ImageFile

from server.core.imaging.errors import check_pixels, damaged_message, pillow_errors
from server.core.imaging.formats import StrPath, open_image

TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations 5-8 turn the picture by 90 degrees, so width and height swap.
SWAPS_AXES = frozenset((5, 6, 7, 8))

_EXIF_DATETIME_FORMAT = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class Metadata:
    """Facts worth showing about an image; width and height are after EXIF orientation."""

    width: int
    height: int
    format: str
    mode: str
    frames: int
    camera_make: str | None
    camera_model: str | None
    taken_at: str | None
    has_gps: bool

    def as_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def read_metadata(path: StrPath, *, max_pixels: int) -> Metadata:
    """Header and EXIF facts worth showing; counts frames without decoding pixels where possible."""
    with open_image(path, max_pixels=max_pixels) as im:
        fmt, mode = str(im.format), im.mode
        width, height = im.size
        exif = _header_exif(im)
        orientation = exif_orientation(exif)
        if orientation in SWAPS_AXES:
            width, height = height, width
        with pillow_errors(damaged_message(fmt), max_pixels=max_pixels):
            # Counting walks every frame header; a later frame may be damaged or a bomb (a GIF
            # whose second frame grows the canvas to gigapixels), which must not pass silently.
            frames = int(getattr(im, "n_frames", 1))
            check_pixels(im.width, im.height, max_pixels)
        return Metadata(
            width=width,
            height=height,
            format=fmt,
            mode=mode,
            frames=frames,
            camera_make=_exif_text(exif, ExifTags.Base.Make),
            camera_model=_exif_text(exif, ExifTags.Base.Model),
            taken_at=_taken_at(exif),
            has_gps=_has_gps(exif),
        )


def orientation_of(im: Image.Image) -> int:
    """EXIF orientation 1-8; 1 when absent or unreadable (corrupt EXIF must not fail a job)."""
    try:
        return exif_orientation(im.getexif())
    except Exception:
        # Also catches Pillow's "Corrupt EXIF data" UserWarning where warnings are errors.
        return 1


def _header_exif(im: ImageFile.ImageFile) -> Image.Exif:
    """EXIF found without decoding pixels; empty when absent or corrupt."""
    # PngImageFile.getexif() decodes the whole image when eXIf is not in the header; metadata
    # is not worth a second full decode (decode() still honours a late orientation).
    if im.format == "PNG" and "exif" not in im.info:
        return Image.Exif()
    try:
        return im.getexif()
    except Exception:
        return Image.Exif()


def exif_orientation(exif: Image.Exif) -> int:
    """The Orientation tag when it is one of the eight, else 1."""
    try:
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1
    return value if value in TRANSPOSE else 1


def _exif_text(exif: Image.Exif, tag: int) -> str | None:
    """An ASCII EXIF tag as clean text, or None."""
    try:
        value = exif.get(tag)
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 \t\r\n")
    return text or None


def _taken_at(exif: Image.Exif) -> str | None:
    """ISO 8601 capture time from DateTimeOriginal, falling back to DateTime."""
    candidates: list[object] = []
    # Each lookup on its own: a corrupt Exif IFD must not hide a good DateTime.
    with suppress(Exception):
        candidates.append(exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal))
    with suppress(Exception):
        candidates.append(exif.get(ExifTags.Base.DateTime))
    for value in candidates:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            continue
        try:
            parsed = datetime.strptime(value.strip("\x00 ")[:19], _EXIF_DATETIME_FORMAT)
        except ValueError:
            continue
        return parsed.isoformat(timespec="seconds")
    return None


def _has_gps(exif: Image.Exif) -> bool:
    """Whether the GPS IFD holds anything."""
    try:
        return bool(exif.get_ifd(ExifTags.IFD.GPSInfo))
    except Exception:
        return False
