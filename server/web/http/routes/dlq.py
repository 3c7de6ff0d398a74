"""The dead-letter queue (admin): list, retry one or all, delete one or all."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core import validation
from server.core.errors import ApiError, Problem, not_found
from server.core.events import DLQ_REMOVED, AdminEvent
from server.core.wire import responses as wire
from server.data import store
from server.infra.audit import audit
from server.services import dispatch
from server.services.presenter import builtins
from server.web.http.auth import require_admin
from server.web.state import app_state


async def list_dead_letters(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    state = app_state(request)
    limit, before = validation.page(request.query_params,
                                    max_digits=state.settings.max_number_digits)
    task_type = request.query_params.get("type") or None
    error = request.query_params.get("error") or None
    rows = await state.db.read(store.list_dead_letters, limit=limit, before=before,
                               task_type=task_type, error=error)
    audit(admin.user_id, "dlq.list", "dlq",
          f"{len(rows)} items, type={task_type or '*'}, error={error or '*'}")
    return JSONResponse({
        "items": [state.presenter.dead_letter(entry, view) for entry, view in rows],
        "next_before": rows[-1][0].job_id if len(rows) == limit else None,
    })


async def retry_one(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    job_id = request.path_params["job_id"]
    job = await dispatch.retry_failed(app_state(request), job_id)
    audit(admin.user_id, "dlq.retry", f"job:{job_id}")
    return JSONResponse({"job": job}, status_code=202)


async def retry_all(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    state = app_state(request)
    retried: list[str] = []
    errors: list[wire.RetryRefusal] = []
    for job_id in await state.db.read(store.dead_letter_ids):
        try:
            await dispatch.retry_failed(state, job_id)
            retried.append(job_id)
        except ApiError as exc:
            if exc.kind is Problem.UNAVAILABLE:
                raise
            errors.append(wire.RetryRefusal(
                job_id=job_id, error=wire.ErrorBody(code=exc.code, message=exc.message)))
    audit(admin.user_id, "dlq.retry_all", "dlq", f"{len(retried)} retried, {len(errors)} refused")
    return JSONResponse(builtins(wire.DeadLetterRetry(retried=retried, errors=errors)),
                        status_code=202)


async def delete_one(request: Request) -> Response:
    admin = await require_admin(request)
    state = app_state(request)
    job_id = request.path_params["job_id"]
    if not await state.db.write(store.delete_dead_letter, job_id=job_id):
        raise not_found("dead letter")
    audit(admin.user_id, "dlq.delete", f"job:{job_id}")
    await state.publish(AdminEvent(DLQ_REMOVED, {"job_ids": [job_id]}))
    return Response(status_code=204)


async def clear(request: Request) -> Response:
    admin = await require_admin(request)
    state = app_state(request)
    removed = await state.db.write(store.clear_dead_letters)
    audit(admin.user_id, "dlq.clear", "dlq", f"{removed} removed")
    await state.publish(AdminEvent(DLQ_REMOVED, {"all": True}))
    return Response(status_code=204)


routes = [
    Route("/api/dlq", list_dead_letters, methods=["GET"]),
    Route("/api/dlq", clear, methods=["DELETE"]),
    Route("/api/dlq/retry", retry_all, methods=["POST"]),
    Route("/api/dlq/{job_id}/retry", retry_one, methods=["POST"]),
    Route("/api/dlq/{job_id}", delete_one, methods=["DELETE"]),
]
