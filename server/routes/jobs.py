"""GET /api/jobs/{id}: the polling fallback, consistent with the last pushed event."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server import dispatch, store
from server.auth import require_user
from server.errors import ApiError, not_found
from server.jobs import TransitionError


async def get_job(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = request.app.state
    owner = None if principal.is_admin else principal.user_id
    found = await state.db.read(store.get_job_positioned, job_id=request.path_params["job_id"],
                                user_id=owner)
    if found is None:
        raise not_found("job")
    view, position = found
    return JSONResponse(state.presenter.job(view.job, view.image, position))


async def cancel_job(request: Request) -> JSONResponse:
    """Cancel a queued, delayed, retrying or running job (owner or admin); 409 once final."""
    principal = await require_user(request)
    state = request.app.state
    owner = None if principal.is_admin else principal.user_id
    job_id = request.path_params["job_id"]
    try:
        view = await state.db.write(store.cancel_job, job_id=job_id, user_id=owner)
    except TransitionError:
        raise ApiError(409, "conflict", "the job has already finished") from None
    if view is None:
        raise not_found("job")
    # A worker running it stops at its next stage boundary and removes partial outputs;
    # a queued message is skipped when a worker picks it up.
    if view.image is not None:
        await asyncio.to_thread(state.storage.remove_renditions, view.image.id)
    event = state.presenter.event(view)
    await state.publish(event)
    await dispatch.notify_webhooks(state, view)
    return JSONResponse({"job": event.job}, status_code=202)


routes = [
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
