"""``image.process`` and its completion, run in-process against real Redis and a real
database (the corpus module runs every corpus file the same way).

Proven here:
- a run stores its renditions and reports no step of its own for the last stage: what
  that stage produced (preview, metadata, dimensions) is stored with the completion, in
  the same write that marks the job completed;
- an image deleted while its job ran: the completion stores nothing, the job ends
  ``cancelled`` with the reason, and the renditions the run wrote are removed;
- a job cancelled while it ran (too quick to meet a progress report): the completion is
  refused, and the renditions the run wrote are removed.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from server.core.jobs import JobState, TransitionError, queue_for
from server.core.tasks import IMAGE_PROCESS
from server.data import store
from server.data.models import new_id
from server.data.store import JobView
from server.infra.broker import build_broker
from server.infra.settings import Settings
from workers import handoff
from workers.actors import run_job
from workers.context import WorkerContext
from workers.middleware.lifecycle import complete
from workers.tasks import image as image_task
from workers.tasks import registry as tasks
from workers.tasks.registry import Completed, TaskType

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(redis_url: str, database_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerContext, TaskType]]:
    prefix = f"imgtask{secrets.token_hex(4)}"
    settings = Settings.from_env({"DATA_DIR": str(tmp_path_factory.mktemp("image-task")),
                                  "REDIS_URL": redis_url, "DATABASE_URL": database_url,
                                  "REDIS_PREFIX": prefix})
    broker = build_broker(settings, maintenance=False)
    ctx = WorkerContext.from_settings(settings, broker)
    ctx.db.migrate()
    ctx.storage.ensure_dirs()
    try:
        yield ctx, tasks.load(include_test_tasks=False)[IMAGE_PROCESS.name]
    finally:
        ctx.db.dispose()
        for key in ctx.redis.scan_iter(f"{prefix}*"):
            ctx.redis.delete(key)
        ctx.redis.close()
        broker.close()


def _upload(ctx: WorkerContext, tmp_path: Path) -> JobView:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(buf, "JPEG")
    data = buf.getvalue()
    temp = ctx.storage.new_temp()
    temp.write_bytes(data)
    image_id = new_id()
    ctx.storage.adopt_original(temp, image_id)
    [(view, _, _)] = ctx.db.write(store.create_uploads, [dict(upload=store.new_upload(
        image_id=image_id, user_id=new_id(), filename="a.jpg",
        content_type="image/jpeg", size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), fmt="JPEG", width=640, height=480,
        task_type=IMAGE_PROCESS.name, queue=queue_for(IMAGE_PROCESS.queue, "normal"),
        max_attempts=3))])
    assert ctx.reporter.begin_attempt(view.job.id, str(view.job.message_id)) is not None
    return view


def test_the_last_stage_is_stored_with_the_completion(
        worker: tuple[WorkerContext, TaskType], tmp_path: Path) -> None:
    ctx, task = worker
    view = _upload(ctx, tmp_path)
    assert view.image is not None
    done = run_job(ctx, task, view.job.id)
    assert isinstance(done, Completed) and done.image_id == view.image.id
    assert done.image_outputs["has_preview"] is True
    assert (done.image_outputs["width"], done.image_outputs["height"]) == (640, 480)
    before = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    assert before is not None and before.image is not None
    assert before.job.state == JobState.ACTIVE.value
    assert not before.image.has_preview, "not stored before the completion"

    complete(ctx.reporter, view.job.id, done, None, ctx.storage.remove_renditions)
    after = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    assert after is not None and after.image is not None
    assert (after.job.state, after.job.progress) == (JobState.COMPLETED.value, 100)
    assert after.image.has_thumbnail and after.image.has_preview
    assert (after.image.width, after.image.format) == (640, "JPEG")
    assert after.image.meta is not None


def test_an_image_deleted_during_the_run_cancels_the_job_at_its_completion(
        worker: tuple[WorkerContext, TaskType], tmp_path: Path) -> None:
    ctx, task = worker
    view = _upload(ctx, tmp_path)
    assert view.image is not None
    done = run_job(ctx, task, view.job.id)
    assert isinstance(done, Completed)
    assert ctx.storage.rendition(view.image.id, "preview").exists()
    ctx.db.write(store.delete_image, image_id=view.image.id, user_id=None)

    complete(ctx.reporter, view.job.id, done, None, ctx.storage.remove_renditions)
    after = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    assert after is not None and after.job.state == JobState.CANCELLED.value
    assert after.job.error is not None
    assert after.job.error["message"] == "the image was deleted while it was processed"
    for kind in ("thumbnail", "preview"):
        assert not ctx.storage.rendition(view.image.id, kind).exists(), kind


def test_a_job_cancelled_during_a_quick_run_leaves_no_renditions(
        worker: tuple[WorkerContext, TaskType], tmp_path: Path) -> None:
    ctx, task = worker
    view = _upload(ctx, tmp_path)
    assert view.image is not None
    done = run_job(ctx, task, view.job.id)
    assert isinstance(done, Completed)
    assert ctx.storage.rendition(view.image.id, "thumbnail").exists()
    ctx.db.write(store.cancel_job, job_id=view.job.id, user_id=None)

    with pytest.raises(TransitionError):
        complete(ctx.reporter, view.job.id, done, None, ctx.storage.remove_renditions)
    after = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    assert after is not None and after.image is not None
    assert after.job.state == JobState.CANCELLED.value
    assert not after.image.has_thumbnail and not after.image.has_preview
    for kind in ("thumbnail", "preview"):
        assert not ctx.storage.rendition(view.image.id, kind).exists(), kind


def test_the_actor_runs_on_the_row_its_attempt_began_with(
        worker: tuple[WorkerContext, TaskType], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Handed the view ``begin_attempt`` wrote (as the lifecycle middleware does), the
    actor reads neither the job nor its image again; without one, it reads the job."""
    ctx, task = worker
    read = ctx.db.read
    reads: list[str] = []

    def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        reads.append(fn.__name__)
        return read(fn, *args, **kwargs)

    monkeypatch.setattr(ctx.db, "read", counted)
    view = _upload(ctx, tmp_path)
    begun = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    assert begun is not None and begun.job.state == JobState.ACTIVE.value
    reads.clear()
    handoff.hand_over(begun)
    assert isinstance(run_job(ctx, task, view.job.id), Completed)
    assert "get_job" not in reads and "get_image" not in reads, reads

    other = _upload(ctx, tmp_path)
    reads.clear()
    assert isinstance(run_job(ctx, task, other.job.id), Completed)
    assert reads[0] == "get_job"


