"""Images: upload, list, read, download the files, delete."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
import sqlalchemy.exc
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from server.services import dispatch, outbound

from server.infra import metrics, ratelimit

from server.core import signing, validation

from server.data import store
from server.infra.audit import audit_foreign
from server.web.http.auth import require_user
from server.core.principal import Principal
from server.core.errors import ApiError, Problem, not_found
from server.web.http.error_handlers import status_of
from server.web.http.headers import content_disposition
from server.core.jobs import queue_for
from server.data.models import new_id, utcnow
from server.services import queues
from server.services.presenter import batch_summary
from server.web.http.uploads import ReceivedFile, receive_multipart
from server.core import imaging
from server.core.tasks import IMAGE_PROCESS
from server.web.state import AppState, app_state

log = logging.getLogger(__name__)

_FILE_TYPES = {"thumbnail": "image/webp", "preview": "image/webp"}


def _count_upload(state: AppState, outcome: str, status: int, reason: str = "") -> None:
    state.tally.inc(metrics.UPLOADS, outcome=outcome, status=status, reason=reason)


def _count_refusal(state: AppState, exc: BaseException) -> None:
    """Count a request refused as a whole, with the status and code its answer has."""
    if isinstance(exc, ApiError):
        _count_upload(state, "rejected", status_of(exc), exc.code)
    elif isinstance(exc, redis.RedisError):
        _count_upload(state, "rejected", 503, "queue_unavailable")
    elif isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        _count_upload(state, "rejected", 503, "database_unavailable")
    elif isinstance(exc, sqlalchemy.exc.DataError):  # answered 400 by the error handler
        _count_upload(state, "rejected", 400, "invalid_value")
    elif isinstance(exc, Exception):
        _count_upload(state, "rejected", 500, "internal_error")


async def upload_image(request: Request) -> Response:
    """Store the file, record image + job, enqueue, answer 202 — no image decoding here."""
    state = app_state(request)
    try:
        response = await _upload_image(request)
    except BaseException as exc:
        _count_refusal(state, exc)
        raise
    _count_upload(state, "duplicate" if response.status_code == 200 else "accepted",
                  response.status_code)
    return response


async def _upload_image(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    await outbound.check_backlog(state, principal.user_id)
    uploads = await ratelimit.check_uploads(state, principal.user_id)
    try:
        return await _receive_image(request, principal)
    except Exception:
        # Refused (a bad form, not an image, too large, no high priority left): a refused
        # request uses none of the allowance.
        await _give_back(state, uploads)
        raise


async def _receive_image(request: Request, principal: Principal) -> Response:
    state = app_state(request)
    settings = state.settings
    form = await receive_multipart(request, state.storage,
                                   max_file_bytes=settings.max_upload_bytes, max_files=1,
                                   max_fields=settings.max_form_fields,
                                   max_field_bytes=settings.max_form_fields_bytes)
    try:
        upload = form.single_file("file")
        options = validation.upload_options(form.fields,
                                            max_digits=settings.max_number_digits)
        high = await ratelimit.check_high_priority(state, principal, options.priority)
        try:
            stored = await store_file(state, principal.user_id, upload, options)
        except Exception:
            # Refused (not an image, too large…): no job, so no high-priority one.
            await _give_back(state, high)
            raise
        if stored.duplicate:
            await _give_back(state, high)  # the existing job keeps its own priority
            return JSONResponse({**await stored_item(state, stored), "duplicate": True},
                                status_code=200)
        return JSONResponse(await submit_file(state, stored), status_code=202)
    finally:
        form.cleanup()


async def upload_batch(request: Request) -> Response:
    """Several files at once: each good file becomes a job, each bad one an error item.

    All files are stored and their jobs recorded first, then sent: ``batch:progress``
    never counts a batch that is still growing.
    """
    state = app_state(request)
    refused: list[ApiError] = []
    try:
        response, items = await _upload_batch(request, refused)
    except BaseException as exc:
        _count_refusal(state, exc)
        raise
    for error in refused:
        _count_upload(state, "rejected", status_of(error), error.code)
    for item in items:
        if "job" in item:
            _count_upload(state, "duplicate" if item.get("duplicate") else "accepted",
                          200 if item.get("duplicate") else 202)
    return response


async def _upload_batch(request: Request,
                        refused: list[ApiError]) -> tuple[Response, list[dict[str, Any]]]:
    """The batch upload; files refused one by one are added to ``refused``."""
    principal = await require_user(request)
    state = app_state(request)
    await outbound.check_backlog(state, principal.user_id)
    await ratelimit.check_uploads(state, principal.user_id, files=0)
    files_begun = 0

    async def within_allowance(part: ReceivedFile) -> None:
        # As each file begins, before its bytes are read: a batch that would pass the
        # allowance is refused at that file, not once the whole body is in.
        nonlocal files_begun
        if part.field == "file":
            files_begun += 1
            await _allowance_covers(state, principal.user_id, files_begun)

    settings = state.settings
    form = await receive_multipart(request, state.storage,
                                   max_file_bytes=settings.max_upload_bytes,
                                   max_files=settings.max_batch_files, per_file_errors=True,
                                   max_fields=settings.max_form_fields,
                                   max_field_bytes=settings.max_form_fields_bytes,
                                   max_body_bytes=settings.max_batch_bytes,
                                   on_file=within_allowance)
    try:
        files = [item for item in form.files if item.field == "file"]
        if not files:
            raise ApiError(Problem.INVALID, "missing_file", "send the images in repeated 'file' fields")
        options = validation.upload_options(form.fields,
                                            max_digits=settings.max_number_digits)
        receivable = sum(1 for f in files if f.error is None)
        high = await ratelimit.check_high_priority(state, principal, options.priority,
                                                   receivable)
        uploads: ratelimit.Taken | None = None
        try:
            # Files refused as they came (too large) take none of the allowance.
            uploads = await ratelimit.check_uploads(state, principal.user_id, files=receivable)
            batch = await state.db.write(store.create_batch, user_id=principal.user_id,
                                         files=len(files))
            outcomes: list[StoredFile | dict[str, Any]] = []
            for upload in files:
                try:
                    if upload.error is not None:
                        raise upload.error
                    outcomes.append(await store_file(state, principal.user_id, upload,
                                                     options, batch_id=batch.id))
                except ApiError as exc:
                    if exc.kind is Problem.UNAVAILABLE:
                        raise
                    refused.append(exc)
                    outcomes.append({"error": {"code": exc.code, "message": exc.message},
                                     "filename": upload.filename})
        except Exception:
            await _give_back(state, high)  # the batch is refused as a whole
            await _give_back(state, uploads)
            raise
        # Only new jobs are high-priority ones: not the refused files, not the duplicates;
        # and only stored files (duplicates too, as a single upload) count as uploads.
        new_jobs = sum(1 for o in outcomes if isinstance(o, StoredFile) and not o.duplicate)
        await _give_back(state, high, receivable - new_jobs)
        stored = sum(1 for o in outcomes if isinstance(o, StoredFile))
        await _give_back(state, uploads, receivable - stored)
        items: list[dict[str, Any]] = []
        for outcome in outcomes:
            if not isinstance(outcome, StoredFile):
                items.append(outcome)
            elif outcome.duplicate:
                items.append({**await stored_item(state, outcome), "duplicate": True})
            else:
                items.append(await submit_file(state, outcome))
        found = await state.db.read(store.batch_progress, batch_id=batch.id, user_id=None)
        summary = batch_summary(found) if found else None
        return JSONResponse({"batch": summary, "items": items}, status_code=202), items
    finally:
        form.cleanup()


async def _give_back(state: AppState, taken: ratelimit.Taken | None,
                     amount: int | None = None) -> None:
    """Return allowance a request took and did not use (if Redis fails meanwhile, the
    user is only short of it until the window ends)."""
    try:
        await ratelimit.give_back(state.redis, taken, amount)
    except redis.RedisError as exc:
        log.warning("could not give back %s: %s", taken, exc)


async def _allowance_covers(state: AppState, user_id: str, files: int) -> None:
    """429 now unless the user's upload allowance (``ratelimit.check_uploads``) still
    covers ``files`` more uploads. Nothing is taken here: the batch takes all its files at
    once when its body is in, so that a refused batch costs nothing."""
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


@dataclass(frozen=True)
class StoredFile:
    """An accepted file on disk with its image and job rows; its message not sent yet."""

    view: store.JobView
    duplicate: bool
    delay_s: int
    position: int | None = None  # in its queue, as the job was recorded


async def store_file(state: AppState, user_id: str, upload: ReceivedFile,
                     options: validation.UploadOptions,
                     batch_id: str | None = None) -> StoredFile:
    """Check one received file, move it into the store and record its image and job.

    For the same bytes uploaded before, the earlier image and job (``duplicate``).
    Raises ApiError for a file we refuse.
    """
    probe = await _probe(upload, state.settings.max_image_pixels,
                         state.settings.max_decode_bytes)
    image_id = new_id()
    await asyncio.to_thread(state.storage.adopt_original, upload.path, image_id)
    run_at = utcnow() + timedelta(seconds=options.delay_s) if options.delay_s else None
    try:
        view, duplicate, position = await state.db.write(
            _create_upload, image_id=image_id, user_id=user_id,
            filename=upload.filename, content_type=probe.mime, size_bytes=upload.size,
            sha256=upload.sha256, fmt=probe.format, width=probe.width, height=probe.height,
            task_type=IMAGE_PROCESS.name, queue=queue_for(IMAGE_PROCESS.queue, options.priority),
            max_attempts=state.settings.retry_max_attempts, priority=options.priority,
            run_at=run_at, stage=await queues.waiting_stage(state, IMAGE_PROCESS.queue),
            batch_id=batch_id,
        )
    except BaseException:
        await asyncio.to_thread(state.storage.remove_image, image_id)
        raise
    if duplicate:
        await asyncio.to_thread(state.storage.remove_image, image_id)
    return StoredFile(view, duplicate, options.delay_s, position)


def _create_upload(s: Session, /, **fields: Any) -> tuple[store.JobView, bool, int | None]:
    """``store.create_upload`` and the job's queue position, in one transaction."""
    view, duplicate = store.create_upload(s, **fields)
    return view, duplicate, store.queue_position(s, job=view.job)


