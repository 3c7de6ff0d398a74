"""The image pipeline against the shared corpus of real files, each with its expected outcome.

Every manifest entry goes through the service's own code, in this process:

- upload: the upload's header check (``server.services.submit.probe_and_adopt``: empty file,
  sniffed type, header, pixel cap) refuses it ("reject"), with the deployment's limits;
- worker: the job is stored as an upload stores it, its attempt begins as JobLifecycle
  begins it, and ``workers.actors.run_job`` runs the registered ``image.process`` type, whose
  ``run`` is ``workers.tasks.image.process_image``, the very function the worker's actor
  runs. An ImageError there, turned into a PermanentFailure (no retry), is "failed"; a
  clean return with both renditions and the metadata stored is "ready".

Any other exception escaping is a bug. The limits come from ``Settings.from_env``, so a
change of the service's default pixel cap or WebP effort is what is tested here too. The
corpus lives beside the project (see tests/corpus.py); missing, this module is skipped, or
fails the run under CI.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import EpsImagePlugin, Image

from server.core import imaging
from server.core.errors import ApiError, Problem
from server.core.jobs import queue_for
from server.core.tasks import IMAGE_PROCESS
from server.data import store
from server.data.models import new_id
from server.infra.broker import build_broker
from server.infra.settings import Settings
from server.services.submit import probe_and_adopt
from server.web.http.error_handlers import status_of
from server.web.http.uploads import ReceivedFile
from tests.corpus import corpus_entries, find_corpus, missing_reason
from workers.actors import run_job
from workers.context import WorkerContext
from workers.faults import PermanentFailure
from workers.middleware.lifecycle import complete
from workers.tasks import registry as tasks
from workers.tasks.image import process_image
from workers.tasks.registry import Completed

# Pillow reports corrupt metadata ("Corrupt EXIF data", "Tag data larger than file") as a
# UserWarning and carries on; in the service such a warning is only logged, so it must not
# turn into an error here either. Integration: the worker's code writes to a real database
# and publishes on a real Redis.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")]

CORPUS = find_corpus()
if CORPUS is None:
    pytest.skip(missing_reason(), allow_module_level=True)
ENTRIES = corpus_entries(CORPUS)


def entry_id(entry: dict[str, Any]) -> str:
    # Some upload names are hostile or 400 bytes long; the start is enough to tell them apart.
    return f"{entry['file']} as {entry['upload_filename'][:40]}"


@dataclass
class Worker:
    """A worker's context as ``workers.app`` builds it (own SQLite, the test Redis)."""

    settings: Settings
    ctx: WorkerContext
    task: tasks.TaskType


@pytest.fixture(scope="module")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    prefix = f"corpus{secrets.token_hex(4)}"
    # Only where things are: every limit is the service's default, read by Settings itself.
    settings = Settings.from_env({"DATA_DIR": str(tmp_path_factory.mktemp("corpus-worker")),
                                  "REDIS_URL": redis_url, "REDIS_PREFIX": prefix})
    broker = build_broker(settings, maintenance=False)
    ctx = WorkerContext.from_settings(settings, broker)
    ctx.db.migrate()
    ctx.storage.ensure_dirs()
    task = tasks.load(include_test_tasks=False)[IMAGE_PROCESS.name]
    # What the image actor runs (declare_actors: actor → run_job → task.run).
    assert task.run is process_image
    try:
        yield Worker(settings, ctx, task)
    finally:
        ctx.db.dispose()
        for key in ctx.redis.scan_iter(f"{prefix}*"):
            ctx.redis.delete(key)
        ctx.redis.close()
        broker.close()


@dataclass
class Outcome:
    status: str  # "reject", "failed" or "ready"
    error: Exception | None = None
    image: Any = None  # the stored image row of a "ready" one
    thumbnail: bytes | None = None
    preview: bytes | None = None


