"""The renditions: a 200x200 cover-cropped thumbnail and an 800 px wide preview, resized
from the decoded ``Picture``, turned upright last and encoded as WebP without metadata."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from server.core.imaging.colour import rgb_icc_profile, to_rgb_or_rgba
from server.core.imaging.errors import pillow_errors
from server.core.imaging.exif import SWAPS_AXES, TRANSPOSE

THUMBNAIL_SIZE = (200, 200)
THUMBNAIL_QUALITY = 80
PREVIEW_WIDTH = 800
PREVIEW_QUALITY = 85

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
REDUCING_GAP = 3.0


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
        return (height, width) if self.orientation in SWAPS_AXES else (width, height)

    def turn(self, im: Image.Image) -> Image.Image:
        """``im`` (pixels in the stored orientation) turned upright."""
        method = TRANSPOSE.get(self.orientation)
        if method is None:
            return im
        turned = im.transpose(method)
        turned.info = im.info
        return turned

    def upright(self) -> Image.Image:
        """The whole picture turned upright."""
        return self.turn(self.pixels)


def make_thumbnail(im: Image.Image | Picture, preview: Image.Image | None = None, *,
                   method: int = WEBP_METHOD) -> bytes:
    """200x200 cover-cropped WebP, quality 80."""
    with pillow_errors("The thumbnail could not be made from this image."):
        return encode_webp(thumbnail_image(im, preview), quality=THUMBNAIL_QUALITY,
                           method=method)


def make_preview(im: Image.Image | Picture, *, method: int = WEBP_METHOD) -> bytes:
    """800 px wide WebP at quality 85, never upscaled."""
    return encode_preview(preview_image(im), method=method)


def encode_preview(preview: Image.Image, *, method: int = WEBP_METHOD) -> bytes:
    """The preview's pixels (``preview_image``) as WebP at quality 85."""
    with pillow_errors("The preview could not be made from this image."):
        return encode_webp(preview, quality=PREVIEW_QUALITY, method=method)


def thumbnail_image(im: Image.Image | Picture, preview: Image.Image | None = None) -> Image.Image:
    """The thumbnail's pixels: 200x200, cover-cropped and centred, before encoding.

    Made from the preview's pixels when they are at least twice the box on the short side
    (then the preview's resampling costs the thumbnail nothing: PSNR against a full-size
    LANCZOS reference stays above 40 dB), else from the picture itself, e.g. for a
    panorama whose 800 px wide preview is too low to fill a square.
    """
    if preview is not None and min(preview.size) >= 2 * max(THUMBNAIL_SIZE):
        return _cover(to_rgb_or_rgba(preview))
    if isinstance(im, Picture):
        # A centred square crop turned upright is the turned picture's centred square crop.
        return im.turn(_cover(to_rgb_or_rgba(im.pixels)))
    return _cover(to_rgb_or_rgba(im))


def preview_image(im: Image.Image | Picture) -> Image.Image:
    """The preview's pixels: 800 px wide (never upscaled), upright, before encoding."""
    with pillow_errors("The preview could not be made from this image."):
        return _preview(im)


def _preview(im: Image.Image | Picture) -> Image.Image:
    picture = im if isinstance(im, Picture) else Picture(im)
    pixels = to_rgb_or_rgba(picture.pixels)
    width, height = picture.size
    target_w = min(PREVIEW_WIDTH, width)
    target_h = max(1, round(height * target_w / width))
    if target_h > _WEBP_MAX_DIMENSION:
        # Only for extreme strips (taller than ~20:1): WebP cannot hold the full height at
        # 800 wide, so the preview gets narrower instead of failing.
        target_w = max(1, round(width * _WEBP_MAX_DIMENSION / height))
        target_h = _WEBP_MAX_DIMENSION
    stored = (target_h, target_w) if picture.orientation in SWAPS_AXES else (target_w,
                                                                             target_h)
    if stored != pixels.size:
        pixels = pixels.resize(stored, _RESAMPLE, reducing_gap=REDUCING_GAP)
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
                     reducing_gap=REDUCING_GAP)


def encode_webp(im: Image.Image, *, quality: int, method: int = WEBP_METHOD) -> bytes:
    """WebP bytes carrying no EXIF or XMP: Pillow writes those only when passed explicitly."""
    buffer = io.BytesIO()
    params: dict[str, Any] = {"quality": quality, "method": method}
    icc_profile = rgb_icc_profile(im.info.get("icc_profile"))
    if icc_profile:
        params["icc_profile"] = icc_profile
    im.save(buffer, format="WEBP", **params)
    return buffer.getvalue()
