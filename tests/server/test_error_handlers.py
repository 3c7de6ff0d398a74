"""Errors as the app answers them, before any handler runs (no lifespan needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.infra.settings import Settings
from server.web.app import create_app


@pytest.fixture
async def asgi(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"})
    transport = httpx.ASGITransport(app=create_app(settings).app.other_asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/api/dlq", "DELETE, GET, HEAD"),
    ("PUT", "/api/images", "GET, HEAD, POST"),
    ("PATCH", "/api/images/abc", "DELETE, GET, HEAD"),
    ("GET", "/api/tasks", "POST"),
    ("POST", "/api/dlq/abc", "DELETE"),
])
async def test_405_lists_every_method_of_the_path(asgi: httpx.AsyncClient, method: str,
                                                  path: str, allow: str) -> None:
    answer = await asgi.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json() == {"error": {"code": "method_not_allowed",
                                       "message": "Method Not Allowed"}}


async def test_an_unknown_path_is_a_json_404(asgi: httpx.AsyncClient) -> None:
    answer = await asgi.get("/api/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
