"""Every file of the shared corpus, uploaded over HTTP, gets an acceptable outcome.

A file that fails does so cleanly: on its first attempt, by validation, never because it
took a worker process down (no WorkerLost, no retry), and no corpus file kills a worker
process (the stack's Dramatiq worker pids are the same before and after the run).

The corpus lives beside the project (``../shared/corpus`` or DARKROOM_CORPUS) and is never
copied in (tests/corpus.py): without it the corpus tests are skipped, with the reason shown
by ``pytest -ra``; under CI (``CI`` set) a missing corpus fails the run instead, which the
last test here proves on a pytest of its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from server.core.tasks import IMAGE_PROCESS
from tests.conftest import Databases, Stack
from tests.corpus import CORPUS_ENV, ROOT, corpus_entries, find_corpus, missing_reason
from tests.factories import FINAL, auth, new_token, upload, wait_final

CORPUS = find_corpus()
ENTRIES = corpus_entries(CORPUS)
pytestmark = pytest.mark.integration
needs_corpus = pytest.mark.skipif(CORPUS is None, reason=missing_reason())
# Uploads in flight at once: enough to keep two worker threads busy, gentle on 2 cores.
_CONCURRENCY = 4


def _entry_id(entry: dict[str, Any]) -> str:
    return f"{entry['file']}:{entry['upload_filename'][:40]}"


# Good photos whose EXIF text is odd (a camera make of one byte 0x8c, a broken block):
# that text is stored, so they run on both databases like the hostile files.
_ODD_TEXT = frozenset({"good/jpeg_corrupt_exif.jpg", "good/tiff_bilevel_g4_2548x3296.tif"})


def _sqlite_only(entry: dict[str, Any]) -> bool:
    """The good photos run on SQLite alone: a ready image stores the same rows on both
    databases (test_live_pipeline checks them on both). The hostile files (and
    _ODD_TEXT) run on both: their names, EXIF text and decoder messages end up in columns
    that PostgreSQL holds to stricter rules (no NUL, lengths)."""
    return str(entry["file"]).startswith("good/") and entry["file"] not in _ODD_TEXT


# Without a corpus, one placeholder that needs_corpus skips (with its reason).
PARAMS = [pytest.param(e, id=_entry_id(e),
                       marks=[pytest.mark.one_database] if _sqlite_only(e) else [])
          for e in ENTRIES] or [pytest.param(None, id="none")]


@dataclass
class Outcome:
    kind: str  # ready | failed | reject | cancelled | error
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] | None = None
    thumbnail: tuple[int, int] | None = None
    preview: tuple[int, int] | None = None
    # A failed job's GET /api/jobs/{id}/timeline (traceback, every stored change) and its
    # GET /api/dlq item.
    timeline: dict[str, Any] | None = None
    dead_letter: dict[str, Any] | None = None


@dataclass
class CorpusRun:
    outcomes: dict[str, Outcome]
    workers_before: list[int]
    workers_after: list[int]


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
    if job["state"] == "failed":
        timeline = await http.get(f"/api/jobs/{job['id']}/timeline", headers=auth(token))
        assert timeline.status_code == 200, timeline.text
        return Outcome("failed", 202, body, job, timeline=timeline.json())
    if job["state"] != "completed":
        return Outcome(job["state"], 202, body, job)
    image_id = body["image"]["id"]
    sizes = []
    for kind in ("thumbnail", "preview"):
        file = await http.get(f"/api/images/{image_id}/{kind}", headers=auth(token))
        assert file.status_code == 200
        sizes.append(Image.open(io.BytesIO(file.content)).size)
    return Outcome("ready", 202, body, job, sizes[0], sizes[1])


async def _dead_letters(http: httpx.AsyncClient, admin: str) -> dict[str, dict[str, Any]]:
    """Every image job's GET /api/dlq item, by job id (all pages)."""
    found: dict[str, dict[str, Any]] = {}
    before: str | None = None
    while True:
        params = {"type": IMAGE_PROCESS.name, "limit": "200",
                  **({"before": before} if before else {})}
        page = await http.get("/api/dlq", params=params, headers=auth(admin))
        assert page.status_code == 200, page.text
        for item in page.json()["items"]:
            found[item["job"]["id"]] = item
        before = page.json()["next_before"]
        if before is None:
            return found


def _worker_pids(stack: Stack, timeout: float = 30.0) -> list[int]:
    """The stack's Dramatiq worker processes, once they are up."""
    deadline = time.monotonic() + timeout
    while not (pids := sorted(stack.worker_processes())):
        assert time.monotonic() < deadline, f"no Dramatiq worker process\n{stack.log_tail()}"
        time.sleep(0.2)
    return pids


