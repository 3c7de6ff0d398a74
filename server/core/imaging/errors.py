"""What can go wrong with a file: the ImageError family, and Pillow's errors turned into it.

Every failure caused by the file itself comes out as an ImageError subclass; anything else
(a missing file, a bug) propagates unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from server.core.errors import Problem

# How formats are named in messages shown to users.
_LABELS: dict[str, str] = {"MPO": "JPEG", "WEBP": "WebP", "HEIF": "HEIC"}


class ImageError(Exception):
    """Base: the file cannot become an image; permanent, never worth a retry."""

    code = "image_error"
    kind = Problem.UNPROCESSABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedImage(ImageError):
    """Not an image, or an image format the service does not accept."""

    code = "unsupported_type"
    kind = Problem.UNSUPPORTED


class ImageTooLarge(ImageError):
    """More pixels than the service allows: a pixel cap or a decompression bomb."""

    code = "image_too_large"
    kind = Problem.TOO_LARGE


class InvalidImage(ImageError):
    """Claims a supported format but is damaged, truncated or malformed."""

    code = "invalid_image"
    kind = Problem.UNPROCESSABLE


def label(fmt: str | None) -> str:
    """The format's name as shown to users."""
    if fmt is None:
        return "image"
    return _LABELS.get(fmt, fmt)


def _too_large_message(max_pixels: int | None) -> str:
    if max_pixels is None:
        return "The image is too large to process."
    return f"The image has more pixels than allowed (limit: {max_pixels / 1e6:g} megapixels)."


def damaged_message(fmt: str | None) -> str:
    """Why a file of a format we read could not be read."""
    return (
        f"The file looks like a {label(fmt)} image but cannot be read: "
        "it is damaged or incomplete."
    )


@contextmanager
def pillow_errors(damaged: str, *, max_pixels: int | None = None) -> Iterator[None]:
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
        # everywhere), and a missing one only prints Pillow's warning, because check_pixels
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


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse empty images and images over the pixel cap."""
    if width <= 0 or height <= 0:
        raise InvalidImage("The image has no pixels (its width or height is zero).")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels."
        )
