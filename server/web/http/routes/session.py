"""Sessions: ``POST /api/session`` makes a user and its token; ``DELETE`` revokes the token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core.client_address import limit_subject
from server.core.errors import ApiError, Problem
from server.core.events import TokenRevoked
from server.core.signing import hash_token, mint_token
from server.core.wire import responses as wire
from server.data import store
from server.infra import ratelimit
from server.services.presenter import builtins
from server.web.http.auth import require_user
from server.web.state import app_state


async def create_session(request: Request) -> JSONResponse:
    """A new anonymous user: free, so limited per client address (TRUSTED_PROXIES says
    which X-Forwarded-For entry that is; RATE_LIMIT_EXEMPT_ADDRESSES are not limited)."""
    state = app_state(request)
    settings = state.settings
    subject = limit_subject(request.scope, settings.trusted_proxies,
                            settings.rate_limit_exempt_addresses)
    if subject is not None:
        await ratelimit.check_sessions(state, subject)
    token = mint_token()
    user = await state.db.write(store.create_user, token_hash=hash_token(token))
    return JSONResponse(builtins(wire.Session(token=token, user_id=user.id)), status_code=201)


async def revoke_session(request: Request) -> Response:
    """Revoke the calling token: later calls with it get 401, its open sockets are closed."""
    principal = await require_user(request)
    if principal.env_token:
        raise ApiError(Problem.CONFLICT, "conflict",
                       "ADMIN_TOKEN comes from the environment; change or unset it there")
    state = app_state(request)
    await state.db.write(store.revoke_token, token_id=principal.token_id)
    state.tokens.forget(principal.token_id)  # the other web processes: by the event
    await state.publish(TokenRevoked(token_id=principal.token_id))
    return Response(status_code=204)


routes = [
    Route("/api/session", create_session, methods=["POST"]),
    Route("/api/session", revoke_session, methods=["DELETE"]),
]
