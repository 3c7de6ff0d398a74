"""Images: upload, list, read, download the files, delete."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
import sqlalchemy.exc
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from server.core import signing, validation
from server.core.errors import ApiError, Problem, not_found
from server.core.principal import Principal
from server.data import store
from server.infra import metrics, ratelimit
from server.infra.audit import audit_foreign
from server.services import live_views, submit
from server.services.presenter import batch_summary
from server.web.http.auth import require_user
from server.web.http.error_handlers import status_of
from server.web.http.headers import content_disposition
from server.web.http.uploads import ReceivedFile, receive_multipart
from server.web.state import AppState, app_state

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
    admission = await submit.admit_uploads(state, principal.user_id)
    try:
        return await _receive_image(request, principal, admission.paused)
    except Exception:
        # Refused (a bad form, not an image, too large, no high priority left): a refused
        # request uses none of the allowance.
        await submit.give_back(state, admission.taken)
        raise


async def _receive_image(request: Request, principal: Principal,
                         paused: frozenset[str]) -> Response:
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
            stored = await submit.store_file(state, principal.user_id, upload, options,
                                             paused=paused)
        except Exception:
            # Refused (not an image, too large…): no job, so no high-priority one.
            await submit.give_back(state, high)
            raise
        if stored.duplicate:
            await submit.give_back(state, high)  # the existing job keeps its own priority
            return JSONResponse({**await submit.stored_item(state, stored), "duplicate": True},
                                status_code=200)
        return JSONResponse(await submit.submit_file(state, stored), status_code=202)
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
    await submit.admit_uploads(state, principal.user_id, files=0)
    files_begun = 0

    async def within_allowance(part: ReceivedFile) -> None:
        # As each file begins, before its bytes are read: a batch that would pass the
        # allowance is refused at that file, not once the whole body is in.
        nonlocal files_begun
        if part.field == "file":
            files_begun += 1
            await submit.allowance_covers(state, principal.user_id, files_begun)

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
            raise ApiError(Problem.INVALID, "missing_file",
                           "send the images in repeated 'file' fields")
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
            outcomes: list[submit.StoredFile | dict[str, Any]] = []
            for upload in files:
                try:
                    if upload.error is not None:
                        raise upload.error
                    outcomes.append(await submit.store_file(state, principal.user_id, upload,
                                                            options, batch_id=batch.id))
                except ApiError as exc:
                    if exc.kind is Problem.UNAVAILABLE:
                        raise
                    refused.append(exc)
                    outcomes.append({"error": {"code": exc.code, "message": exc.message},
                                     "filename": upload.filename})
        except Exception:
            await submit.give_back(state, high)  # the batch is refused as a whole
            await submit.give_back(state, uploads)
            raise
        # Only new jobs are high-priority ones: not the refused files, not the duplicates;
        # and only stored files (duplicates too, as a single upload) count as uploads.
        new_jobs = sum(1 for o in outcomes if isinstance(o, submit.StoredFile) and not o.duplicate)
        await submit.give_back(state, high, receivable - new_jobs)
        stored = sum(1 for o in outcomes if isinstance(o, submit.StoredFile))
        await submit.give_back(state, uploads, receivable - stored)
        items: list[dict[str, Any]] = []
        for outcome in outcomes:
            if not isinstance(outcome, submit.StoredFile):
                items.append(outcome)
            elif outcome.duplicate:
                items.append({**await submit.stored_item(state, outcome), "duplicate": True})
            else:
                items.append(await submit.submit_file(state, outcome))
        found = await state.db.read(store.batch_progress, batch_id=batch.id, user_id=None)
        summary = batch_summary(found) if found else None
        return JSONResponse({"batch": summary, "items": items}, status_code=202), items
    finally:
        form.cleanup()


async def get_batch(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    owner = principal.owner
    batch_id = request.path_params["batch_id"]
    found = await live_views.current_batch(state.bus, await state.db.read(
        store.batch_progress, batch_id=batch_id, user_id=owner))
    if found is None:
        raise not_found("batch")
    views = await live_views.current(state.bus, await state.db.read(store.batch_jobs,
                                                                    batch_id=batch_id))
    if views:
        audit_foreign(principal, views[0].job.user_id, "batch.read", f"batch:{batch_id}")
    return JSONResponse({"batch": batch_summary(found),
                         "jobs": [state.presenter.job(v.job, v.image) for v in views]})


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
