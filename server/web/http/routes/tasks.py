"""Generic tasks: submit a job of a registered type, list the types."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core import cron, payloads, validation
from server.core.errors import ApiError, Problem, not_found
from server.data import store
from server.data.models import utcnow
from server.infra import ratelimit
from server.services import outbound, presenter, submit
from server.web.http.auth import require_user
from server.web.http.error_handlers import error_response
from server.web.http.uploads import read_json
from server.web.state import app_state


async def submit_task(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = app_state(request)
    await ratelimit.check_tasks(state, principal.user_id)
    await outbound.check_backlog(state, principal.user_id)
    body = await read_json(request)
    now = utcnow()
    spec = validation.task_request(body, now=now,
                                   max_payload_bytes=state.settings.max_task_payload_bytes)
    task_type = state.task_types.get(spec.task_type)
    if task_type is None or not task_type.public:
        raise ApiError(Problem.INVALID, "unknown_task_type",
                       f"no task type named {spec.task_type!r}")
    errors = (payloads.payload_errors(task_type.schema, spec.payload)
              or outbound.payload_errors(task_type.name, spec.payload))
    if errors:
        return error_response(422, "invalid_payload",
                              f"the payload does not fit {spec.task_type}", fields=errors)
    max_attempts = validation.attempts_for(spec.max_attempts, task_type.name,
                                           task_type.max_attempts,
                                           default=state.settings.retry_max_attempts)
    image_id = spec.payload.get(task_type.image_field) if task_type.image_field else None
    no_image = error_response(422, "invalid_payload", "no such image",
                              fields={f"payload.{task_type.image_field}": "no such image"})
    repeat = body.get("repeat") if isinstance(body, dict) else None
    await outbound.check_task(state, principal, task_type.name, spec.payload,
                              schedule=repeat is not None)
    if repeat is not None:
        if image_id is not None and await state.db.read(
                store.get_image, image_id=image_id, user_id=principal.user_id) is None:
            return no_image
        if body.get("delay") is not None or body.get("run_at") is not None:
            raise ApiError(Problem.INVALID, "bad_request",
                           "delay and run_at do not apply to a schedule")
        if spec.priority == "high" and not principal.is_admin:
            raise ApiError(Problem.FORBIDDEN, "priority_not_allowed",
                           "a high-priority schedule needs an admin token: each firing would "
                           "go ahead of everyone's work")
        return await _create_schedule(request, principal.user_id, task_type.name, spec,
                                      repeat, max_attempts)
    job = await submit.submit_task(state, principal, task_type, spec,
                                   max_attempts=max_attempts, image_id=image_id, now=now)
    if job is None:
        return no_image
    return JSONResponse({"job": job}, status_code=202)


async def _create_schedule(request: Request, user_id: str, task_type: str,
                           spec: validation.TaskRequest, repeat: Any,
                           max_attempts: int) -> JSONResponse:
    """``repeat: {cron, timezone}``: a schedule whose firings each create a job."""
    settings = app_state(request).settings
    expression, timezone = validation.repeat_fields(repeat, max_chars=settings.max_cron_chars)
    next_run_at = cron.next_run(expression, timezone, utcnow())
    cron.check_interval(expression, settings.schedule_min_interval_s)
    schedule = await app_state(request).db.write(
        store.create_schedule, user_id=user_id, task_type=task_type, payload=spec.payload,
        cron=expression, timezone=timezone, priority=spec.priority, max_attempts=max_attempts,
        next_run_at=next_run_at, max_per_user=settings.max_schedules_per_user)
    if schedule is None:
        raise ApiError(Problem.CONFLICT, "too_many_schedules",
                       f"at most {settings.max_schedules_per_user} schedules per user")
    return JSONResponse({"schedule": presenter.schedule(schedule)}, status_code=201)


async def list_schedules(request: Request) -> JSONResponse:
    principal = await require_user(request)
    schedules = await app_state(request).db.read(store.list_schedules,
                                                user_id=principal.user_id)
    return JSONResponse({"items": [presenter.schedule(s) for s in schedules]})


async def delete_schedule(request: Request) -> Response:
    principal = await require_user(request)
    if not await app_state(request).db.write(store.delete_schedule, user_id=principal.user_id,
                                            schedule_id=request.path_params["schedule_id"]):
        raise not_found("schedule")
    return Response(status_code=204)


async def list_task_types(request: Request) -> JSONResponse:
    await require_user(request)
    return JSONResponse(presenter.task_types(
        t for t in app_state(request).task_types.values() if t.public))


routes = [
    Route("/api/tasks", submit_task, methods=["POST"]),
    Route("/api/schedules", list_schedules, methods=["GET"]),
    Route("/api/schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
    Route("/api/tasks/types", list_task_types, methods=["GET"]),
]