@pytest.fixture(scope="module")
async def corpus_run(stack: Stack, databases: Databases) -> CorpusRun:
    entries = [e for e in ENTRIES if databases.backend == "sqlite" or not _sqlite_only(e)]
    before = _worker_pids(stack)
    gate = asyncio.Semaphore(_CONCURRENCY)
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        async def one(entry: dict[str, Any]) -> tuple[str, Outcome]:
            async with gate:
                return _entry_id(entry), await _run_entry(http, entry)

        outcomes = dict(await asyncio.gather(*(one(e) for e in entries)))
        dead = await _dead_letters(http, stack.env["ADMIN_TOKEN"])
    for outcome in outcomes.values():
        if outcome.kind == "failed" and outcome.job is not None:
            outcome.dead_letter = dead.get(outcome.job["id"])
    return CorpusRun(outcomes, before, sorted(stack.worker_processes()))


@needs_corpus
@pytest.mark.timeout(600)
@pytest.mark.parametrize("entry", PARAMS)
def test_corpus_entry_gets_an_acceptable_outcome(entry: dict[str, Any],
                                                 corpus_run: CorpusRun) -> None:
    outcome = corpus_run.outcomes[_entry_id(entry)]
    assert outcome.kind in entry["acceptable"], (outcome.kind, outcome.status, outcome.body,
                                                outcome.job)
    if outcome.kind == "reject":
        assert outcome.status in (400, 413, 415, 422)
        assert set(outcome.body["error"]) == {"code", "message"}
    if outcome.kind == "failed":
        job, timeline, dead = outcome.job, outcome.timeline, outcome.dead_letter
        assert job is not None and timeline is not None
        assert job["error"]["message"]
        # Refused by validation on the first attempt: not retried, not redelivered after a
        # worker process died (each delivery counts as an attempt), not given up on as lost.
        assert job["attempt"] == 1, job
        names = [event["name"] for event in timeline["events"]]
        assert names.count("job:active") == 1 and "job:retrying" not in names, names
        assert dead is not None, f"failed job {job['id']} is not in the dead-letter queue"
        assert dead["attempts"] == 1 and dead["error"]["type"] == job["error"]["type"], dead
        for shown in (job, timeline, dead):
            assert "WorkerLost" not in json.dumps(shown), shown
    if outcome.kind != "ready":
        return
    assert outcome.job is not None
    # Done in one go: a first attempt lost to a worker that died would show here.
    assert outcome.job["attempt"] == 1, outcome.job
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


@needs_corpus
@pytest.mark.timeout(600)
def test_no_corpus_file_kills_a_worker_process(corpus_run: CorpusRun) -> None:
    """The supervisor would restart a dead worker unseen; its pid would not come back."""
    assert corpus_run.workers_before, "no worker process to watch"
    assert corpus_run.workers_after == corpus_run.workers_before, (
        "Dramatiq worker processes died (or were restarted) during the corpus run: "
        f"{corpus_run.workers_before} before, {corpus_run.workers_after} after")


CORPUS_MODULES = ("tests/workers/test_imaging_corpus.py",
                  "tests/integration/test_corpus_uploads.py")


def _pytest(corpus: Path, *args: str, ci: bool) -> str:
    """A pytest of its own on both corpus modules, looking for the corpus in ``corpus``;
    its exit code and output."""
    # No TEST_* either: with TEST_DATABASE_URL every stack test would be there twice. Nor
    # COVERAGE_*: this pytest only collects and skips, and traced it took twice as long.
    env = {k: v for k, v in os.environ.items()
           if k != "CI" and not k.startswith(("PYTEST_", "TEST_", "COVERAGE_"))}
    env[CORPUS_ENV] = str(corpus)
    if ci:
        env["CI"] = "true"
    # Without the plugins these modules do not use, it starts in half the time.
    quick = [arg for name in ("cacheprovider", "hypothesispytest", "schemathesis", "xdist")
             for arg in ("-p", f"no:{name}")]
    done = subprocess.run([sys.executable, "-m", "pytest", *CORPUS_MODULES, *quick, "-q",
                           "-ra", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(240)
def test_a_missing_corpus_fails_under_ci_and_is_skipped_visibly_otherwise(
        tmp_path: Path) -> None:
    empty = tmp_path / "no-corpus"
    empty.mkdir()
    reason = re.escape(f"image corpus not found: no manifest.json in {empty} "
                       f"(set {CORPUS_ENV} to the corpus directory")

    # CI: collecting is enough, that is where a missing corpus shows. Both modules error.
    out = _pytest(empty, "--collect-only", ci=True)
    assert out.startswith("exit 2\n"), out  # pytest's "interrupted": errors in collection
    for module in CORPUS_MODULES:
        assert re.search(rf"ERROR {module} - Failed: {reason}.*; CI is set, so a missing "
                         "corpus fails the run", out), out

    # Without CI the corpus tests are skipped, and -ra says why (the path looked at).
    # This test is deselected: it would run itself again.
    out = _pytest(empty, "-x", "-k", "not missing_corpus", ci=False)
    assert out.startswith("exit 0\n"), out
    assert "3 skipped, 1 deselected" in out, out
    # The worker module as a whole; here the entries' test and the worker-pid test.
    for module, count in zip(CORPUS_MODULES, (1, 2), strict=True):
        lines = re.findall(rf"^SKIPPED \[1\] {module}:\d+: {reason}", out, re.MULTILINE)
        assert len(lines) == count, out
