"""Pixels in the modes the renditions are made in: any mode to RGB or RGBA (CMYK through
its profile, wide grey scaled rather than clipped), and which colour profile may follow."""

from __future__ import annotations

import io

from PIL import Image


def to_rgb_or_rgba(im: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """The image in RGB, or RGBA when it has any transparency (``levels``: ``gray_levels``
    of the whole picture when ``im`` is a strip of a 16/32-bit or float grey one)."""
    if im.mode in ("RGB", "RGBA"):
        return im
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    if is_wide_gray(im.mode):
        im = _to_8bit_gray(im, levels)
    target = "RGBA" if im.has_transparency_data else "RGB"
    return im.convert(target)


def is_wide_gray(mode: str) -> bool:
    """16-bit, 32-bit and float grey: modes convert() would clip rather than scale."""
    return mode.startswith("I") or mode == "F"


def _to_8bit_gray(im: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """Scale 16/32-bit and float grayscale to 8-bit L; convert() alone clips them to white."""
    scale, offset = levels or gray_levels(im)
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    scaled = im.point(lambda v: v * scale + offset)
    # A tRNS value is in the old 16-bit scale and would mark the wrong grey as transparent.
    scaled.info.pop("transparency", None)
    return scaled.convert("L")


def gray_levels(im: Image.Image) -> tuple[float, float]:
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


def rgb_icc_profile(profile: object) -> bytes | None:
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
