"""Decoding within a memory budget (MAX_DECODE_MB): what decoding a picture costs, the plan
that keeps it within the budget (a JPEG draft, a whole-factor reduction, or a refusal), and
the decode itself, a strip at a time, to a ``Picture`` in RGB or RGBA."""

from __future__ import annotations

from PIL import Image, ImageFile

from server.core.imaging.colour import gray_levels, is_wide_gray, rgb_icc_profile, to_rgb_or_rgba
from server.core.imaging.errors import ImageTooLarge, damaged_message, pillow_errors
from server.core.imaging.exif import SWAPS_AXES, orientation_of
from server.core.imaging.formats import StrPath, open_image
from server.core.imaging.render import PREVIEW_WIDTH, REDUCING_GAP, THUMBNAIL_SIZE, Picture

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
        needs = [needs[1] if orientation in SWAPS_AXES else needs[0]]
    return max(1, min(min(width // need_w, height // need_h) for need_w, need_h in needs))


def _orientation_before_load(im: Image.Image) -> int | None:
    """The EXIF orientation the header gives; None when it may only come with the pixels
    (a PNG's eXIf chunk may follow its image data)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return orientation_of(im)


def plan_decode(im: ImageFile.ImageFile, max_bytes: int | None) -> int:
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
    # Shrunk REDUCING_GAP times past what the renditions need, they come out as they would
    # from the full picture; if that is still too much, closer to the need (never under it).
    for factor in range(max(2, _reduction(im.size, orientation, REDUCING_GAP)),
                        _reduction(im.size, orientation, 1.0) + 1):
        reduced = decode_cost(im.mode, im.size, alpha=alpha, factor=factor)
        if reduced <= max_bytes:
            return factor
        cost = min(cost, reduced)
    mb = 1024 * 1024
    raise ImageTooLarge(
        f"Decoding this {im.width}x{im.height} image would take about {-(-cost // mb)} MB of "
        f"memory; the limit is {max_bytes // mb} MB.")


def decode_picture(path: StrPath, *, max_pixels: int,
                   max_decode_bytes: int | None = None) -> Picture:
    """Decode frame one, only as large as the renditions need, as RGB or RGBA, not yet turned.

    With ``max_decode_bytes`` the memory it takes (``decode_cost``) is estimated before
    anything is decoded: over the budget, the picture is shrunk by a whole factor as it is
    converted (as the preview's resize would anyway), or refused with ImageTooLarge when
    even that would not fit.
    """
    with (
        open_image(path, max_pixels=max_pixels) as im,
        pillow_errors(damaged_message(im.format), max_pixels=max_pixels),
    ):
        factor = plan_decode(im, max_decode_bytes)
        im.load()
        # Read after load: PNG may keep eXIf after the pixel data and loads to find it; a load
        # that failed inside getexif would otherwise be swallowed, and a second load() on the
        # same object can return without error (seen with a broken APNG).
        orientation = orientation_of(im)
        icc_profile = rgb_icc_profile(im.info.get("icc_profile"))
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
    levels = gray_levels(im) if is_wide_gray(im.mode) else None
    width, height = im.size
    rows = _strip_rows(width, factor)
    out: Image.Image | None = None
    for top in range(0, height, rows):
        strip = to_rgb_or_rgba(im.crop((0, top, width, min(height, top + rows))), levels)
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


def _draft_for_renditions(im: ImageFile.ImageFile, orientation: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying big enough for both renditions."""
    # draft() picks the largest reduction that keeps both sides >= the request: at least
    # PREVIEW_WIDTH across so the preview is exactly 800 wide, and THUMBNAIL_SIZE[1] on the
    # other side so the cover crop never enlarges. It must run before load().
    target = (PREVIEW_WIDTH, THUMBNAIL_SIZE[1])
    if orientation in SWAPS_AXES:
        target = (target[1], target[0])
    im.draft("RGB", target)
