"""Generic tasks: submit a job of a registered type, list the types."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server import dispatch, store, validation
from server.auth import require_user
from server.error_handlers import error_response
from server.errors import ApiError
from server.jobs import queue_for
from server.models import utcnow
from server.routes import queues


async def submit_task(request: Request) -> JSONResponse:
    principal = await require_user(request)
    state = request.app.state
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    now = utcnow()
    spec = validation.task_request(body, now=now)
    if isinstance(body, dict) and body.get("repeat") is not None:
        raise ApiError(400, "not_supported", "repeating schedules are not available yet")
    task_type = state.task_types.get(spec.task_type)
    if task_type is None or not task_type.public:
        raise ApiError(400, "unknown_task_type", f"no task type named {spec.task_type!r}")
    errors = validation.payload_errors(task_type.schema, spec.payload)
    if errors:
        return error_response(422, "invalid_payload",
                              f"the payload does not fit {spec.task_type}", fields=errors)
    max_attempts = (spec.max_attempts or task_type.max_attempts
                    or state.settings.retry_max_attempts)
    image_id = spec.payload.get(task_type.image_field) if task_type.image_field else None
    view = await state.db.write(
        store.create_task_job, user_id=principal.user_id, task_type=task_type.name,
        queue=queue_for(task_type.queue, spec.priority), payload=spec.payload,
        max_attempts=max_attempts,
        priority=spec.priority,
        run_at=now + timedelta(seconds=spec.delay_s) if spec.delay_s else None,
        image_id=image_id, stage=await queues.waiting_stage(state, task_type.queue),
    )
    if view is None:
        return error_response(422, "invalid_payload", "no such image",
                              fields={f"payload.{task_type.image_field}": "no such image"})

    async def undo() -> None:
        await state.db.write(store.delete_job, job_id=view.job.id)

    await dispatch.enqueue(state, view, delay_s=spec.delay_s, undo=undo)
    return JSONResponse({"job": await dispatch.announce(state, view)}, status_code=202)


async def list_task_types(request: Request) -> JSONResponse:
    await require_user(request)
    types: list[dict[str, Any]] = [t.describe() for t in request.app.state.task_types.values()
                                   if t.public]
    return JSONResponse({"types": types})


routes = [
    Route("/api/tasks", submit_task, methods=["POST"]),
    Route("/api/tasks/types", list_task_types, methods=["GET"]),
]