async def run_pipeline(worker: Worker, entry: dict[str, Any]) -> Outcome:
    """The upload's checks, then one worker attempt, both through the service's own code."""
    assert CORPUS is not None
    settings, ctx = worker.settings, worker.ctx
    source = CORPUS / entry["file"]
    data = source.read_bytes()
    if len(data) > settings.max_upload_bytes:  # the upload stream's cap (server.web.http.uploads)
        return Outcome("reject", ApiError(Problem.TOO_LARGE, "too_large", "over MAX_UPLOAD_MB"))
    temp = ctx.storage.new_temp()
    shutil.copyfile(source, temp)
    upload = ReceivedFile(field="file", filename=Path(entry["file"]).name,
                          declared_type=entry["upload_content_type"], path=temp,
                          size=len(data), sha256=hashlib.sha256(data).hexdigest())
    image_id = new_id()
    try:
        probe = probe_and_adopt(ctx.storage, upload, image_id, settings.max_image_pixels,
                                settings.max_decode_bytes)
    except ApiError as exc:
        temp.unlink()
        return Outcome("reject", exc)

    [(view, duplicate, _)] = ctx.db.write(store.create_uploads, [dict(upload=store.new_upload(
        image_id=image_id, user_id=new_id(), filename=upload.filename,
        content_type=probe.mime, size_bytes=upload.size, sha256=upload.sha256,
        fmt=probe.format, width=probe.width, height=probe.height, task_type=IMAGE_PROCESS.name,
        queue=queue_for(IMAGE_PROCESS.queue, "normal"),
        max_attempts=settings.retry_max_attempts))])
    assert not duplicate  # a new user each time
    # JobLifecycle.before_process_message, then the actor's body.
    assert ctx.reporter.begin_attempt(view.job.id, str(view.job.message_id)) is not None
    try:
        done = run_job(ctx, worker.task, view.job.id)
    except PermanentFailure as exc:
        if not isinstance(exc.__cause__, imaging.ImageError):
            raise  # a bug, not a bad file
        for kind in ("thumbnail", "preview"):
            assert not ctx.storage.rendition(image_id, kind).exists(), "partial output kept"
        return Outcome("failed", exc.__cause__)
    # JobLifecycle.after_process_message: the completion stores the last stage's outputs.
    assert isinstance(done, Completed)
    complete(ctx.reporter, view.job.id, done, None, ctx.storage.remove_renditions)
    image = ctx.db.read(store.get_image, image_id=image_id, user_id=None)
    assert image is not None and image.has_thumbnail and image.has_preview
    return Outcome("ready", image=image,
                   thumbnail=ctx.storage.rendition(image_id, "thumbnail").read_bytes(),
                   preview=ctx.storage.rendition(image_id, "preview").read_bytes())


@pytest.fixture(autouse=True)
def no_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    """The EPS entry must be refused before Pillow could hand it to Ghostscript."""

    def ghostscript(*args: object, **kwargs: object) -> None:
        pytest.fail("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)


def iso(exif_datetime: str) -> str:
    return datetime.strptime(exif_datetime, "%Y:%m:%d %H:%M:%S").isoformat()


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
async def test_corpus_entry(entry: dict[str, Any], worker: Worker) -> None:
    outcome = await run_pipeline(worker, entry)
    assert outcome.status in entry["acceptable"], (outcome.status, outcome.error, entry["why"])

    if outcome.error is not None:
        message = str(outcome.error)
        assert message
        for place in (CORPUS, worker.settings.data_dir, worker.settings.storage_dir):
            assert str(place) not in message
        assert "Traceback" not in message
    if isinstance(outcome.error, ApiError):
        assert status_of(outcome.error) in (400, 413, 415, 422)
    if outcome.status != "ready":
        return

    with Image.open(io.BytesIO(outcome.thumbnail or b"")) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (200, 200)
        assert "exif" not in thumbnail.info
    with Image.open(io.BytesIO(outcome.preview or b"")) as preview:
        assert preview.format == "WEBP"
        expected_w, expected_h = entry["preview_size"]
        assert abs(preview.width - expected_w) <= 1, preview.size
        assert abs(preview.height - expected_h) <= 1, preview.size
        assert "exif" not in preview.info

    image = outcome.image
    metadata = image.meta
    # The manifest's format is Pillow's name, so a multi-picture JPEG is "MPO".
    expected = (entry["width"], entry["height"], entry["format"])
    assert (metadata["width"], metadata["height"], metadata["format"]) == expected
    assert (image.width, image.height, image.format) == expected
    if entry.get("mode") is not None:
        assert metadata["mode"] == entry["mode"]
    if entry.get("frames") is not None:
        assert metadata["frames"] == entry["frames"]
    exif = entry.get("exif")
    if exif:
        assert metadata["camera_make"] == exif["make"]
        assert metadata["camera_model"] == exif["model"]
        assert metadata["has_gps"] is exif["has_gps"]
        if exif["datetime_original"] is not None:
            assert metadata["taken_at"] == iso(exif["datetime_original"])