def test_a_run_a_later_attempt_took_over_leaves_that_attempts_renditions(
        worker: tuple[WorkerContext, TaskType], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that stops after a later attempt began (it hung, and was taken over) removes
    nothing: the renditions and their flags are the later attempt's. A failure of the
    attempt that runs the job still removes them."""
    ctx, task = worker
    view = _upload(ctx, tmp_path)
    assert view.image is not None
    first = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
    second = ctx.db.write(store.begin_attempt, job_id=view.job.id)
    assert first is not None and second is not None and second.job.attempt == 2
    handoff.hand_over(second)
    assert isinstance(run_job(ctx, task, view.job.id), Completed)
    ctx.db.write(store.record_image_output, image_id=view.image.id, has_thumbnail=True,
                 has_preview=True)

    def stalled(*args: Any) -> Any:
        raise OSError("storage stalled")

    monkeypatch.setattr(image_task, "_process", stalled)

    def kept() -> bool:
        now = ctx.db.read(store.get_job, job_id=view.job.id, user_id=None)
        assert now is not None and now.image is not None and view.image is not None
        files = [ctx.storage.rendition(view.image.id, kind).exists()
                 for kind in ("thumbnail", "preview")]
        assert files == [now.image.has_thumbnail] * 2 == [now.image.has_preview] * 2
        return all(files)

    with pytest.raises(OSError):
        image_task.process_image(ctx, first)
    assert kept(), "the hung first run left the second attempt's renditions"
    with pytest.raises(OSError):
        image_task.process_image(ctx, second)
    assert not kept(), "the running attempt's own failure removes them"
