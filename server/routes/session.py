"""POST /api/session: create a user and hand back its bearer token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server import store
from server.auth import hash_token, mint_token


async def create_session(request: Request) -> JSONResponse:
    token = mint_token()
    user = await request.app.state.db.write(store.create_user, token_hash=hash_token(token))
    return JSONResponse({"token": token, "user_id": user.id}, status_code=201)


routes = [Route("/api/session", create_session, methods=["POST"])]
