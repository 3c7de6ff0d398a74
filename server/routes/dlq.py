"""The dead-letter queue (admin): list, retry one or all, delete one or all."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import dispatch, store, validation
from server.auth import require_admin
from server.errors import ApiError, not_found
from server.jobs import TransitionError
from server.models import DeadLetter, iso


def _item(state: Any, entry: DeadLetter, view: store.JobView) -> dict[str, Any]:
    return {
        "job": state.presenter.job(view.job, view.image),
        "error": {"type": entry.error_type, "message": entry.error_message,
                  "traceback": entry.traceback},
        "attempts": entry.attempts,
        "failed_at": iso(entry.failed_at),
        "payload": entry.payload,
    }


async def list_dead_letters(request: Request) -> JSONResponse:
    await require_admin(request)
    state = request.app.state
    limit, before = validation.page(request.query_params)
    rows = await state.db.read(store.list_dead_letters, limit=limit, before=before,
                               task_type=request.query_params.get("type") or None,
                               error=request.query_params.get("error") or None)
    return JSONResponse({
        "items": [_item(state, entry, view) for entry, view in rows],
        "next_before": rows[-1][0].job_id if len(rows) == limit else None,
    })


async def _retry(state: Any, job_id: str) -> dict[str, Any]:
    """Queue a dead job again under the same id with fresh attempts; returns its <Job>."""
    found = await state.db.read(store.get_job, job_id=job_id, user_id=None)
    if found is None:
        raise not_found("dead letter")
    if found.job.image_id is not None and (
            found.image is None
            or not await asyncio.to_thread(state.storage.original(found.job.image_id).exists)):
        raise ApiError(409, "input_missing",
                       "the image this job processed was deleted, so it cannot run again")
    try:
        requeued = await state.db.write(store.requeue_dead_letter, job_id=job_id)
    except TransitionError:  # another admin retried it a moment ago
        raise ApiError(409, "conflict", "the job is already being retried") from None
    if requeued is None:
        raise not_found("dead letter")
    entry, view = requeued

    async def undo() -> None:
        await state.db.write(store.dead_letter, job_id=job_id,
                             error={"type": entry.error_type, "message": entry.error_message},
                             traceback=entry.traceback, attempts=entry.attempts)

    await dispatch.enqueue(state, view, undo=undo)
    return await dispatch.announce(state, view)


async def retry_one(request: Request) -> JSONResponse:
    await require_admin(request)
    job = await _retry(request.app.state, request.path_params["job_id"])
    return JSONResponse({"job": job}, status_code=202)


async def retry_all(request: Request) -> JSONResponse:
    await require_admin(request)
    state = request.app.state
    retried: list[str] = []
    errors: list[dict[str, Any]] = []
    for job_id in await state.db.read(store.dead_letter_ids):
        try:
            await _retry(state, job_id)
            retried.append(job_id)
        except ApiError as exc:
            if exc.status == 503:
                raise
            errors.append({"job_id": job_id, "error": {"code": exc.code, "message": exc.message}})
    return JSONResponse({"retried": retried, "errors": errors}, status_code=202)


async def delete_one(request: Request) -> Response:
    await require_admin(request)
    if not await request.app.state.db.write(store.delete_dead_letter,
                                            job_id=request.path_params["job_id"]):
        raise not_found("dead letter")
    return Response(status_code=204)


async def clear(request: Request) -> Response:
    await require_admin(request)
    await request.app.state.db.write(store.clear_dead_letters)
    return Response(status_code=204)


routes = [
    Route("/api/dlq", list_dead_letters, methods=["GET"]),
    Route("/api/dlq", clear, methods=["DELETE"]),
    Route("/api/dlq/retry", retry_all, methods=["POST"]),
    Route("/api/dlq/{job_id}/retry", retry_one, methods=["POST"]),
    Route("/api/dlq/{job_id}", delete_one, methods=["DELETE"]),
]
