"""The image pipeline against the shared corpus of real files, each with its expected outcome.

Runs every manifest entry the way the service does: sniff the first bytes and probe the header
at upload ("reject" on failure), then decode, render and read metadata in the worker ("failed"
on an ImageError, "ready" otherwise). Any other exception escaping is a bug.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import EpsImagePlugin, Image

from workers import imaging

# Pillow reports corrupt metadata ("Corrupt EXIF data", "Tag data larger than file") as a
# UserWarning and carries on; in the service such a warning is only logged, so it must not
# turn into an error here either.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("DARKROOM_CORPUS") or REPO.parent / "shared" / "corpus")
MANIFEST = CORPUS / "manifest.json"
# The service's upload limit; the largest good file in the corpus is 24 MP.
MAX_PIXELS = 50_000_000

if not MANIFEST.is_file():
    pytest.skip(f"no image corpus at {CORPUS}", allow_module_level=True)

ENTRIES: list[dict[str, Any]] = json.loads(MANIFEST.read_text(encoding="utf-8"))["entries"]


def entry_id(entry: dict[str, Any]) -> str:
    # Some upload names are hostile or 400 bytes long; the start is enough to tell them apart.
    return f"{entry['file']} as {entry['upload_filename'][:40]}"


@dataclass
class Outcome:
    status: str  # "reject", "failed" or "ready"
    renditions: imaging.Renditions | None = None
    error: imaging.ImageError | None = None


def run_pipeline(path: Path) -> Outcome:
    """Upload checks, then the worker's steps, as the service runs them."""
    with path.open("rb") as fp:
        head = fp.read(imaging.SNIFF_BYTES)
    if imaging.sniff(head) is None:
        return Outcome("reject")
    try:
        imaging.probe(path, max_pixels=MAX_PIXELS)
    except imaging.ImageError as exc:
        return Outcome("reject", error=exc)
    try:
        picture = imaging.decode(path, max_pixels=MAX_PIXELS)
        renditions = imaging.Renditions(
            thumbnail=imaging.make_thumbnail(picture),
            preview=imaging.make_preview(picture),
            metadata=imaging.read_metadata(path, max_pixels=MAX_PIXELS),
        )
    except imaging.ImageError as exc:
        return Outcome("failed", error=exc)
    return Outcome("ready", renditions=renditions)


@pytest.fixture(autouse=True)
def no_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    """The EPS entry must be refused before Pillow could hand it to Ghostscript."""

    def ghostscript(*args: object, **kwargs: object) -> None:
        pytest.fail("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)


def iso(exif_datetime: str) -> str:
    return datetime.strptime(exif_datetime, "%Y:%m:%d %H:%M:%S").isoformat()


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_corpus_entry(entry: dict[str, Any]) -> None:
    outcome = run_pipeline(CORPUS / entry["file"])
    assert outcome.status in entry["acceptable"], (outcome.status, outcome.error, entry["why"])

    if outcome.error is not None:
        message = str(outcome.error)
        assert message
        assert str(CORPUS) not in message
        assert "Traceback" not in message
    if outcome.status != "ready":
        return

    renditions = outcome.renditions
    assert renditions is not None
    with Image.open(io.BytesIO(renditions.thumbnail)) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (200, 200)
        assert "exif" not in thumbnail.info
    with Image.open(io.BytesIO(renditions.preview)) as preview:
        assert preview.format == "WEBP"
        expected_w, expected_h = entry["preview_size"]
        assert abs(preview.width - expected_w) <= 1, preview.size
        assert abs(preview.height - expected_h) <= 1, preview.size
        assert "exif" not in preview.info

    metadata = renditions.metadata
    # The manifest's format is Pillow's name, so a multi-picture JPEG is "MPO".
    assert (metadata.width, metadata.height, metadata.format) == (
        entry["width"],
        entry["height"],
        entry["format"],
    )
    if entry.get("mode") is not None:
        assert metadata.mode == entry["mode"]
    if entry.get("frames") is not None:
        assert metadata.frames == entry["frames"]
    exif = entry.get("exif")
    if exif:
        assert metadata.camera_make == exif["make"]
        assert metadata.camera_model == exif["model"]
        assert metadata.has_gps is exif["has_gps"]
        if exif["datetime_original"] is not None:
            assert metadata.taken_at == iso(exif["datetime_original"])
