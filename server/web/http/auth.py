"""Bearer tokens: verify, and require a user or an admin (minted by ``core.signing``)."""

from __future__ import annotations

import hmac
import time

import sqlalchemy.exc
from starlette.requests import Request

from server.core.errors import ApiError, Problem
from server.core.principal import Principal
from server.core.signing import hash_token
from server.core.token_cache import KnownToken, TokenCache
from server.data import store
from server.data.db import Database
from server.infra import logs
from server.web.state import app_state


async def authenticate(db: Database, token: str | None, admin_token: str,
                       cache: TokenCache | None = None) -> Principal | None:
    """The principal behind a token, or None for a missing, unknown or revoked one.

    Admin rights come from the user's ``is_admin`` (``darkroom admin create-token``) or
    from matching ADMIN_TOKEN *now*: rotating or unsetting it revokes them at once,
    whatever was stored when the old token was first used. ``cache``: the web process's
    ``TokenCache``, which spares most requests the token's read (``core.token_cache``).
    """
    if not token:
        return None
    token_hash = hash_token(token)
    env_token = bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())
    known = cache.get(token_hash, time.monotonic()) if cache is not None else None
    if known is None:
        since = cache.generation if cache is not None else 0
        known = await _read_token(db, token_hash, ensure=env_token)
        if known is None:
            return None
        if cache is not None:
            cache.put(token_hash, known, time.monotonic(), since=since)
    if env_token:
        return Principal(known.user_id, True, known.token_id, env_token=True)
    return Principal(known.user_id, known.is_admin, known.token_id)


async def _read_token(db: Database, token_hash: str, *, ensure: bool) -> KnownToken | None:
    """The token's row; ``ensure``: ADMIN_TOKEN's, whose user is made on its first use."""
    found = await db.read(store.user_by_token_hash, token_hash=token_hash)
    if found is None and ensure:
        try:
            found = await db.write(store.ensure_user, token_hash=token_hash)
        except sqlalchemy.exc.IntegrityError:  # another request made it a moment ago
            found = await db.read(store.user_by_token_hash, token_hash=token_hash)
    if found is None:
        return None
    user, row = found
    return KnownToken(user.id, user.is_admin, row.id)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_user(request: Request) -> Principal:
    """The caller, or a 401 JSON error."""
    token = bearer_token(request)
    state = app_state(request)
    principal = await authenticate(state.db, token, state.settings.admin_token, state.tokens)
    if principal is None:
        message = "missing bearer token" if token is None else "invalid bearer token"
        raise ApiError(Problem.UNAUTHENTICATED, "unauthorized", message)
    # Every later line of this request names the caller, and the job it is about if any.
    logs.bind(user_id=principal.user_id, job_id=request.path_params.get("job_id"))
    return principal


async def require_admin(request: Request) -> Principal:
    """The caller if they are an admin; 401 or 403 otherwise."""
    principal = await require_user(request)
    if not principal.is_admin:
        raise ApiError(Problem.FORBIDDEN, "forbidden", "admin token required")
    return principal
