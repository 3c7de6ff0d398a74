"""Webhooks: URLs a user registers to receive every final state of their jobs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core import payloads, signing

from server.data import store
from server.web.http.auth import require_user
from server.core.errors import ApiError, Problem, not_found
from server.services.presenter import webhook_entry
from server.web.http.uploads import read_json
from server.web.state import app_state

_SCHEMA = payloads.checked({
    "type": "object", "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2000}},
    "required": ["url"], "additionalProperties": False})


def _signing_secret(request: Request, user_id: str) -> str | None:
    """The key this user's deliveries are signed with (null when signing is off)."""
    secret = app_state(request).settings.webhook_secret
    return signing.webhook_key(secret, user_id) if secret else None


async def create_webhook(request: Request) -> JSONResponse:
    principal = await require_user(request)
    body = await read_json(request)
    errors = payloads.payload_errors(_SCHEMA, body, path="body")
    if errors:
        raise ApiError(Problem.UNPROCESSABLE, "invalid_webhook", "; ".join(f"{k} {v}" for k, v in errors.items()))
    most = app_state(request).settings.max_webhooks_per_user
    hook = await app_state(request).db.write(store.create_webhook, user_id=principal.user_id,
                                            url=body["url"], max_per_user=most)
    if hook is None:
        raise ApiError(Problem.CONFLICT, "too_many_webhooks", f"at most {most} webhooks per user")
    return JSONResponse({"webhook": webhook_entry(hook),
                         "signing_secret": _signing_secret(request, principal.user_id)},
                        status_code=201)


async def list_webhooks(request: Request) -> JSONResponse:
    principal = await require_user(request)
    hooks = await app_state(request).db.read(store.list_webhooks, user_id=principal.user_id)
    return JSONResponse({"items": [webhook_entry(h) for h in hooks],
                         "signing_secret": _signing_secret(request, principal.user_id)})


async def delete_webhook(request: Request) -> Response:
    principal = await require_user(request)
    if not await app_state(request).db.write(store.delete_webhook, user_id=principal.user_id,
                                            webhook_id=request.path_params["webhook_id"]):
        raise not_found("webhook")
    return Response(status_code=204)


routes = [
    Route("/api/webhooks", create_webhook, methods=["POST"]),
    Route("/api/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
]
