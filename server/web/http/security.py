"""Cross-cutting HTTP protections: security headers on every response, the CORS allowlist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.infra.settings import Settings
from server.web.http.error_handlers import error_response
from server.web.http.headers import NOSNIFF, page_headers

CORS_METHODS = ("GET", "HEAD", "POST", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type")
CORS_EXPOSED = ("Retry-After", "X-Request-ID")


class SecurityHeaders:
    """``nosniff`` on every response; on HTML ones also the page policy (CSP, framing).

    Keyed on the response's Content-Type rather than on routes, so any page added
    later (API docs, say) gets the same policy without being listed anywhere.
    """

    def __init__(self, app: ASGIApp, *, public_url: str = "") -> None:
        self.app = app
        self.page_headers = page_headers(public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[NOSNIFF[0]] = NOSNIFF[1]
                if headers.get("content-type", "").lower().startswith("text/html"):
                    # One policy for every page: a route cannot loosen it.
                    headers.update(self.page_headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AllowlistCORS(CORSMiddleware):
    """Starlette's CORS middleware, refusing a preflight with our JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode()
        headers = {k: v for k, v in response.headers.items()
                   if k.lower().startswith(("access-control-", "vary"))}
        return error_response(400, "cors_refused", refused, headers=headers)


def http_middleware(settings: Settings) -> list[Middleware]:
    """The HTTP app's middleware: security headers outside, CORS (when configured) inside.

    Without CORS_ORIGINS there is no CORS middleware at all: browsers then allow only
    same-origin calls, which is what the bundled pages make. Credentials stay off, since
    the API authenticates with a bearer token, never a cookie.
    """
    stack = [Middleware(SecurityHeaders, public_url=settings.public_url)]
    if settings.cors_origins:
        origins = ["*"] if "*" in settings.cors_origins else list(settings.cors_origins)
        stack.append(Middleware(AllowlistCORS, allow_origins=origins,
                                allow_methods=CORS_METHODS, allow_headers=CORS_HEADERS,
                                expose_headers=CORS_EXPOSED, allow_credentials=False))
    return stack


def _own_origins(environ: dict[str, Any]) -> set[str]:
    """The origins the request itself was made to (as engine.io computes same-origin)."""
    scheme, host = environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST")
    if not host:
        return set()
    own = {f"{scheme}://{host}"}
    forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO")
    forwarded_host = environ.get("HTTP_X_FORWARDED_HOST")
    if forwarded_proto or forwarded_host:
        proto = (forwarded_proto or scheme).split(",")[0].strip()
        own.add(f"{proto}://{(forwarded_host or host).split(',')[0].strip()}")
    return own


def socketio_origins(settings: Settings) -> str | Callable[[str, dict[str, Any]], bool] | None:
    """engine.io's ``cors_allowed_origins``: the page's own origin plus CORS_ORIGINS.

    None is engine.io's same-origin check. A plain list would drop the page's own origin
    (engine.io then allows only the list), so a list becomes a check that keeps it.
    """
    if not settings.cors_origins:
        return None
    if "*" in settings.cors_origins:
        return "*"
    allowed = frozenset(settings.cors_origins)

    def allow(origin: str, environ: dict[str, Any]) -> bool:
        return origin in allowed or origin in _own_origins(environ)

    return allow
