"""Submitting work: store an uploaded file and its job, send it, announce it; one-off tasks.

The web routes parse the request, take the upload allowance and answer; what happens to
a received file or a task request in between is here, free of HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import redis

from server.core import imaging, validation
from server.core.errors import ApiError, Problem
from server.core.jobs import ImageBusy, queue_for
from server.core.principal import Principal
from server.core.tasks import IMAGE_PROCESS, TaskSpec
from server.data import store
from server.data.models import new_id, utcnow
from server.infra import ratelimit
from server.infra.storage import Storage
from server.services import dispatch, outbound, queues
from server.services.context import Services

log = logging.getLogger(__name__)


class ReceivedUpload(Protocol):
    """A received file, already in the store's temp dir (the web process's
    ``ReceivedFile`` fits): all a use case needs of it."""

    @property
    def path(self) -> Path: ...

    @property
    def filename(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class StoredFile:
    """An accepted file on disk with its image and job rows; its message not sent yet."""

    view: store.JobView
    duplicate: bool
    delay_s: int
    position: int | None = None  # in its queue, as the job was recorded


async def give_back(state: Services, taken: ratelimit.Taken | None,
                    amount: int | None = None) -> None:
    """Return allowance a request took and did not use (if Redis fails meanwhile, the
    user is only short of it until the window ends)."""
    try:
        await ratelimit.give_back(state.redis, taken, amount)
    except redis.RedisError as exc:
        log.warning("could not give back %s: %s", taken, exc)


async def admit_uploads(state: Services, user_id: str, files: int = 1) -> ratelimit.Taken | None:
    """The user's webhook backlog (``outbound.check_backlog``) and upload allowance
    (``ratelimit.check_uploads``, taking ``files``) checked at once, in one wait for
    Redis: what was taken, to give back if the upload is refused later. A refusal by the
    backlog gives back what the allowance took; when both refuse, the backlog answers."""
    backlog, allowance = await asyncio.gather(
        outbound.check_backlog(state, user_id),
        ratelimit.check_uploads(state, user_id, files), return_exceptions=True)
    if isinstance(backlog, BaseException):
        if not isinstance(allowance, BaseException):
            await give_back(state, allowance)
        raise backlog
    if isinstance(allowance, BaseException):
        raise allowance
    return allowance


async def allowance_covers(state: Services, user_id: str, files: int) -> None:
    """RATE_LIMITED now unless the user's upload allowance (``ratelimit.check_uploads``)
    still covers ``files`` more uploads. Nothing is taken here: the batch takes all its
    files at once when its body is in, so that a refused batch costs nothing."""
    limit = state.settings.rate_limit_uploads_per_min
    if limit <= 0:
        return
    uploads = ratelimit.Rate("uploads", "uploads", limit)  # check_uploads' allowance
    if files <= limit:
        try:
            # Taking 0 checks that what is used is under the limit: under limit - files + 1
            # means ``files`` more still fit.
            await ratelimit.take(state.redis, state.settings.redis_prefix,
                                 dataclasses.replace(uploads, limit=limit - files + 1),
                                 user_id, 0)
            return
        except ApiError as exc:
            if exc.kind is not Problem.RATE_LIMITED:
                raise
    raise ratelimit.refusal(uploads, time.time())


def probe_and_adopt(storage: Storage, upload: ReceivedUpload, image_id: str,
                     max_pixels: int, max_decode_bytes: int | None) -> imaging.Probe:
    """Header check only (sniffed type, dimensions, pixel cap, the memory its decode
    needs), then the file moves into the store as ``image_id``'s original: one thread hop
    for both, off the event loop."""
    if upload.size == 0:
        raise ApiError(Problem.INVALID, "empty_file", "the uploaded file is empty")
    try:
        probe = imaging.probe(upload.path, max_pixels=max_pixels,
                              max_decode_bytes=max_decode_bytes)
    except imaging.ImageError as exc:
        raise ApiError(exc.kind, exc.code, str(exc)) from None
    storage.adopt_original(upload.path, image_id)
    return probe


async def store_file(state: Services, user_id: str, upload: ReceivedUpload,
                     options: validation.UploadOptions,
                     batch_id: str | None = None) -> StoredFile:
    """Check one received file, move it into the store and record its image and job.

    For the same bytes uploaded before, the earlier image and job (``duplicate``).
    Raises ApiError for a file we refuse.
    """
    image_id = new_id()
    hop = asyncio.ensure_future(asyncio.to_thread(
        probe_and_adopt, state.storage, upload, image_id, state.settings.max_image_pixels,
        state.settings.max_decode_bytes))
    # Read meanwhile (one wait for both): whether the queue is paused.
    stage = asyncio.ensure_future(queues.waiting_stage(state, IMAGE_PROCESS.queue))
    try:
        probe = await asyncio.shield(hop)
    except BaseException as exc:
        stage.cancel()
        stage.add_done_callback(_seen)
        if isinstance(exc, asyncio.CancelledError):
            # The thread goes on; a file it moves into the store has no row: remove it.
            hop.add_done_callback(lambda done: None if done.cancelled() or done.exception()
                                  else state.storage.remove_image(image_id))
        raise
    run_at = utcnow() + timedelta(seconds=options.delay_s) if options.delay_s else None
    try:
        # Concurrent uploads share a write (a group commit on SQLite).
        view, duplicate, position = await state.db.write_grouped(
            store.create_uploads, image_id=image_id, user_id=user_id,
            filename=upload.filename, content_type=probe.mime, size_bytes=upload.size,
            sha256=upload.sha256, fmt=probe.format, width=probe.width, height=probe.height,
            task_type=IMAGE_PROCESS.name, queue=queue_for(IMAGE_PROCESS.queue, options.priority),
            max_attempts=state.settings.retry_max_attempts, priority=options.priority,
            run_at=run_at, stage=await stage, batch_id=batch_id,
        )
    except BaseException:
        await asyncio.to_thread(state.storage.remove_image, image_id)
        raise
    if duplicate:
        await asyncio.to_thread(state.storage.remove_image, image_id)
    return StoredFile(view, duplicate, options.delay_s, position)


def _seen(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome as seen: one whose answer is no longer needed."""
    if not task.cancelled():
        task.exception()


