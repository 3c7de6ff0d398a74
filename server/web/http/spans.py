"""A span per HTTP request, continuing the caller's trace (installed only when tracing is on)."""

from __future__ import annotations

from typing import Any

from server.infra import tracing

Scope = dict[str, Any]

# The W3C Trace Context headers a caller's trace comes in.
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# The browser client's files: a span each would only bury the API's.
_UNTRACED_PREFIXES = ("/static/",)


def _route_path(scope: Scope) -> str | None:
    """The path template of the route Starlette matched (``/api/jobs/{job_id}``), if any."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class RequestSpans:
    """ASGI middleware: a SERVER span named ``METHOD route`` per HTTP request.

    An incoming ``traceparent`` (and ``tracestate``) is continued, not replaced: the span
    is its child. The route is known once Starlette has routed the request (it sets
    ``scope["route"]``), so the span is named when the answer is done. Socket.IO never
    reaches it (the Socket.IO app in front answers its own path); static files are skipped.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(_UNTRACED_PREFIXES):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope.get("headers", ()) if name.lower() in _TRACE_HEADERS}
        status: int | None = None
        with tracing.span(method, kind="server", parent=carrier, attributes={
                "http.request.method": method, "url.path": path,
                "url.scheme": str(scope.get("scheme", "http"))}) as span:

            async def send_with_status(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_with_status)
            finally:
                if span is not None:
                    route = _route_path(scope)
                    if route is not None:
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                    if status is not None:
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            tracing.fail(span, f"HTTP {status}")
