"""Request ids: take a sane ``X-Request-ID`` or make one, echo it, and log it on every line."""

from __future__ import annotations

import re
import uuid
from typing import Any

from server.infra import logs

HEADER = "x-request-id"
# Ids from proxies and clients are uuids, hex or base64-ish tokens: anything else (spaces,
# quotes, control characters, a kilobyte of text) is replaced, never logged.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")

Scope = dict[str, Any]


def request_id(raw: bytes | None) -> str:
    """The incoming id if it is sane, else a fresh one."""
    if raw:
        text = raw.decode("latin-1")
        if _SANE.fullmatch(text):
            return text
    return uuid.uuid4().hex


class RequestIds:
    """ASGI middleware (outermost, so that error pages and uvicorn's access line carry it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = next((value for name, value in scope.get("headers", ())
                         if name.lower() == HEADER.encode()), None)
        rid = request_id(incoming)
        # No reset: each request runs in a task of its own, and uvicorn logs the access
        # line in that task after the response has started.
        logs.bind(request_id=rid)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() != HEADER.encode()]
                headers.append((HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
