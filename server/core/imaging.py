"""The pure image pipeline: sniff, probe, decode, renditions and metadata.

Imports only the standard library, Pillow and pillow-heif, so it can be tested with plain
files and reused by the upload handler (sniff/probe) and the worker (decode and renditions).
Every failure caused by the file itself comes out as an ImageError subclass; anything else
(a missing file, a bug) propagates unchanged.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pillow_heif
from PIL import ExifTags, Image, ImageFile

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

# How formats are named in messages shown to users.
_LABELS: dict[str, str] = {"MPO": "JPEG", "WEBP": "WebP", "HEIF": "HEIC"}

THUMBNAIL_SIZE = (200, 200)
THUMBNAIL_QUALITY = 80
PREVIEW_WIDTH = 800
PREVIEW_QUALITY = 85

# Bytes of the file that sniff() looks at; 32 cover every magic number here, the rest lets an
# ISO-BMFF 'ftyp' box list more compatible brands.
SNIFF_BYTES = 64

# libwebp's method 0 (fast) .. 6 (slow); the worker passes the WEBP_METHOD setting.
# Measured here on an 800x600 preview of a 12 MP photo at q85: method 0 8.8 ms / 43 KB,
# 2 14 ms / 34 KB, 4 34 ms / 33 KB, at the same PSNR (36.4 dB). 0 is the default: the
# encode is then a fifth of the whole pipeline instead of a third.
WEBP_METHOD = 0
# The resampling filter of both renditions. Pillow widens a filter's support by the
# reduction factor, so HAMMING antialiases like LANCZOS does, at a third of the cost on a
# 1000x750 → 800x600 preview (6 ms vs 14 ms); against a full-size LANCZOS reference the
# renditions measure 47 dB (preview) and 44 dB (thumbnail), well past visible (bench/).
_RESAMPLE = Image.Resampling.HAMMING
# libwebp refuses pictures wider or taller than this (WEBP_MAX_DIMENSION).
_WEBP_MAX_DIMENSION = 16383
# Image.resize first shrinks by an integer factor with reduce() and then resamples; Pillow's
# docstring says a gap of 3.0 or more is indistinguishable from resampling the full image.
_REDUCING_GAP = 3.0

# Only libjpeg can decode at a reduced scale (1/2, 1/4, 1/8) through Image.draft.
_DRAFT_FORMATS = frozenset(("JPEG", "MPO"))

# Decode memory (MAX_DECODE_MB): a picture is turned into RGB or RGBA a strip of about this
# many pixels at a time, so that the working copies of a conversion (a 16-bit grey picture
# goes I;16 -> I -> scaled I -> L -> RGB: ten bytes a pixel at once when done whole) never
# exist at full size; only the loaded pixels and the result do.
_STRIP_PIXELS = 1 << 18
# Bytes a strip pixel may take at once in conversion: the crop (4), I (4), the scaled I (4),
# L (1), RGB(A) (4), its premultiplied RGBa copy (4) and what a reduction keeps of it.
_STRIP_BYTES_PER_PIXEL = 24
# RGB and RGBA keep 4 bytes a pixel in Pillow.
_RGB_BYTES_PER_PIXEL = 4

_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations 5-8 turn the picture by 90 degrees, so width and height swap.
_SWAPS_AXES = frozenset((5, 6, 7, 8))

_HEIF_BRANDS = frozenset((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"))
_AVIF_BRANDS = frozenset((b"avif", b"avis"))
# Sizes of the BMP info headers Pillow reads (BITMAPCOREHEADER .. BITMAPV5HEADER, OS/2 2.x).
_BMP_HEADER_SIZES = frozenset((12, 16, 40, 52, 56, 64, 108, 124))

_EXIF_DATETIME_FORMAT = "%Y:%m:%d %H:%M:%S"


class ImageError(Exception):
    """Base: the file cannot become an image; permanent, never worth a retry."""

    code = "image_error"
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedImage(ImageError):
    """Not an image, or an image format the service does not accept."""

    code = "unsupported_type"
    status = 415


class ImageTooLarge(ImageError):
    """More pixels than the service allows: a pixel cap or a decompression bomb."""

    code = "image_too_large"
    status = 413


class InvalidImage(ImageError):
    """Claims a supported format but is damaged, truncated or malformed."""

    code = "invalid_image"
    status = 422


@dataclass(frozen=True)
class Probe:
    """What the header says: the format and the size as stored (before EXIF orientation)."""

    format: str
    width: int
    height: int
    mime: str


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


@dataclass(frozen=True)
class Renditions:
    """Everything the worker stores for one image."""

    thumbnail: bytes
    preview: bytes
    metadata: Metadata


# --------------------------------------------------------------------------- sniffing and opening


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


def _label(fmt: str | None) -> str:
    """The format's name as shown to users."""
    if fmt is None:
        return "image"
    return _LABELS.get(fmt, fmt)


