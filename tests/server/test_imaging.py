"""Unit tests for the pure image pipeline, on small images that Pillow makes here."""

from __future__ import annotations

import ast
import io
import math
import random
import struct
import sys
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, ExifTags, Image, ImageChops, ImageCms, ImageStat

from server.core import imaging
from server.core.imaging import (
    ImageError,
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
    colour,
    decode,
    decoding,
    make_preview,
    make_thumbnail,
    probe,
    read_metadata,
    sniff,
)
from server.web.http.error_handlers import STATUS

# Pillow reports corrupt metadata ("Corrupt EXIF data", "Tag data larger than file") as a
# UserWarning and carries on; in the service such a warning is only logged, so it must not
# turn into an error here either.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

CAP = 50_000_000
RED = (230, 20, 20)
BLUE = (20, 20, 230)


# ------------------------------------------------------------------------------------ helpers


def save(tmp_path: Path, im: Image.Image, name: str, fmt: str, **params: object) -> Path:
    path = tmp_path / name
    im.save(path, fmt, **params)
    return path


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def photo(size: tuple[int, int]) -> Image.Image:
    """A red top-left quadrant on blue, so orientation is visible in the pixels."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1] // 2))
    return im


def camera_exif(*, orientation: int = 1, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.Base.Model] = "Model 1"
    exif[ExifTags.Base.DateTime] = "2020:01:02 03:04:05"
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2019:12:31 23:59:58"
    if gps:
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N"
        gps_ifd[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
        gps_ifd[ExifTags.GPS.GPSLongitudeRef] = "E"
        gps_ifd[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    return exif


def open_webp(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "WEBP"
    return im


def assert_no_metadata(data: bytes) -> None:
    """No EXIF or XMP chunk in a WebP file, and Pillow finds none."""
    im = open_webp(data)
    assert "exif" not in im.info
    assert "xmp" not in im.info
    assert len(im.getexif()) == 0
    assert b"EXIF" not in data
    assert b"XMP " not in data


def mean_brightness(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("L")).mean[0])


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# -------------------------------------------------------------------------------- the contract


def test_error_classes_carry_code_and_status() -> None:
    assert (UnsupportedImage.code, STATUS[UnsupportedImage.kind]) == ("unsupported_type", 415)
    assert (ImageTooLarge.code, STATUS[ImageTooLarge.kind]) == ("image_too_large", 413)
    assert (InvalidImage.code, STATUS[InvalidImage.kind]) == ("invalid_image", 422)
    for cls in (UnsupportedImage, ImageTooLarge, InvalidImage):
        assert issubclass(cls, ImageError)


def test_constants() -> None:
    assert imaging.THUMBNAIL_SIZE == (200, 200)
    assert imaging.THUMBNAIL_QUALITY == 80
    assert imaging.PREVIEW_WIDTH == 800
    assert imaging.PREVIEW_QUALITY == 85
    expected = {"JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF", "AVIF"}
    assert set(imaging.ALLOWED_FORMATS) == expected
    assert "MPO" not in imaging.ALLOWED_FORMATS
    assert imaging.MIME_TYPES["MPO"] == imaging.MIME_TYPES["JPEG"] == "image/jpeg"
    assert imaging.MIME_TYPES["HEIF"] == "image/heic"
    assert set(imaging.ALLOWED_FORMATS) <= set(imaging.MIME_TYPES)


@pytest.mark.parametrize("module", sorted(Path(imaging.__file__).parent.glob("*.py")),
                         ids=lambda path: path.name)
def test_module_imports_no_io_or_web_library(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no project-relative imports"
            names = [node.module or ""]
        else:
            continue
        # The package's own modules and the pure core (the kinds of error), nothing else
        # of the project (tests/test_boundaries.py keeps the core pure).
        roots.update(name.split(".")[0] for name in names
                     if not name.startswith((f"{imaging.__name__}.", "server.core.")))
    forbidden = {"dramatiq", "redis", "sqlalchemy", "starlette", "socketio", "server", "workers"}
    assert not roots & forbidden
    allowed = set(sys.stdlib_module_names) | {"PIL", "pillow_heif"}
    assert roots <= allowed, roots - allowed


# ------------------------------------------------------------------------------------- sniffing


def encoded(fmt: str, mode: str = "RGB", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), RED if mode == "RGB" else 1).save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encoded("JPEG"), "JPEG"),
        (encoded("PNG"), "PNG"),
        (encoded("GIF"), "GIF"),
        (b"GIF87a" + b"\x00" * 26, "GIF"),
        (encoded("WEBP"), "WEBP"),
        (encoded("TIFF"), "TIFF"),
        (b"II*\x00\x08\x00\x00\x00" + b"\x00" * 24, "TIFF"),
        (b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 24, "TIFF"),
        (b"II+\x00\x08\x00\x00\x00" + b"\x00" * 24, "TIFF"),
        (encoded("BMP"), "BMP"),
        (encoded("BMP", mode="P"), "BMP"),
    ],
    ids=[
        "jpeg",
        "png",
        "gif89a",
        "gif87a",
        "webp",
        "tiff",
        "tiff-le",
        "tiff-be",
        "bigtiff",
        "bmp",
        "bmp-palette",
    ],
)
def test_sniff_recognises_magic_numbers(data: bytes, expected: str) -> None:
    assert sniff(data[:32]) == expected


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    box = struct.pack(">I", 8 + len(body)) + b"ftyp" + body
    return box + b"\x00\x00\x00\x08meta" + b"\x00" * 16


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (ftyp(b"heix", b"mif1"), "HEIF"),
        (ftyp(b"hevc", b"msf1"), "HEIF"),
        (ftyp(b"mif1", b"heic", b"miaf"), "HEIF"),
        (ftyp(b"msf1", b"hevc"), "HEIF"),
        (ftyp(b"heim"), "HEIF"),
        (ftyp(b"heis"), "HEIF"),
        (ftyp(b"hevx"), "HEIF"),
        (ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (ftyp(b"avis", b"msf1"), "AVIF"),
        (ftyp(b"mif1", b"avif", b"miaf"), "AVIF"),
        (ftyp(b"mif1", b"heic", b"avif"), "AVIF"),
        (ftyp(b"isom", b"iso2", b"mp41"), None),
        (ftyp(b"qt  "), None),
        (ftyp(b"crx ", b"isom"), None),
    ],
)
def test_sniff_reads_iso_bmff_brands(head: bytes, expected: str | None) -> None:
    assert sniff(head[:64]) == expected
    assert sniff(head[:32]) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00" * 32,
        b"Hello, this is a plain text file",
        b"<!DOCTYPE html><html><script>alert(1)</script>",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        b"PK\x03\x04\x14\x00\x00\x00",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        b"\xc5\xd0\xd3\xc6\x20\x00\x00\x00",  # DOS EPS binary header
        b"BMW owners club newsletter: issue 12",
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
        b"\xff\xd8",  # too short to be a JPEG
    ],
    ids=[
        "empty",
        "zeros",
        "text",
        "html",
        "svg",
        "pdf",
        "zip",
        "eps",
        "eps-dos",
        "bm-text",
        "wav",
        "short-jpeg",
    ],
)
def test_sniff_refuses_non_images(head: bytes) -> None:
    assert sniff(head) is None


def test_sniff_never_raises_on_random_bytes() -> None:
    rng = random.Random(20240601)
    prefixes = [b"", b"BM", b"\x00\x00\x00\x18ftyp", b"\xff\x00\x00\x01ftyp", b"RIFF"]
    for _ in range(2000):
        noise = rng.randbytes(rng.randrange(0, 40))
        result = sniff(rng.choice(prefixes) + noise)
        assert result is None or result in imaging.ALLOWED_FORMATS


# -------------------------------------------------------------------------------------- probing


def test_probe_reads_header(tmp_path: Path) -> None:
    path = save(tmp_path, photo((300, 200)), "a.jpg", "JPEG", exif=camera_exif(orientation=6))
    result = probe(path, max_pixels=CAP)
    # As stored: orientation is not applied by probe.
    assert result == imaging.Probe(format="JPEG", width=300, height=200, mime="image/jpeg")


def test_probe_over_pixel_cap(tmp_path: Path) -> None:
    path = save(tmp_path, photo((100, 100)), "a.png", "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        probe(path, max_pixels=9_999)
    assert STATUS[caught.value.kind] == 413
    assert str(tmp_path) not in str(caught.value)
    # Exactly at the cap is allowed.
    assert probe(path, max_pixels=10_000).width == 100


def gif_declaring(width: int, height: int, *, frame_too: bool = False) -> bytes:
    """A one-pixel GIF whose logical screen (and optionally its frame) claims another size."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", width, height)
    if frame_too:
        descriptor = data.index(b",")
        data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def test_probe_turns_pillow_bomb_error_into_too_large(tmp_path: Path) -> None:
    # A GIF declaring 65535x65535 (4.3 gigapixels): Pillow raises DecompressionBombError at
    # open, above any cap we could be given.
    path = write(tmp_path, "bomb.gif", gif_declaring(65535, 65535))
    with pytest.raises(ImageTooLarge):
        probe(path, max_pixels=10**13)


