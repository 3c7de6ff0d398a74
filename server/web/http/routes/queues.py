"""Queue control (admin): statistics, pause and resume, clean old finished jobs; the
worker processes and what their threads run."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.core import validation
from server.core.errors import ApiError, Problem, not_found
from server.core.wire import responses as wire
from server.core.wire.requests import DEFAULT_CLEAN_AGE_S
from server.data import store
from server.data.models import utcnow
from server.infra.audit import audit
from server.infra.charts import MAX_POINTS
from server.services import charts, queues, workers
from server.services.presenter import builtins
from server.web.http.auth import require_admin
from server.web.http.uploads import read_json
from server.web.state import app_state


def _queue(request: Request) -> str:
    name = str(request.path_params["name"])
    if name not in queues.queue_names(app_state(request)):
        raise not_found("queue")
    return name


async def list_queues(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    report = await queues.queue_report(app_state(request))
    audit(admin.user_id, "queues.list", "queues")
    return JSONResponse(report)


async def list_workers(request: Request) -> JSONResponse:
    """Every worker process that reported lately (``server.services.workers``)."""
    admin = await require_admin(request)
    found = await workers.roster(app_state(request))
    audit(admin.user_id, "workers.list", "workers")
    return JSONResponse(builtins(wire.WorkerRoster(workers=found)))


async def list_charts(request: Request) -> JSONResponse:
    """The charts' points of the last ``minutes`` (60 by default, at most a day), and the
    minute still running so far."""
    admin = await require_admin(request)
    state = app_state(request)
    minutes = validation.whole_number(request.query_params.get("minutes", "60"), "minutes",
                                      state.settings.max_number_digits)
    if minutes is None or not 1 <= minutes <= MAX_POINTS:
        raise ApiError(Problem.INVALID, "bad_request",
                       f"minutes must be between 1 and {MAX_POINTS}")
    found = await charts.window(state, minutes)
    audit(admin.user_id, "charts.read", "charts", f"{minutes} minutes")
    return JSONResponse(builtins(wire.Charts(points=found)))


async def _set_paused(request: Request, paused: bool) -> JSONResponse:
    admin = await require_admin(request)
    name = _queue(request)
    state = app_state(request)
    await queues.set_paused(state, name, paused)
    state.stats.poke()  # every admin's page shows the switch
    audit(admin.user_id, "queue.pause" if paused else "queue.resume", f"queue:{name}")
    return JSONResponse(builtins(wire.QueueState(name=name, paused=paused)))


async def pause(request: Request) -> JSONResponse:
    """Waiting jobs stay queued; running ones finish."""
    return await _set_paused(request, True)


async def resume(request: Request) -> JSONResponse:
    return await _set_paused(request, False)


async def clean(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    state = app_state(request)
    name = _queue(request)
    age_s = validation.clean_age(await read_json(request, empty={}),
                                 request.query_params.get("older_than_s"),
                                 default=DEFAULT_CLEAN_AGE_S,
                                 max_digits=state.settings.max_number_digits)
    removed = await state.db.write(store.clean_finished, base=name,
                                   finished_before=utcnow() - timedelta(seconds=age_s))
    audit(admin.user_id, "queue.clean", f"queue:{name}",
          f"{removed} removed, older than {age_s} s")
    return JSONResponse(builtins(wire.QueueCleaned(name=name, removed=removed)))


routes = [
    Route("/api/queues", list_queues, methods=["GET"]),
    Route("/api/workers", list_workers, methods=["GET"]),
    Route("/api/charts", list_charts, methods=["GET"]),
    Route("/api/queues/{name}/pause", pause, methods=["POST"]),
    Route("/api/queues/{name}/resume", resume, methods=["POST"]),
    Route("/api/queues/{name}/clean", clean, methods=["POST"]),
]