async def stored_item(state: Services, stored: StoredFile) -> dict[str, Any]:
    """``{"image", "job"}`` of a stored file as it is now."""
    view = stored.view
    assert view.image is not None  # an upload's job always has its image
    position = await state.db.read(store.queue_position, job=view.job)
    return {"image": state.presenter.image(view.image),
            "job": state.presenter.job(view.job, view.image, position)}


async def submit_file(state: Services, stored: StoredFile) -> dict[str, Any]:
    """Send a stored file's message and announce its job; ``{"image", "job"}``."""
    view = stored.view
    assert view.image is not None
    image_id = view.image.id

    async def undo() -> None:
        await state.db.write(store.delete_upload, image_id=image_id, job_id=view.job.id)
        await asyncio.to_thread(state.storage.remove_image, image_id)

    job = await dispatch.enqueue(state, view, delay_s=stored.delay_s, undo=undo,
                                 position=stored.position)
    return {"image": state.presenter.image(view.image), "job": job}


async def submit_task(state: Services, principal: Principal, task_type: TaskSpec,
                      spec: validation.TaskRequest, *, max_attempts: int,
                      image_id: str | None, now: datetime) -> dict[str, Any] | None:
    """Record a one-off job of ``task_type``, send it and announce it; its <Job>, or None
    (nothing recorded) when ``image_id`` names no image of the user.

    Takes the high-priority allowance a ``priority: high`` job needs and gives it back if
    no job is made. CONFLICT ``image_busy`` while another job works on the image.
    """
    high = await ratelimit.check_high_priority(state, principal, spec.priority)
    try:
        try:
            view = await state.db.write(
                store.create_task_job, user_id=principal.user_id, task_type=task_type.name,
                queue=queue_for(task_type.queue, spec.priority), payload=spec.payload,
                max_attempts=max_attempts, priority=spec.priority,
                run_at=now + timedelta(seconds=spec.delay_s) if spec.delay_s else None,
                image_id=image_id, stage=await queues.waiting_stage(state, task_type.queue),
            )
        except ImageBusy as exc:
            raise ApiError(Problem.CONFLICT, "image_busy", str(exc)) from None
        if view is None:
            await give_back(state, high)
            return None

        async def undo() -> None:
            await state.db.write(store.delete_job, job_id=view.job.id)

        undo_counted = await outbound.count_task(state, view, undo)
        return await dispatch.enqueue(state, view, delay_s=spec.delay_s, undo=undo_counted)
    except Exception:
        # No job after all (image busy, send rate, queue down): no high-priority one.
        await give_back(state, high)
        raise
