"""Every file of the shared corpus, uploaded over HTTP, gets an acceptable outcome.

The corpus lives beside the project (``../shared/corpus`` or DARKROOM_CORPUS) and is
never copied in; without it this module is skipped.
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Stack, corpus_dir
from tests.factories import FINAL, auth, new_token, upload, wait_final

CORPUS = corpus_dir()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CORPUS is None, reason="image corpus not found beside the project"),
]
ENTRIES: list[dict[str, Any]] = (
    json.loads((CORPUS / "manifest.json").read_text())["entries"] if CORPUS else []
)
# Uploads in flight at once: enough to keep two worker threads busy, gentle on 2 cores.
_CONCURRENCY = 4


def _entry_id(entry: dict[str, Any]) -> str:
    return f"{entry['file']}:{entry['upload_filename'][:40]}"


@dataclass
class Outcome:
    kind: str  # ready | failed | reject | cancelled | error
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] | None = None
    thumbnail: tuple[int, int] | None = None
    preview: tuple[int, int] | None = None


async def _run_entry(http: httpx.AsyncClient, entry: dict[str, Any]) -> Outcome:
    assert CORPUS is not None
    token = await new_token(http)  # a user each, so identical bytes are not duplicates
    data = (CORPUS / entry["file"]).read_bytes()
    response = await upload(http, token, data, filename=entry["upload_filename"],
                            content_type=entry["upload_content_type"])
    body = response.json()
    if 400 <= response.status_code < 500:
        return Outcome("reject", response.status_code, body)
    if response.status_code != 202:
        return Outcome("error", response.status_code, body)
    job = await wait_final(http, token, body["job"]["id"], timeout=120)
    assert job["state"] in FINAL
    if job["state"] != "completed":
        return Outcome(job["state"], 202, body, job)
    image_id = body["image"]["id"]
    sizes = []
    for kind in ("thumbnail", "preview"):
        file = await http.get(f"/api/images/{image_id}/{kind}", headers=auth(token))
        assert file.status_code == 200
        sizes.append(Image.open(io.BytesIO(file.content)).size)
    return Outcome("ready", 202, body, job, sizes[0], sizes[1])


@pytest.fixture(scope="module")
async def outcomes(stack: Stack) -> dict[str, Outcome]:
    gate = asyncio.Semaphore(_CONCURRENCY)
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        async def one(entry: dict[str, Any]) -> tuple[str, Outcome]:
            async with gate:
                return _entry_id(entry), await _run_entry(http, entry)

        return dict(await asyncio.gather(*(one(e) for e in ENTRIES)))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("entry", ENTRIES, ids=[_entry_id(e) for e in ENTRIES])
def test_corpus_entry_gets_an_acceptable_outcome(entry: dict[str, Any],
                                                 outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[_entry_id(entry)]
    assert outcome.kind in entry["acceptable"], (outcome.kind, outcome.status, outcome.body,
                                                outcome.job)
    if outcome.kind == "reject":
        assert outcome.status in (400, 413, 415, 422)
        assert set(outcome.body["error"]) == {"code", "message"}
    if outcome.kind == "failed":
        assert outcome.job and outcome.job["error"]["message"]
    if outcome.kind != "ready":
        return
    assert outcome.job is not None
    image = outcome.job["result"]["image"]
    assert (image["width"], image["height"]) == (entry["width"], entry["height"])
    assert image["format"] == entry["format"]
    assert outcome.thumbnail == (200, 200)
    expected_w, expected_h = entry["preview_size"]
    assert outcome.preview is not None
    assert outcome.preview[0] == expected_w
    assert abs(outcome.preview[1] - expected_h) <= 1
    exif = entry.get("exif") or {}
    meta = image["metadata"]
    if "has_gps" in exif:
        assert meta["has_gps"] == exif["has_gps"]
    if exif.get("make"):
        assert meta["camera_make"] == exif["make"].strip()
    # The stored name is display-safe: never a path.
    assert "/" not in image["filename"] and "\\" not in image["filename"]
