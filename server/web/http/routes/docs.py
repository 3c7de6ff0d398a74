"""The API's own description: GET /openapi.json, and GET /docs that renders it."""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from server.web.client_files import WEB_DIR
from server.web.http import openapi


@functools.cache
def _document_bytes() -> bytes:
    return json.dumps(openapi.document(), separators=(",", ":")).encode()


async def openapi_json(_request: Request) -> Response:
    return Response(_document_bytes(), media_type="application/json",
                    headers={"Cache-Control": "no-cache"})


async def docs(_request: Request) -> FileResponse:
    """Swagger UI (vendored under web/vendor/swagger-ui) showing /openapi.json."""
    return FileResponse(WEB_DIR / "docs.html", headers={"Cache-Control": "no-cache"})


routes: list[Any] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