def bmp_header(width: int, height: int) -> bytes:
    """A 1-bit BMP header with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, 0, 2835, 2835, 2, 0)
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info + palette


def test_probe_turns_pillow_bomb_warning_into_too_large(tmp_path: Path) -> None:
    # 151.6 MP lies between Pillow's warning (89.5 MP) and error (179 MP) limits; even with a
    # generous cap of our own the warning must not let it through.
    path = write(tmp_path, "wide.bmp", bmp_header(3_158_064, 48))
    with pytest.raises(ImageTooLarge):
        probe(path, max_pixels=10**9)
    with pytest.raises(ImageTooLarge):
        probe(path, max_pixels=CAP)


def test_probe_garbage_is_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jpg", bytes(range(256)) * 8)
    with pytest.raises(UnsupportedImage) as caught:
        probe(path, max_pixels=CAP)
    assert STATUS[caught.value.kind] == 415


def test_probe_garbage_behind_a_magic_number_is_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(InvalidImage) as caught:
        probe(path, max_pixels=CAP)
    message = str(caught.value)
    assert STATUS[caught.value.kind] == 422
    assert str(tmp_path) not in message
    assert "Traceback" not in message
    assert "PNG" in message


def test_probe_zero_width_is_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, "zero.gif", gif_declaring(0, 10, frame_too=True))
    with pytest.raises(InvalidImage):
        probe(path, max_pixels=CAP)


def test_probe_eps_is_unsupported_without_running_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ghostscript(*args: object, **kwargs: object) -> None:
        pytest.fail("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    path = write(tmp_path, "photo.jpg", eps)
    for step in (probe, decode, read_metadata):
        with pytest.raises(UnsupportedImage):
            step(path, max_pixels=CAP)


def test_truncated_jpeg_passes_probe_but_fails_decode(tmp_path: Path) -> None:
    noise = Image.effect_noise((400, 300), 80).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    path = write(tmp_path, "cut.jpg", data[: len(data) // 2])
    assert probe(path, max_pixels=CAP).format == "JPEG"
    with pytest.raises(InvalidImage) as caught:
        decode(path, max_pixels=CAP)
    assert str(tmp_path) not in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


def test_decode_rechecks_pixel_cap(tmp_path: Path) -> None:
    path = save(tmp_path, photo((100, 100)), "a.jpg", "JPEG")
    with pytest.raises(ImageTooLarge):
        decode(path, max_pixels=5_000)
    with pytest.raises(ImageTooLarge):
        read_metadata(path, max_pixels=5_000)


# ------------------------------------------------------------------------------------- decoding


def test_jpeg_orientation_6_is_applied(tmp_path: Path) -> None:
    path = save(tmp_path, photo((300, 200)), "a.jpg", "JPEG", exif=camera_exif(orientation=6))
    im = decode(path, max_pixels=CAP)
    assert im.size == (200, 300)
    # Orientation 6 turns the picture 90 degrees clockwise: top-left moves to top-right.
    assert close_to(im.getpixel((190, 10)), RED)  # type: ignore[arg-type]
    assert close_to(im.getpixel((10, 10)), BLUE)  # type: ignore[arg-type]
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.width, metadata.height) == (200, 300)
    preview = open_webp(make_preview(im))
    assert preview.size == (200, 300)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_gives_display_size(tmp_path: Path, orientation: int) -> None:
    stored = (120, 90) if orientation < 5 else (90, 120)
    exif = camera_exif(orientation=orientation)
    path = save(tmp_path, photo(stored), "a.jpg", "JPEG", exif=exif)
    assert decode(path, max_pixels=CAP).size == (120, 90)
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.width, metadata.height) == (120, 90)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    im = Image.new("CMYK", (64, 48), (255, 0, 0, 0))  # pure cyan ink
    path = save(tmp_path, im, "cmyk.jpg", "JPEG", quality=95)
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGB"
    assert out.size == (64, 48)
    assert close_to(out.getpixel((32, 24)), (0, 255, 255), tolerance=60)  # type: ignore[arg-type]
    assert read_metadata(path, max_pixels=CAP).mode == "CMYK"
    assert open_webp(make_thumbnail(out)).size == (200, 200)


def test_16bit_grayscale_png_is_not_white(tmp_path: Path) -> None:
    # A left-to-right ramp over the full 16-bit range: mean ~ half of 65535, i.e. mid grey.
    ramp = Image.linear_gradient("L").rotate(90).resize((256, 64))
    im = ramp.point(lambda v: v * 257, mode="I").convert("I;16")
    path = save(tmp_path, im, "gray16.png", "PNG")
    with Image.open(path) as reopened:
        assert reopened.mode == "I;16"
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGB"
    assert 100 < mean_brightness(out) < 156
    assert 100 < mean_brightness(open_webp(make_preview(out))) < 156
    assert read_metadata(path, max_pixels=CAP).mode == "I;16"


def test_16bit_mid_grey_stays_mid_grey(tmp_path: Path) -> None:
    path = save(tmp_path, Image.new("I;16", (32, 32), 32768), "grey.png", "PNG")
    assert 120 < mean_brightness(decode(path, max_pixels=CAP)) < 136


def test_float_and_32bit_tiffs_are_scaled(tmp_path: Path) -> None:
    half = Image.new("F", (16, 16), 0.5)
    path = save(tmp_path, half, "f.tif", "TIFF")
    assert 120 < mean_brightness(decode(path, max_pixels=CAP)) < 136
    wide = Image.new("I", (16, 16), 1_000_000)
    wide.paste(3_000_000, (0, 0, 8, 16))
    path = save(tmp_path, wide, "i.tif", "TIFF")
    out = decode(path, max_pixels=CAP)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((15, 0)) == (0, 0, 0)


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([255, 255, 255, *RED] + [0] * 762)
    im.paste(1, (0, 0, 20, 30))
    path = save(tmp_path, im, "p.png", "PNG", transparency=0)
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGBA"
    assert out.getpixel((30, 10))[3] == 0  # type: ignore[index]
    assert out.getpixel((10, 10)) == (*RED, 255)
    assert read_metadata(path, max_pixels=CAP).mode == "P"
    assert open_webp(make_thumbnail(out)).mode == "RGBA"


def test_gif_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    im.paste(1, (0, 0, 20, 30))
    path = save(tmp_path, im, "t.gif", "GIF", transparency=0)
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGBA"
    assert out.getpixel((30, 10))[3] == 0  # type: ignore[index]


def test_la_becomes_rgba(tmp_path: Path) -> None:
    im = Image.merge("LA", (Image.new("L", (20, 20), 128), Image.new("L", (20, 20), 77)))
    path = save(tmp_path, im, "la.png", "PNG")
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 5)) == (128, 128, 128, 77)
    assert read_metadata(path, max_pixels=CAP).mode == "LA"


def test_rgba_keeps_alpha_in_renditions(tmp_path: Path) -> None:
    im = Image.new("RGBA", (300, 300), (*RED, 255))
    im.paste((0, 0, 0, 0), (0, 0, 300, 150))
    path = save(tmp_path, im, "rgba.png", "PNG")
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGBA"
    thumb = open_webp(make_thumbnail(out))
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((100, 10))[3] == 0  # type: ignore[index]
    assert thumb.getpixel((100, 190))[3] == 255  # type: ignore[index]


def test_animated_gif_first_frame_and_frame_count(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (60, 40), colour) for colour in (RED, BLUE, (20, 230, 20))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode(path, max_pixels=CAP)
    assert out.size == (60, 40)
    assert close_to(out.getpixel((30, 20)), RED)  # type: ignore[arg-type]
    metadata = read_metadata(path, max_pixels=CAP)
    assert metadata.frames == 3
    assert metadata.format == "GIF"


def test_one_bit_image(tmp_path: Path) -> None:
    im = Image.new("1", (100, 60), 0)
    im.paste(1, (0, 0, 50, 60))
    path = save(tmp_path, im, "fax.tif", "TIFF", compression="group4")
    out = decode(path, max_pixels=CAP)
    assert out.mode == "RGB"
    assert out.getpixel((10, 10)) == (255, 255, 255)
    assert out.getpixel((90, 10)) == (0, 0, 0)
    assert read_metadata(path, max_pixels=CAP).mode == "1"


def test_mpo_is_reported_as_mpo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.jpg"
    photo((64, 48)).save(path, "MPO", save_all=True, append_images=[photo((64, 48))])
    assert probe(path, max_pixels=CAP) == imaging.Probe("MPO", 64, 48, "image/jpeg")
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.format, metadata.frames) == ("MPO", 2)
    assert decode(path, max_pixels=CAP).size == (64, 48)


@pytest.mark.parametrize(("fmt", "name"), [("HEIF", "a.heic"), ("AVIF", "a.avif")])
def test_heif_and_avif(tmp_path: Path, fmt: str, name: str) -> None:
    # EXIF as bytes, as cameras write it (pillow-heif handles an Exif object differently).
    exif = camera_exif(orientation=6).tobytes()
    path = save(tmp_path, photo((64, 48)), name, fmt, exif=exif)
    assert probe(path, max_pixels=CAP).format == fmt
    out = decode(path, max_pixels=CAP)
    assert out.size == (48, 64)
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.format, metadata.width, metadata.height) == (fmt, 48, 64)
    assert metadata.camera_make == "TestCam"


# ----------------------------------------------------------------------------------- renditions


def test_tiny_image_thumbnail_is_enlarged_and_preview_is_not(tmp_path: Path) -> None:
    path = save(tmp_path, photo((50, 30)), "tiny.png", "PNG")
    out = decode(path, max_pixels=CAP)
    thumb = open_webp(make_thumbnail(out))
    assert thumb.size == (200, 200)
    preview = open_webp(make_preview(out))
    assert preview.size == (50, 30)


def test_large_jpeg_is_drafted_but_preview_is_exactly_800_wide(tmp_path: Path) -> None:
    path = save(tmp_path, photo((3000, 2000)), "big.jpg", "JPEG", quality=80)
    out = decode(path, max_pixels=CAP)
    # libjpeg decoded at a reduced scale, yet still wide enough for the preview.
    assert 800 <= out.width < 3000
    preview = open_webp(make_preview(out))
    assert preview.width == 800
    assert preview.height in (533, 534)
    assert open_webp(make_thumbnail(out)).size == (200, 200)
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.width, metadata.height) == (3000, 2000)


def test_large_rotated_jpeg_preview_is_800_wide(tmp_path: Path) -> None:
    exif = camera_exif(orientation=6)
    path = save(tmp_path, photo((3000, 2000)), "big.jpg", "JPEG", quality=80, exif=exif)
    out = decode(path, max_pixels=CAP)
    assert out.width >= 800
    assert open_webp(make_preview(out)).size == (800, 1200)
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.width, metadata.height) == (2000, 3000)


def test_thumbnail_is_a_centred_cover_crop() -> None:
    im = Image.new("RGB", (600, 200), RED)
    im.paste(BLUE, (200, 0, 400, 200))  # the middle third
    thumb = open_webp(make_thumbnail(im))
    assert thumb.size == (200, 200)
    assert close_to(thumb.getpixel((10, 100)), BLUE)  # type: ignore[arg-type]
    assert close_to(thumb.getpixel((190, 100)), BLUE)  # type: ignore[arg-type]


def test_preview_of_an_extreme_strip_fits_webp_limits() -> None:
    strip = Image.new("RGB", (20, 17_000), RED)
    preview = open_webp(make_preview(strip))
    assert preview.height == 16_383
    assert preview.width == 19


def test_derived_webp_carries_no_exif_and_gps(tmp_path: Path) -> None:
    exif = camera_exif(gps=True)
    path = save(tmp_path, photo((900, 600)), "gps.jpg", "JPEG", exif=exif)
    metadata = read_metadata(path, max_pixels=CAP)
    assert metadata.has_gps is True
    out = decode(path, max_pixels=CAP)
    assert "exif" not in out.info
    for data in (make_thumbnail(out), make_preview(out)):
        assert_no_metadata(data)
    # Even an image handed in with EXIF in its info does not leak it.
    tagged = photo((300, 300))
    tagged.info["exif"] = exif.tobytes()
    assert_no_metadata(make_thumbnail(tagged))
    assert_no_metadata(make_preview(tagged))


def test_rgb_icc_profile_is_kept_and_cmyk_profile_is_not(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save(tmp_path, photo((64, 64)), "icc.jpg", "JPEG", icc_profile=srgb)
    out = decode(path, max_pixels=CAP)
    assert open_webp(make_thumbnail(out)).info.get("icc_profile") == srgb
    not_rgb = bytearray(srgb)
    not_rgb[16:20] = b"CMYK"
    tagged = photo((64, 64))
    tagged.info["icc_profile"] = bytes(not_rgb)
    assert not open_webp(make_thumbnail(tagged)).info.get("icc_profile")


# ------------------------------------------------------------------------------------- metadata


def test_metadata_reads_camera_facts(tmp_path: Path) -> None:
    path = save(tmp_path, photo((64, 48)), "a.jpg", "JPEG", exif=camera_exif(gps=True))
    metadata = read_metadata(path, max_pixels=CAP)
    assert metadata == imaging.Metadata(
        width=64,
        height=48,
        format="JPEG",
        mode="RGB",
        frames=1,
        camera_make="TestCam",
        camera_model="Model 1",
        taken_at="2019-12-31T23:59:58",
        has_gps=True,
    )
    assert metadata.as_dict()["taken_at"] == "2019-12-31T23:59:58"
    assert metadata.as_dict()["has_gps"] is True


def test_taken_at_falls_back_to_datetime_and_ignores_junk(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2020:01:02 03:04:05"
    path = save(tmp_path, photo((16, 16)), "a.jpg", "JPEG", exif=exif)
    assert read_metadata(path, max_pixels=CAP).taken_at == "2020-01-02T03:04:05"
    exif[ExifTags.Base.DateTime] = "    :  :     :  :  "
    path = save(tmp_path, photo((16, 16)), "b.jpg", "JPEG", exif=exif)
    assert read_metadata(path, max_pixels=CAP).taken_at is None


def test_no_exif(tmp_path: Path) -> None:
    path = save(tmp_path, photo((16, 16)), "plain.png", "PNG")
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.camera_make, metadata.camera_model, metadata.taken_at) == (None, None, None)
    assert metadata.has_gps is False


def test_corrupt_exif_does_not_fail(tmp_path: Path) -> None:
    # A TIFF header whose first IFD points far past the end of the data.
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00\x01\x00"
    path = save(tmp_path, photo((300, 200)), "bad_exif.jpg", "JPEG", exif=exif)
    out = decode(path, max_pixels=CAP)
    assert out.size == (300, 200)
    metadata = read_metadata(path, max_pixels=CAP)
    assert (metadata.width, metadata.height, metadata.has_gps) == (300, 200, False)


def test_process_makes_all_renditions(tmp_path: Path) -> None:
    path = save(tmp_path, photo((1000, 500)), "a.webp", "WEBP")
    renditions = imaging.process(path, max_pixels=CAP)
    assert open_webp(renditions.thumbnail).size == (200, 200)
    assert open_webp(renditions.preview).size == (800, 400)
    assert renditions.metadata.format == "WEBP"


def _psnr(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    stat = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))
    mse = sum(stat.sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def _scene(width: int, height: int) -> Image.Image:
    """A picture with structure in every corner, so a wrong turn or crop shows."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    img.paste((200, 30, 30), (0, 0, width // 3, height // 4))
    img.paste((30, 200, 30), (width // 2, height // 2, width, height))
    img.paste((30, 30, 200), (0, height * 3 // 4, width // 5, height))
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_renditions_turned_last_match_those_of_the_upright_picture(
        tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    _scene(2400, 1600).save(path, "JPEG", quality=92, exif=exif.tobytes())
    picture = imaging.decode_picture(path, max_pixels=CAP)
    upright = imaging.decode(path, max_pixels=CAP)
    assert picture.size == upright.size
    fast, slow = imaging.preview_image(picture), imaging.preview_image(upright)
    assert fast.size == slow.size and fast.width == 800
    assert _psnr(fast, slow) > 40
    fast_thumb = imaging.thumbnail_image(picture, fast)
    assert _psnr(fast_thumb, imaging.thumbnail_image(upright)) > 35


def test_a_panorama_thumbnail_is_cut_from_the_picture_not_its_low_preview(
        tmp_path: Path) -> None:
    path = tmp_path / "pano.jpg"
    _scene(4000, 400).save(path, "JPEG", quality=92)
    picture = imaging.decode_picture(path, max_pixels=CAP)
    preview = imaging.preview_image(picture)
    assert preview.size == (800, 80)
    assert imaging.thumbnail_image(picture, preview).tobytes() == \
        imaging.thumbnail_image(picture).tobytes()
    # A preview with pixels to spare is used (and gives the same picture, near enough).
    photo = tmp_path / "photo.jpg"
    _scene(3000, 2000).save(photo, "JPEG", quality=92)
    big = imaging.decode_picture(photo, max_pixels=CAP)
    assert _psnr(imaging.thumbnail_image(big, imaging.preview_image(big)),
                 imaging.thumbnail_image(big)) > 35


@pytest.mark.parametrize("method", [0, 2, 6])
def test_every_webp_method_makes_the_same_renditions(tmp_path: Path, method: int) -> None:
    path = tmp_path / "m.jpg"
    _scene(1600, 1200).save(path, "JPEG", quality=90)
    out = imaging.process(path, max_pixels=CAP, method=method)
    assert open_webp(out.thumbnail).size == (200, 200)
    assert open_webp(out.preview).size == (800, 600)


# ------------------------------------------------------------------------ decode memory budget


def _gray16(tmp_path: Path, size: tuple[int, int]) -> Path:
    """A 16-bit grey PNG (ramp over the full range): tiny on disk, 2 bytes a pixel decoded."""
    ramp = Image.linear_gradient("L").resize(size)
    return save(tmp_path, ramp.point(lambda v: v * 257, mode="I").convert("I;16"), "g16.png",
                "PNG")


def test_a_16bit_png_is_converted_without_full_size_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The 428 KB 16-bit PNG took ~420 MB while it decoded: I;16 -> I -> scaled I -> L
    # -> RGB, each a full-size copy (ten bytes a pixel at once). Converted by strips, no step
    # but the loaded picture and the result is ever the picture's size.
    path = _gray16(tmp_path, (1200, 900))
    biggest: list[int] = []
    for name in ("convert", "point"):
        original = getattr(Image.Image, name)

        def spy(self: Image.Image, *args: object, _original: object = original,
                **kwargs: object) -> Image.Image:
            biggest.append(self.width * self.height)
            return _original(self, *args, **kwargs)  # type: ignore[operator, no-any-return]

        monkeypatch.setattr(Image.Image, name, spy)
    picture = imaging.decode_picture(path, max_pixels=CAP)
    monkeypatch.undo()
    assert picture.pixels.size == (1200, 900) and picture.pixels.mode == "RGB"
    assert 100 < mean_brightness(picture.pixels) < 156
    assert biggest and max(biggest) <= decoding._strip_rows(1200, 1) * 1200 < 1200 * 900


def test_over_the_decode_budget_the_picture_is_shrunk_as_it_is_converted(
        tmp_path: Path) -> None:
    path = _gray16(tmp_path, (1800, 1700))
    full = imaging.decode_cost("I;16", (1800, 1700), alpha=False)
    halved = imaging.decode_cost("I;16", (1800, 1700), alpha=False, factor=2)
    assert halved < full
    picture = imaging.decode_picture(path, max_pixels=CAP, max_decode_bytes=halved)
    assert picture.pixels.size == (900, 850)  # still more than the 800 px preview needs
    assert 100 < mean_brightness(picture.pixels) < 156
    out = imaging.process(path, max_pixels=CAP, max_decode_bytes=halved)
    assert open_webp(out.preview).size == (800, 756)
    assert open_webp(out.thumbnail).size == (200, 200)
    # Within the budget nothing changes.
    assert imaging.decode_picture(path, max_pixels=CAP,
                                  max_decode_bytes=full).pixels.size == (1800, 1700)


def test_past_the_decode_budget_the_image_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _gray16(tmp_path, (1800, 1700))
    budget = 2 * 1024 * 1024  # less than even the loaded pixels (6 MB)
    with pytest.raises(ImageTooLarge, match=r"about \d+ MB of memory; the limit is 2 MB"):
        imaging.decode_picture(path, max_pixels=CAP, max_decode_bytes=budget)
    with pytest.raises(ImageTooLarge):  # the upload's header check refuses it already (413)
        probe(path, max_pixels=CAP, max_decode_bytes=budget)
    assert probe(path, max_pixels=CAP, max_decode_bytes=64 * 1024 * 1024).width == 1800


def test_the_decode_cost_counts_what_pillow_holds() -> None:
    mb = 1024 * 1024
    # The file: 6480x6480 16-bit grey. Loaded 80 MB; the old pipeline peaked at
    # ~420 MB; now the loaded picture, the RGB result and a strip, within the 256 MB default.
    assert 200 * mb < imaging.decode_cost("I;16", (6480, 6480), alpha=False) <= 256 * mb
    # A 50 MP RGBA picture: resizing it for the renditions would pass the budget ...
    assert imaging.decode_cost("RGBA", (7071, 7071), alpha=True) > 256 * mb
    # ... shrunk by 2 as it is loaded, it fits.
    assert imaging.decode_cost("RGBA", (7071, 7071), alpha=True, factor=2) <= 256 * mb
    # JPEGs are costed after draft(), which decodes them at 1/8 already.
    assert imaging.decode_cost("RGB", (756, 504), alpha=False) < 3 * mb


@pytest.mark.parametrize("make", [
    lambda: Image.linear_gradient("L").resize((70, 45)).point(lambda v: v * 257, mode="I")
    .convert("I;16"),
    lambda: Image.linear_gradient("L").resize((70, 45)).point(lambda v: v * 1000 - 9, mode="I"),
    lambda: Image.linear_gradient("L").resize((70, 45)).convert("F").point(lambda v: v / 300),
    lambda: Image.linear_gradient("L").resize((70, 45)).convert("P"),
    lambda: Image.merge("LA", (Image.linear_gradient("L").resize((70, 45)),
                               Image.linear_gradient("L").resize((70, 45)).rotate(90))),
    lambda: Image.linear_gradient("L").resize((70, 45)).convert("1"),
    lambda: Image.linear_gradient("L").resize((70, 45)).convert("CMYK"),
    lambda: Image.linear_gradient("L").resize((70, 45)).convert("RGBA"),
])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_strips_convert_and_shrink_exactly_as_the_whole_picture(
        monkeypatch: pytest.MonkeyPatch, make: object, factor: int) -> None:
    im = make()  # type: ignore[operator]
    whole = colour.to_rgb_or_rgba(im)
    if factor > 1:
        whole = decoding._reduce(whole, factor)
    monkeypatch.setattr(decoding, "_STRIP_PIXELS", 70 * 4)  # 4 rows: many strips
    strips = decoding._rendition_pixels(im, factor)
    assert (strips.mode, strips.size) == (whole.mode, whole.size)
    assert strips.tobytes() == whole.tobytes()
