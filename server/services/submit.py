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

from server.core import imaging, keys, validation
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


# The checks an upload passes before its body is read, in one script (one wait for Redis,
# where they were three): the owner's webhook backlog, then the upload allowance (taken
# only if the backlog lets the upload in; ``files`` 0 only checks that some is left), and
# the paused queues, read at the same time for the stage the job will start in.
# KEYS: allowance window, paused queues, the owner's webhook lists. ARGV: files, allowance
# (0: none), window TTL, backlog cap (0: none). Returns {verdict, waiting, paused...}:
# verdict 0 admitted, -1 allowance spent, -2 backlog full.
_ADMIT = """
local waiting = 0
local cap = tonumber(ARGV[4])
if cap > 0 then
  for i = 3, #KEYS do waiting = waiting + redis.call("llen", KEYS[i]) end
  if waiting >= cap then return {-2, waiting} end
end
local limit = tonumber(ARGV[2])
if limit > 0 then
  local used = tonumber(redis.call("get", KEYS[1]) or "0")
  local wanted = tonumber(ARGV[1])
  if wanted == 0 then
    if used >= limit then return {-1, waiting} end
  elseif used + wanted > limit then
    return {-1, waiting}
  else
    redis.call("incrby", KEYS[1], wanted)
    redis.call("expire", KEYS[1], ARGV[3])
  end
end
local answer = redis.call("smembers", KEYS[2])
table.insert(answer, 1, waiting)
table.insert(answer, 1, 0)
return answer
"""


@dataclass(frozen=True)
class Admission:
    """An upload let in: the allowance it took (to give back if it is refused later) and
    the queues paused as it was (for the stage its job starts in)."""

    taken: ratelimit.Taken | None
    paused: frozenset[str]


async def admit_uploads(state: Services, user_id: str, files: int = 1) -> Admission:
    """The user's webhook backlog (``outbound.check_backlog``) and upload allowance
    (``ratelimit.check_uploads``, taking ``files``) checked in one script, which reads the
    paused queues too: what was taken, to give back if the upload is refused later. When
    the backlog refuses, nothing is taken; when both would refuse, the backlog answers."""
    settings = state.settings
    rate = ratelimit.uploads_rate(settings)
    now = time.time()
    window = ratelimit.window_key(settings.redis_prefix, rate, user_id, now)
    backlog = outbound.backlog_keys(state, user_id)
    answer = await state.redis.eval(
        _ADMIT, 2 + len(backlog), window, keys.paused_queues(settings.redis_prefix),
        *backlog, files, max(0, rate.limit), rate.window_s * 2,
        max(0, settings.webhook_backlog_per_user))
    verdict, waiting, *paused = answer
    if int(verdict) == -2:
        refused = outbound.backlog_refusal(int(waiting), settings.webhook_backlog_per_user)
        assert refused is not None
        raise refused
    if int(verdict) == -1:
        raise ratelimit.refusal(rate, now)
    taken = ratelimit.Taken(window, files) if rate.limit > 0 and files > 0 else None
    return Admission(taken, frozenset(queues.queue_names_of(paused)))


async def allowance_covers(state: Services, user_id: str, files: int) -> None:
    """RATE_LIMITED now unless the user's upload allowance (``ratelimit.check_uploads``)
    still covers ``files`` more uploads. Nothing is taken here: the batch takes all its
    files at once when its body is in, so that a refused batch costs nothing."""
    limit = state.settings.rate_limit_uploads_per_min
    if limit <= 0:
        return
    uploads = ratelimit.uploads_rate(state.settings)
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
                     batch_id: str | None = None,
                     paused: frozenset[str] | None = None) -> StoredFile:
    """Check one received file, move it into the store and record its image and job.

    For the same bytes uploaded before, the earlier image and job (``duplicate``).
    Raises ApiError for a file we refuse. ``paused``: the paused queues as the upload was
    let in (``Admission``), for the stage its job starts in. They are read again here
    when not given, or when they held the job's queue, so that a queue resumed while the
    body came in does not leave its new job "paused" (a resume between this read and the
    commit still can, until a worker begins the job, as before the admission read them).
    A pause just after the read leaves the job "stored" in its row while it waits; the
    dispatcher holds it all the same.
    """
    image_id = new_id()
    hop = asyncio.ensure_future(asyncio.to_thread(
        probe_and_adopt, state.storage, upload, image_id, state.settings.max_image_pixels,
        state.settings.max_decode_bytes))
    # Unless the admission found the queue running: whether it is paused, read meanwhile
    # (one wait for both).
    stage_read = asyncio.ensure_future(queues.waiting_stage(state, IMAGE_PROCESS.queue)) \
        if paused is None or IMAGE_PROCESS.queue in paused else None
    try:
        probe = await asyncio.shield(hop)
    except BaseException as exc:
        if stage_read is not None:
            stage_read.cancel()
            stage_read.add_done_callback(_seen)
        if isinstance(exc, asyncio.CancelledError):
            # The thread goes on; a file it moves into the store has no row: remove it.
            hop.add_done_callback(lambda done: None if done.cancelled() or done.exception()
                                  else state.storage.remove_image(image_id))
        raise
    run_at = utcnow() + timedelta(seconds=options.delay_s) if options.delay_s else None
    try:
        # The rows are built here, not while the write holds SQLite's one write turn.
        new = store.new_upload(
            image_id=image_id, user_id=user_id,
            filename=upload.filename, content_type=probe.mime, size_bytes=upload.size,
            sha256=upload.sha256, fmt=probe.format, width=probe.width, height=probe.height,
            task_type=IMAGE_PROCESS.name, queue=queue_for(IMAGE_PROCESS.queue, options.priority),
            max_attempts=state.settings.retry_max_attempts, priority=options.priority,
            run_at=run_at, batch_id=batch_id,
            stage=await stage_read if stage_read is not None
            else queues.stage_for(IMAGE_PROCESS.queue, paused or frozenset()),
        )
        # Concurrent uploads share a write (a group commit on SQLite).
        view, duplicate, position = await state.db.write_grouped(store.create_uploads,
                                                                 upload=new)
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