async def stored_item(state: AppState, stored: StoredFile) -> dict[str, Any]:
    """``{"image", "job"}`` of a stored file as it is now."""
    view = stored.view
    assert view.image is not None  # an upload's job always has its image
    position = await state.db.read(store.queue_position, job=view.job)
    return {"image": state.presenter.image(view.image),
            "job": state.presenter.job(view.job, view.image, position)}


async def submit_file(state: AppState, stored: StoredFile) -> dict[str, Any]:
    """Send a stored file's message and announce its job; ``{"image", "job"}``."""
    view = stored.view
    assert view.image is not None
    image_id = view.image.id

    async def undo() -> None:
        await state.db.write(store.delete_upload, image_id=image_id, job_id=view.job.id)
        await asyncio.to_thread(state.storage.remove_image, image_id)

    await dispatch.enqueue(state, view, delay_s=stored.delay_s, undo=undo)
    job = await dispatch.announce(state, view, stored.position)
    return {"image": state.presenter.image(view.image), "job": job}


async def get_batch(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    owner = principal.owner
    batch_id = request.path_params["batch_id"]
    found = await state.db.read(store.batch_progress, batch_id=batch_id, user_id=owner)
    if found is None:
        raise not_found("batch")
    views = await state.db.read(store.batch_jobs, batch_id=batch_id)
    if views:
        audit_foreign(principal, views[0].job.user_id, "batch.read", f"batch:{batch_id}")
    return JSONResponse({"batch": batch_summary(found),
                         "jobs": [state.presenter.job(v.job, v.image) for v in views]})


async def _probe(upload: ReceivedFile, max_pixels: int,
                 max_decode_bytes: int | None = None) -> imaging.Probe:
    """Header check only: sniffed type, dimensions, pixel cap, the memory its decode needs."""
    if upload.size == 0:
        raise ApiError(Problem.INVALID, "empty_file", "the uploaded file is empty")
    try:
        return await asyncio.to_thread(imaging.probe, upload.path, max_pixels=max_pixels,
                                       max_decode_bytes=max_decode_bytes)
    except imaging.ImageError as exc:
        raise ApiError(exc.kind, exc.code, str(exc)) from None


async def list_images(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    limit, before = validation.page(request.query_params,
                                    max_digits=state.settings.max_number_digits)
    images = await state.db.read(store.list_images, user_id=principal.user_id, limit=limit,
                                 before=before)
    next_before = images[-1].id if len(images) == limit else None
    return JSONResponse({"items": [state.presenter.image(i) for i in images],
                         "next_before": next_before})


async def get_image(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    image = await state.db.read(store.get_image, image_id=request.path_params["image_id"],
                                user_id=principal.owner)
    if image is None:
        raise not_found("image")
    audit_foreign(principal, image.user_id, "image.read", f"image:{image.id}")
    return JSONResponse(state.presenter.image(image))


async def _file_caller(request: Request, image_id: str, kind: str) -> Principal | None:
    """Who asks for the file; None for a valid signed link (it names the file itself)."""
    params = request.query_params
    sig = params.get("sig")
    # No token needed to get this far: a number of thousands of digits is a 422 here,
    # before int() (which refuses past 4,300 digits) is asked to parse it.
    expires = validation.whole_number(params.get("expires", ""), "expires",
                                      app_state(request).settings.max_number_digits)
    if sig and expires is not None:
        if signing.verify(app_state(request).settings.secret_key, image_id, kind,
                          expires=expires, signature=sig, now=time.time()):
            return None
        if "authorization" not in request.headers:
            raise ApiError(Problem.FORBIDDEN, "forbidden", "the link is invalid or has expired")
    return await require_user(request)


async def get_image_file(request: Request) -> Response:
    """The file's bytes. Renditions show inline (they are <img> sources); the original is
    always a download: it is the uploader's bytes, so a browser must never render it here."""
    kind = request.path_params["kind"]
    image_id = request.path_params["image_id"]
    if kind not in signing.FILE_KINDS:
        raise ApiError(Problem.NOT_FOUND, "not_found", "no such resource")
    caller = await _file_caller(request, image_id, kind)
    state = app_state(request)
    image = await state.db.read(store.get_image, image_id=image_id,
                                user_id=caller.owner if caller else None)
    if image is None:
        raise not_found("image")
    if caller is not None:
        audit_foreign(caller, image.user_id, "image.file", f"image:{image_id}", kind)
    if kind == "original":
        path, media_type = state.storage.original(image_id), image.content_type
    else:
        path, media_type = state.storage.rendition(image_id, kind), _FILE_TYPES[kind]
    if not await asyncio.to_thread(path.exists):
        raise ApiError(Problem.NOT_FOUND, "not_found", f"the {kind} does not exist (yet)")
    headers = {
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'",
    }
    if kind == "original":
        headers["Content-Disposition"] = content_disposition(image.filename)
    return FileResponse(path, media_type=media_type, headers=headers)


async def delete_image(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    image = await state.db.write(store.delete_image, image_id=request.path_params["image_id"],
                                 user_id=principal.owner)
    if image is None:
        raise not_found("image")
    audit_foreign(principal, image.user_id, "image.delete", f"image:{image.id}")
    # A job still queued for it ends `cancelled` when a worker finds the image gone.
    await asyncio.to_thread(state.storage.remove_image, image.id)
    return Response(status_code=204)


routes: list[Any] = [
    Route("/api/batches", upload_batch, methods=["POST"]),
    Route("/api/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/api/images", upload_image, methods=["POST"]),
    Route("/api/images", list_images, methods=["GET"]),
    Route("/api/images/{image_id}", get_image, methods=["GET"]),
    Route("/api/images/{image_id}", delete_image, methods=["DELETE"]),
    Route("/api/images/{image_id}/{kind}", get_image_file, methods=["GET", "HEAD"]),
]
