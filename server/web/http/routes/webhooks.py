"""Webhooks: URLs a user registers to receive every final state of their jobs."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core import payloads, signing
from server.core.errors import ApiError, Problem, not_found
from server.core.wire.requests import WebhookRequest
from server.data import store
from server.services import presenter
from server.web.http.auth import require_user
from server.web.http.uploads import read_json
from server.web.state import app_state

# The body's JSON Schema, from its declared shape: checked as task payloads are, for the
# same field errors ("body.url must be an http(s) URL"; format "uri" is ours, not msgspec's).
_SCHEMA = payloads.checked(msgspec.json.schema(WebhookRequest))


def _signing_secret(request: Request, user_id: str) -> str | None:
    """The key this user's deliveries are signed with (null when signing is off)."""
    secret = app_state(request).settings.webhook_secret
    return signing.webhook_key(secret, user_id) if secret else None


async def create_webhook(request: Request) -> JSONResponse:
    principal = await require_user(request)
    body = await read_json(request)
    errors = payloads.payload_errors(_SCHEMA, body, path="body")
    if errors:
        raise ApiError(Problem.UNPROCESSABLE, "invalid_webhook",
                       "; ".join(f"{k} {v}" for k, v in errors.items()))
    # It fits the schema, so it fits the Struct the schema came from.
    wanted = msgspec.convert(body, WebhookRequest)
    most = app_state(request).settings.max_webhooks_per_user
    hook = await app_state(request).db.write(store.create_webhook, user_id=principal.user_id,
                                            url=wanted.url, max_per_user=most)
    if hook is None:
        raise ApiError(Problem.CONFLICT, "too_many_webhooks", f"at most {most} webhooks per user")
    secret = _signing_secret(request, principal.user_id)
    return JSONResponse(presenter.webhook_created(hook, secret), status_code=201)


async def list_webhooks(request: Request) -> JSONResponse:
    principal = await require_user(request)
    hooks = await app_state(request).db.read(store.list_webhooks, user_id=principal.user_id)
    return JSONResponse(presenter.webhooks(hooks, _signing_secret(request, principal.user_id)))


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
