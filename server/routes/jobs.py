"""GET /api/jobs/{id}: the polling fallback, consistent with the last pushed event."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server import store
from server.auth import require_user
from server.errors import not_found


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


routes = [Route("/api/jobs/{job_id}", get_job, methods=["GET"])]