def _too_large_message(max_pixels: int | None) -> str:
    if max_pixels is None:
        return "The image is too large to process."
    return f"The image has more pixels than allowed (limit: {max_pixels / 1e6:g} megapixels)."


def _damaged_message(fmt: str | None) -> str:
    return (
        f"The file looks like a {_label(fmt)} image but cannot be read: "
        "it is damaged or incomplete."
    )


@contextmanager
def _pillow_errors(damaged: str, *, max_pixels: int | None = None) -> Iterator[None]:
    """Turn whatever Pillow raises into an ImageError, and bomb warnings into errors.

    Pillow raises far more than OSError on bad input (ValueError, SyntaxError, TypeError,
    KeyError, IndexError, struct.error, EOFError ...), so anything derived from Exception is
    the file's fault here. BaseException (KeyboardInterrupt, Dramatiq's TimeLimit interrupt)
    passes through untouched.
    """
    try:
        # catch_warnings swaps a process-global filter list and is not thread-safe before
        # Python 3.14: under worker threads the filter below may outlive the block or be missing
        # for part of it. Both are harmless: a leaked filter only makes bombs fail (as wanted
        # everywhere), and a missing one only prints Pillow's warning, because _check_pixels
        # applies the cap anyway. So no other filter (e.g. silencing Pillow's UserWarnings about
        # corrupt metadata) is set here: leaked, it would hide warnings process-wide.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        raise ImageTooLarge(_too_large_message(max_pixels)) from exc
    except Exception as exc:
        raise InvalidImage(damaged) from exc


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse empty images and images over the pixel cap."""
    if width <= 0 or height <= 0:
        raise InvalidImage("The image has no pixels (its width or height is zero).")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels."
        )


@contextmanager
def _open_image(path: StrPath, *, max_pixels: int) -> Iterator[ImageFile.ImageFile]:
    """Open lazily, restricted to the one sniffed format, with the pixel cap checked."""
    with open(path, "rb") as fp:
        fmt = sniff(fp.read(SNIFF_BYTES))
        if fmt is None:
            raise UnsupportedImage(
                "The file is not an image type we accept "
                "(JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC or AVIF)."
            )
        if not _pillow_reads(fmt):
            raise UnsupportedImage(f"{_label(fmt)} images cannot be read by this server.")
        fp.seek(0)
        # Restricting formats= to the sniffed one keeps Pillow from picking another plugin by
        # content, e.g. EPS, which would run Ghostscript on load.
        with _pillow_errors(_damaged_message(fmt), max_pixels=max_pixels):
            im = Image.open(fp, formats=[fmt])
        try:
            if im.format not in _REPORTED_FORMATS:
                raise UnsupportedImage(f"{_label(im.format)} images are not accepted.")
            _check_pixels(im.width, im.height, max_pixels)
            yield im
        finally:
            im.close()


def _pillow_reads(fmt: str) -> bool:
    """Whether this Pillow build has an opener for the format (AVIF needs libavif)."""
    if fmt not in Image.OPEN:
        # Plugins register lazily; this is the same one-time import Image.open would do.
        Image.init()
    return fmt in Image.OPEN


# --------------------------------------------------------------------------------- public steps


def probe(path: StrPath, *, max_pixels: int, max_decode_bytes: int | None = None) -> Probe:
    """Read only the header: sniff, open as that one format, check the pixel cap and (given
    ``max_decode_bytes``) that decoding it for the renditions fits that budget; no decoding."""
    with _open_image(path, max_pixels=max_pixels) as im:
        fmt = str(im.format)
        found = Probe(format=fmt, width=im.width, height=im.height, mime=MIME_TYPES[fmt])
        if max_decode_bytes is not None:
            with _pillow_errors(_damaged_message(fmt), max_pixels=max_pixels):
                _plan_decode(im, max_decode_bytes)
        return found


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow keeps per pixel of a loaded image: 1 for the 8-bit single-band modes
    (bilevel "1" too), 2 for the 16-bit ones, 4 for every other (multi-band 8-bit images
    take 4 bytes a pixel whatever their band count; I and F are 32-bit)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _strip_rows(width: int, factor: int) -> int:
    """Rows converted at a time: about _STRIP_PIXELS, a whole number of reduction blocks."""
    return max(factor, _STRIP_PIXELS // max(1, width) // factor * factor)


def decode_cost(mode: str, size: tuple[int, int], *, alpha: bool, factor: int = 1) -> int:
    """Peak bytes of decoding a picture of this mode and size (after any JPEG draft) and
    making its renditions, when it is shrunk by ``factor`` as soon as it is loaded.

    Decoding holds the loaded pixels, the RGB(A) result and one strip's working copies
    (none but the loaded pixels for RGB and RGBA kept at full size). The renditions hold
    that result, its premultiplied copy when it has alpha (Pillow resizes RGBA as RGBa), and
    a resize's intermediate step: a reduction by 2 or more, or one pass to 800 px across,
    at most half the result in either case (measured: 36 MP RGB 183 MB, estimated 216).
    """
    width, height = size
    loaded = width * height * _bytes_per_pixel(mode)
    kept = -(-width // factor) * -(-height // factor) * _RGB_BYTES_PER_PIXEL
    if mode in ("RGB", "RGBA") and factor == 1:
        decoding = loaded
    else:
        strip = min(height, _strip_rows(width, factor)) * width * _STRIP_BYTES_PER_PIXEL
        decoding = loaded + kept + strip
    renditions = kept + (kept if alpha else 0) + kept // 2
    return max(decoding, renditions)


def _reduction(size: tuple[int, int], orientation: int | None, gap: float) -> int:
    """The largest factor a picture can shrink by and stay ``gap`` times what the renditions
    need (800 px across once upright, 200 on the other side); ``orientation`` None when
    unknown until the pixels are read, so both ways must fit."""
    width, height = size
    across, other = round(PREVIEW_WIDTH * gap), round(THUMBNAIL_SIZE[1] * gap)
    needs = [(across, other), (other, across)]
    if orientation is not None:
        needs = [needs[1] if orientation in _SWAPS_AXES else needs[0]]
    return max(1, min(min(width // need_w, height // need_h) for need_w, need_h in needs))


def _orientation_before_load(im: Image.Image) -> int | None:
    """The EXIF orientation the header gives; None when it may only come with the pixels
    (a PNG's eXIf chunk may follow its image data)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return _orientation(im)


def _plan_decode(im: ImageFile.ImageFile, max_bytes: int | None) -> int:
    """Before load: draft a JPEG for the renditions and choose the factor the picture shrinks
    by once loaded (1 unless that is what keeps the decode within ``max_bytes``), or refuse
    it (ImageTooLarge) when even shrunk it would not fit."""
    orientation = _orientation_before_load(im)
    if im.format in _DRAFT_FORMATS:
        # JPEG EXIF lives in APP1, so reading it does not decode pixels.
        _draft_for_renditions(im, orientation or 1)
    if max_bytes is None:
        return 1
    alpha = im.has_transparency_data
    cost = decode_cost(im.mode, im.size, alpha=alpha)
    if cost <= max_bytes:
        return 1
    # Shrunk _REDUCING_GAP times past what the renditions need, they come out as they would
    # from the full picture; if that is still too much, closer to the need (never under it).
    for factor in range(max(2, _reduction(im.size, orientation, _REDUCING_GAP)),
                        _reduction(im.size, orientation, 1.0) + 1):
        reduced = decode_cost(im.mode, im.size, alpha=alpha, factor=factor)
        if reduced <= max_bytes:
            return factor
        cost = min(cost, reduced)
    mb = 1024 * 1024
    raise ImageTooLarge(
        f"Decoding this {im.width}x{im.height} image would take about {-(-cost // mb)} MB of "
        f"memory; the limit is {max_bytes // mb} MB.")


@dataclass(frozen=True)
class Picture:
    """Decoded pixels as the file stores them, and the EXIF orientation that turns them upright.

    Renditions are resized first and turned last: turning an 800 px preview costs far less
    than turning the decoded picture (for orientations 5-8, twice as large as needed on one
    side, since DCT scaling must keep the upright width).
    """

    pixels: Image.Image
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """Width and height once upright."""
        width, height = self.pixels.size
        return (height, width) if self.orientation in _SWAPS_AXES else (width, height)

    def turn(self, im: Image.Image) -> Image.Image:
        """``im`` (pixels in the stored orientation) turned upright."""
        method = _TRANSPOSE.get(self.orientation)
        if method is None:
            return im
        turned = im.transpose(method)
        turned.info = im.info
        return turned

    def upright(self) -> Image.Image:
        return self.turn(self.pixels)


def decode_picture(path: StrPath, *, max_pixels: int,
                   max_decode_bytes: int | None = None) -> Picture:
    """Decode frame one, only as large as the renditions need, as RGB or RGBA, not yet turned.

    With ``max_decode_bytes`` the memory it takes (``decode_cost``) is estimated before
    anything is decoded: over the budget, the picture is shrunk by a whole factor as it is
    converted (as the preview's resize would anyway), or refused with ImageTooLarge when
    even that would not fit.
    """
    with (
        _open_image(path, max_pixels=max_pixels) as im,
        _pillow_errors(_damaged_message(im.format), max_pixels=max_pixels),
    ):
        factor = _plan_decode(im, max_decode_bytes)
        im.load()
        # Read after load: PNG may keep eXIf after the pixel data and loads to find it; a load
        # that failed inside getexif would otherwise be swallowed, and a second load() on the
        # same object can return without error (seen with a broken APNG).
        orientation = _orientation(im)
        icc_profile = _rgb_icc_profile(im.info.get("icc_profile"))
        out = _rendition_pixels(im, factor)
        # Keep nothing of the source's metadata but a usable colour profile.
        out.info = {"icc_profile": icc_profile} if icc_profile else {}
    return Picture(out, orientation)


def decode(path: StrPath, *, max_pixels: int, max_decode_bytes: int | None = None
           ) -> Image.Image:
    """Decode frame one, only as large as the renditions need, upright, as RGB or RGBA."""
    return decode_picture(path, max_pixels=max_pixels,
                          max_decode_bytes=max_decode_bytes).upright()


def _rendition_pixels(im: Image.Image, factor: int) -> Image.Image:
    """The loaded ``im`` as RGB or RGBA, shrunk by ``factor``, in an image of its own (the
    file is closed when decoding returns).

    Converted a strip at a time: every conversion here works pixel by pixel (a grey range
    is measured on the whole picture first), so the result is the same as converting the
    whole, without a full-size copy for each step. A reduction averages whole blocks, so a
    strip of whole blocks reduces as the whole would (RGBA premultiplied, as resize does).
    """
    if im.mode in ("RGB", "RGBA") and factor == 1:
        # The loaded pixels themselves, in a new Image not tied to the file: a copy would
        # double the largest allocation of the job.
        return im._new(im.im)
    levels = _gray_levels(im) if _is_wide_gray(im.mode) else None
    width, height = im.size
    rows = _strip_rows(width, factor)
    out: Image.Image | None = None
    for top in range(0, height, rows):
        strip = _to_rgb_or_rgba(im.crop((0, top, width, min(height, top + rows))), levels)
        if factor > 1:
            strip = _reduce(strip, factor)
        if out is None:
            out = Image.new(strip.mode, (-(-width // factor), -(-height // factor)))
        out.paste(strip, (0, top // factor))
    assert out is not None  # a picture has at least one row
    return out


def _reduce(im: Image.Image, factor: int) -> Image.Image:
    """``im`` (RGB or RGBA) shrunk by averaging factor x factor blocks."""
    if im.mode == "RGBA":
        # Premultiplied, so that the colour of transparent pixels does not bleed in.
        return im.convert("RGBa").reduce(factor).convert("RGBA")
    return im.reduce(factor)


def make_thumbnail(im: Image.Image | Picture, preview: Image.Image | None = None, *,
                   method: int = WEBP_METHOD) -> bytes:
    """200x200 cover-cropped WebP, quality 80."""
    with _pillow_errors("The thumbnail could not be made from this image."):
        return encode_webp(thumbnail_image(im, preview), quality=THUMBNAIL_QUALITY,
                           method=method)


def make_preview(im: Image.Image | Picture, *, method: int = WEBP_METHOD) -> bytes:
    """800 px wide WebP at quality 85, never upscaled."""
    return encode_preview(preview_image(im), method=method)


def encode_preview(preview: Image.Image, *, method: int = WEBP_METHOD) -> bytes:
    """The preview's pixels (``preview_image``) as WebP at quality 85."""
    with _pillow_errors("The preview could not be made from this image."):
        return encode_webp(preview, quality=PREVIEW_QUALITY, method=method)


def thumbnail_image(im: Image.Image | Picture, preview: Image.Image | None = None) -> Image.Image:
    """The thumbnail's pixels: 200x200, cover-cropped and centred, before encoding.

    Made from the preview's pixels when they are at least twice the box on the short side
    (then the preview's resampling costs the thumbnail nothing: PSNR against a full-size
    LANCZOS reference stays above 40 dB), else from the picture itself, e.g. for a
    panorama whose 800 px wide preview is too low to fill a square.
    """
    if preview is not None and min(preview.size) >= 2 * max(THUMBNAIL_SIZE):
        return _cover(_to_rgb_or_rgba(preview))
    if isinstance(im, Picture):
        # A centred square crop turned upright is the turned picture's centred square crop.
        return im.turn(_cover(_to_rgb_or_rgba(im.pixels)))
    return _cover(_to_rgb_or_rgba(im))


def preview_image(im: Image.Image | Picture) -> Image.Image:
    """The preview's pixels: 800 px wide (never upscaled), upright, before encoding."""
    with _pillow_errors("The preview could not be made from this image."):
        return _preview(im)


def _preview(im: Image.Image | Picture) -> Image.Image:
    picture = im if isinstance(im, Picture) else Picture(im)
    pixels = _to_rgb_or_rgba(picture.pixels)
    width, height = picture.size
    target_w = min(PREVIEW_WIDTH, width)
    target_h = max(1, round(height * target_w / width))
    if target_h > _WEBP_MAX_DIMENSION:
        # Only for extreme strips (taller than ~20:1): WebP cannot hold the full height at
        # 800 wide, so the preview gets narrower instead of failing.
        target_w = max(1, round(width * _WEBP_MAX_DIMENSION / height))
        target_h = _WEBP_MAX_DIMENSION
    stored = (target_h, target_w) if picture.orientation in _SWAPS_AXES else (target_w,
                                                                              target_h)
    if stored != pixels.size:
        pixels = pixels.resize(stored, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return picture.turn(pixels)


def _cover(im: Image.Image) -> Image.Image:
    """Scale so the thumbnail box is filled (enlarging small sources), crop the centre."""
    width, height = im.size
    box_w, box_h = THUMBNAIL_SIZE
    # The same cover crop as ImageOps.fit (centred), done as one resize with a crop box so
    # that the reducing gap can shrink large sources cheaply first; fit() offers no gap.
    scale = max(box_w / width, box_h / height)
    crop_w, crop_h = box_w / scale, box_h / scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return im.resize(THUMBNAIL_SIZE, _RESAMPLE, box=(left, top, left + crop_w, top + crop_h),
                     reducing_gap=_REDUCING_GAP)


def read_metadata(path: StrPath, *, max_pixels: int) -> Metadata:
    """Header and EXIF facts worth showing; counts frames without decoding pixels where possible."""
    with _open_image(path, max_pixels=max_pixels) as im:
        fmt, mode = str(im.format), im.mode
        width, height = im.size
        exif = _header_exif(im)
        orientation = _exif_orientation(exif)
        if orientation in _SWAPS_AXES:
            width, height = height, width
        with _pillow_errors(_damaged_message(fmt), max_pixels=max_pixels):
            # Counting walks every frame header; a later frame may be damaged or a bomb (a GIF
            # whose second frame grows the canvas to gigapixels), which must not pass silently.
            frames = int(getattr(im, "n_frames", 1))
            _check_pixels(im.width, im.height, max_pixels)
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


def process(path: StrPath, *, max_pixels: int, method: int = WEBP_METHOD,
            max_decode_bytes: int | None = None) -> Renditions:
    """Metadata, thumbnail and preview of one file, failing with an ImageError."""
    # Metadata first: it is cheap and finds bombs hidden in later frames before any decoding.
    metadata = read_metadata(path, max_pixels=max_pixels)
    picture = decode_picture(path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    preview = preview_image(picture)
    return Renditions(thumbnail=make_thumbnail(picture, preview, method=method),
                      preview=encode_preview(preview, method=method), metadata=metadata)


# ------------------------------------------------------------------------------------ internals


def _draft_for_renditions(im: ImageFile.ImageFile, orientation: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying big enough for both renditions."""
    # draft() picks the largest reduction that keeps both sides >= the request: at least
    # PREVIEW_WIDTH across so the preview is exactly 800 wide, and THUMBNAIL_SIZE[1] on the
    # other side so the cover crop never enlarges. It must run before load().
    target = (PREVIEW_WIDTH, THUMBNAIL_SIZE[1])
    if orientation in _SWAPS_AXES:
        target = (target[1], target[0])
    im.draft("RGB", target)


def _to_rgb_or_rgba(im: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """The image in RGB, or RGBA when it has any transparency (``levels``: ``_gray_levels``
    of the whole picture when ``im`` is a strip of a 16/32-bit or float grey one)."""
    if im.mode in ("RGB", "RGBA"):
        return im
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    if _is_wide_gray(im.mode):
        im = _to_8bit_gray(im, levels)
    target = "RGBA" if im.has_transparency_data else "RGB"
    return im.convert(target)


def _is_wide_gray(mode: str) -> bool:
    """16-bit, 32-bit and float grey: modes convert() would clip rather than scale."""
    return mode.startswith("I") or mode == "F"


def _to_8bit_gray(im: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """Scale 16/32-bit and float grayscale to 8-bit L; convert() alone clips them to white."""
    scale, offset = levels or _gray_levels(im)
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    scaled = im.point(lambda v: v * scale + offset)
    # A tRNS value is in the old 16-bit scale and would mark the wrong grey as transparent.
    scaled.info.pop("transparency", None)
    return scaled.convert("L")


def _gray_levels(im: Image.Image) -> tuple[float, float]:
    """``(scale, offset)`` taking a 16/32-bit or float grey image's range to 0..255."""
    if im.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        extrema = im.getextrema()
        low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        if im.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        elif low >= 0.0 and high <= 255.0:
            low, high = 0.0, 255.0
        elif low >= 0.0 and high <= 65535.0:
            low, high = 0.0, 65535.0
        # Otherwise an unusual range: stretch what is there to 0..255.
    scale = 255.0 / (high - low) if high > low else 1.0
    return scale, -low * scale


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK to RGB through the embedded profile when there is one; naive formula otherwise."""
    profile = im.info.get("icc_profile")
    if isinstance(profile, bytes) and profile:
        try:
            from PIL import ImageCms

            converted = ImageCms.profileToProfile(
                im,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
            if converted is not None:
                return converted
        except Exception:
            # A broken profile or a Pillow built without LittleCMS: the naive formula still
            # gives a recognisable picture, which beats failing the job.
            pass
    return im.convert("RGB")


def _rgb_icc_profile(profile: object) -> bytes | None:
    """The embedded ICC profile if it describes RGB data, else None.

    Wide-gamut sources (Display P3 from phones, Adobe RGB from cameras) look washed out if their
    profile is dropped; passing it through lets browsers colour-manage the WebP at no pixel cost,
    unlike converting to sRGB with LittleCMS. CMYK and grey profiles would not match the RGB
    output, and pillow-heif may put an 'nclx' colour box here instead of an ICC profile.
    """
    if not isinstance(profile, bytes) or len(profile) < 128:
        return None
    # ICC header: data colour space at offset 16, the 'acsp' signature at offset 36.
    if profile[36:40] != b"acsp" or profile[16:20] != b"RGB ":
        return None
    return profile


def encode_webp(im: Image.Image, *, quality: int, method: int = WEBP_METHOD) -> bytes:
    """WebP bytes carrying no EXIF or XMP: Pillow writes those only when passed explicitly."""
    buffer = io.BytesIO()
    params: dict[str, Any] = {"quality": quality, "method": method}
    icc_profile = _rgb_icc_profile(im.info.get("icc_profile"))
    if icc_profile:
        params["icc_profile"] = icc_profile
    im.save(buffer, format="WEBP", **params)
    return buffer.getvalue()


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8; 1 when absent or unreadable (corrupt EXIF must not fail a job)."""
    try:
        return _exif_orientation(im.getexif())
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


def _exif_orientation(exif: Image.Exif) -> int:
    try:
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1
    return value if value in _TRANSPOSE else 1


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
