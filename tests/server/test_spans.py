"""``server.web.http.spans.RequestSpans`` around a small Starlette app of the test's own:
a SERVER span per request, named by its route, continuing the caller's ``traceparent``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.web.http.spans import RequestSpans
from tests.recorded_spans import Recorded, recording

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    yield from recording(monkeypatch)


async def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def _unavailable(request: Request) -> PlainTextResponse:
    return PlainTextResponse("later", status_code=503)


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


@pytest.fixture
def client(tmp_path: Path) -> httpx.AsyncClient:
    (tmp_path / "app.js").write_text("//")
    app = Starlette(routes=[Route("/items/{item_id}", _item), Route("/busy", _unavailable),
                            Route("/boom", _boom, methods=["POST"]),
                            Mount("/static", app=StaticFiles(directory=tmp_path))])
    transport = httpx.ASGITransport(app=RequestSpans(app), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_a_request_is_a_server_span_named_by_its_route(
        recorded: Recorded, client: httpx.AsyncClient) -> None:
    async with client:
        answer = await client.get("/items/42?x=1", headers={
            "traceparent": f"00-{TRACE_ID}-{CALLER}-01", "tracestate": "vendor=1"})
    assert answer.text == "42"
    span = recorded.named("GET /items/{item_id}")
    assert span.kind == SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET", "url.path": "/items/42", "url.scheme": "http",
        "http.route": "/items/{item_id}", "http.response.status_code": 200}
    # Continued, not replaced: same trace, the caller's span its parent, its state kept.
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER
    assert span.context.trace_state.get("vendor") == "1"
    assert span.status.status_code == StatusCode.UNSET


async def test_without_traceparent_a_request_starts_a_trace(
        recorded: Recorded, client: httpx.AsyncClient) -> None:
    async with client:
        await client.get("/items/1", headers={"traceparent": "garbage"})
        await client.get("/nowhere")
    first, unknown = recorded.spans()
    assert first.parent is None and first.name == "GET /items/{item_id}"
    # No route matched: the method alone names it; a 4xx is the caller's error, not ours.
    assert unknown.name == "GET" and unknown.attributes is not None
    assert unknown.attributes["http.response.status_code"] == 404
    assert "http.route" not in unknown.attributes
    assert unknown.status.status_code == StatusCode.UNSET


async def test_server_errors_fail_the_span(recorded: Recorded,
                                           client: httpx.AsyncClient) -> None:
    async with client:
        assert (await client.get("/busy")).status_code == 503
        assert (await client.post("/boom")).status_code == 500
    busy, boom = recorded.spans()
    assert busy.status.status_code == StatusCode.ERROR and busy.status.description == "HTTP 503"
    assert boom.name == "POST /boom" and boom.status.status_code == StatusCode.ERROR
    assert boom.attributes is not None and boom.attributes["http.response.status_code"] == 500
    assert [e.name for e in boom.events] == ["exception"]


async def test_static_files_are_not_traced(recorded: Recorded,
                                           client: httpx.AsyncClient) -> None:
    async with client:
        assert (await client.get("/static/app.js")).status_code == 200
    assert recorded.spans() == []
