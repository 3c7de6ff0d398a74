"""GET /api/jobs/{id}: the polling fallback, consistent with the last pushed event."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.core import validation
from server.core.errors import ApiError, Problem, not_found
from server.core.jobs import TransitionError
from server.core.search import job_search
from server.data import store
from server.infra.audit import audit, audit_foreign
from server.services import dispatch, live_views
from server.web.http.auth import require_user
from server.web.state import app_state

# Webhook deliveries listed with a job's timeline (each end makes one per URL).
MAX_DELIVERIES = 50


async def get_job(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    owner = principal.owner
    found = await state.db.read(store.get_job_positioned, job_id=request.path_params["job_id"],
                                user_id=owner)
    if found is None:
        raise not_found("job")
    view, position = found
    audit_foreign(principal, view.job.user_id, "job.read", f"job:{view.job.id}")
    await live_views.current(state.bus, [view])
    return JSONResponse(state.presenter.job(view.job, view.image, position))


async def cancel_job(request: Request) -> JSONResponse:
    """Cancel a queued, delayed, retrying or running job (owner or admin); 409 once final."""
    principal = await require_user(request)
    state = app_state(request)
    owner = principal.owner
    job_id = request.path_params["job_id"]
    try:
        view, deliveries = await state.db.write(
            store.end_with_deliveries, change=store.cancel_job, webhook=state.presenter.webhook,
            job_id=job_id, user_id=owner)
    except TransitionError:
        raise ApiError(Problem.CONFLICT, "conflict", "the job has already finished") from None
    if view is None:
        raise not_found("job")
    audit_foreign(principal, view.job.user_id, "job.cancel", f"job:{job_id}")
    # A worker running it stops at its next stage boundary and removes partial outputs;
    # a queued message is skipped when a worker picks it up.
    if view.image is not None:
        await asyncio.to_thread(state.storage.remove_renditions, view.image.id)
    job = await dispatch.announce(state, view, deliveries=deliveries)
    return JSONResponse({"job": job}, status_code=202)


async def list_jobs(request: Request) -> JSONResponse:
    """A page of the caller's jobs (an admin's: everyone's) that match the search
    (``server.core.search``), newest first."""
    principal = await require_user(request)
    state = app_state(request)
    limit, before = validation.page(request.query_params,
                                    max_digits=state.settings.max_number_digits)
    search = job_search(request.query_params)
    if search.user not in (None, principal.user_id) and not principal.is_admin:
        raise ApiError(Problem.FORBIDDEN, "forbidden", "only an admin may search other users' jobs")
    views = await live_views.current(state.bus, await state.db.read(
        store.list_jobs, user_id=principal.owner, limit=limit, before=before, search=search))
    if principal.is_admin:
        audit(principal.user_id, "jobs.list", "jobs of all users",
              f"{len(views)} items, {search.described()}")
    return JSONResponse({
        "items": [state.presenter.job(v.job, v.image) for v in views],
        "next_before": views[-1].job.id if len(views) == limit else None,
    })


async def job_timeline(request: Request) -> JSONResponse:
    """The job with its payload, traceback and every stored change (owner or admin)."""
    principal = await require_user(request)
    state = app_state(request)
    job_id = request.path_params["job_id"]
    view = await state.db.read(store.get_job, job_id=job_id, user_id=principal.owner)
    if view is None:
        raise not_found("job")
    audit_foreign(principal, view.job.user_id, "job.timeline", f"job:{job_id}")
    await live_views.current(state.bus, [view])
    records = await state.db.read(store.job_timeline, job_id=job_id)
    deliveries = await state.db.read(store.deliveries_of, job_id=job_id, limit=MAX_DELIVERIES)
    return JSONResponse(state.presenter.timeline(view, records, deliveries,
                                                 workers=principal.is_admin))


async def retry_job(request: Request) -> JSONResponse:
    """The owner runs their failed job again (same id, fresh attempts): 202 ``{"job"}``."""
    principal = await require_user(request)
    state = app_state(request)
    job_id = request.path_params["job_id"]
    job = await dispatch.retry_failed(state, job_id, user_id=principal.owner,
                                      dead_letters_only=False,
                                      retryable_only=not principal.is_admin)
    if principal.is_admin:
        view = await state.db.read(store.get_job, job_id=job_id, user_id=None)
        if view is not None:
            audit_foreign(principal, view.job.user_id, "job.retry", f"job:{job_id}")
    return JSONResponse({"job": job}, status_code=202)



routes = [
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/{job_id}/timeline", job_timeline, methods=["GET"]),
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/api/jobs/{job_id}/retry", retry_job, methods=["POST"]),
]
