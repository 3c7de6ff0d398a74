"""The dead-letter queue (admin): list and search, retry or delete one or all that match."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core import validation
from server.core.errors import ApiError, Problem, not_found
from server.core.events import DLQ_REMOVED, AdminEvent
from server.core.search import job_search
from server.core.wire import responses as wire
from server.data import store
from server.infra.audit import audit
from server.services import dispatch
from server.services.presenter import builtins
from server.web.http.auth import require_admin
from server.web.state import app_state

# Ids per ``dlq:removed`` push when a search's matches are deleted: events stay small.
REMOVED_PER_EVENT = 500


async def list_dead_letters(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    state = app_state(request)
    limit, before = validation.page(request.query_params,
                                    max_digits=state.settings.max_number_digits)
    search = job_search(request.query_params)
    rows = await state.db.read(store.list_dead_letters, limit=limit, before=before,
                               search=search)
    audit(admin.user_id, "dlq.list", "dlq", f"{len(rows)} items, {search.described()}")
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
    """Retry every dead letter the search in the query matches (all of them without one)."""
    admin = await require_admin(request)
    state = app_state(request)
    search = job_search(request.query_params)
    retried: list[str] = []
    errors: list[wire.RetryRefusal] = []
    for job_id in await state.db.read(store.dead_letter_ids, search=search):
        try:
            await dispatch.retry_failed(state, job_id)
            retried.append(job_id)
        except ApiError as exc:
            if exc.kind is Problem.UNAVAILABLE:
                raise
            errors.append(wire.RetryRefusal(
                job_id=job_id, error=wire.ErrorBody(code=exc.code, message=exc.message)))
    audit(admin.user_id, "dlq.retry_all", "dlq",
          f"{len(retried)} retried, {len(errors)} refused, {search.described()}")
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
    """Delete every dead letter the search in the query matches (all without one)."""
    admin = await require_admin(request)
    state = app_state(request)
    search = job_search(request.query_params)
    removed = await state.db.write(store.clear_dead_letters, search=search)
    audit(admin.user_id, "dlq.clear", "dlq", f"{len(removed)} removed, {search.described()}")
    if search.empty:
        await state.publish(AdminEvent(DLQ_REMOVED, {"all": True}))
    else:  # dashboards showing another filter keep the rest
        for start in range(0, len(removed), REMOVED_PER_EVENT):
            await state.publish(AdminEvent(
                DLQ_REMOVED, {"job_ids": removed[start:start + REMOVED_PER_EVENT]}))
    return Response(status_code=204)


routes = [
    Route("/api/dlq", list_dead_letters, methods=["GET"]),
    Route("/api/dlq", clear, methods=["DELETE"]),
    Route("/api/dlq/retry", retry_all, methods=["POST"]),
    Route("/api/dlq/{job_id}/retry", retry_one, methods=["POST"]),
    Route("/api/dlq/{job_id}", delete_one, methods=["DELETE"]),
]
