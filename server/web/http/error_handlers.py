"""The one place that turns errors into the contract's JSON error shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
import sqlalchemy.exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from server.core.errors import ApiError, Problem

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# Each kind of failure's HTTP status: the one place the core's errors meet HTTP.
STATUS: dict[Problem, int] = {
    Problem.INVALID: 400,
    Problem.UNAUTHENTICATED: 401,
    Problem.FORBIDDEN: 403,
    Problem.NOT_FOUND: 404,
    Problem.CONFLICT: 409,
    Problem.TOO_LARGE: 413,
    Problem.UNSUPPORTED: 415,
    Problem.UNPROCESSABLE: 422,
    Problem.RATE_LIMITED: 429,
    Problem.UNAVAILABLE: 503,
}


def status_of(exc: ApiError) -> int:
    return STATUS[exc.kind]


def api_error_headers(exc: ApiError) -> dict[str, str] | None:
    """Retry-After where waiting helps; how to authenticate where credentials failed."""
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.kind is Problem.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    return headers or None


async def handle_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(status_of(exc), exc.code, exc.message, api_error_headers(exc))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return error_response(exc.status_code, code, str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """Every method served at this path.

    Starlette answers 405 with the methods of the first route whose path matches, but
    a path here has one route per method (GET and DELETE /api/dlq are two routes).
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods \
                and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def handle_database_down(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "database_unavailable",
                          "the database is unavailable; try again shortly",
                          headers={"Retry-After": "5"})


async def handle_unstorable_value(request: Request, exc: Exception) -> Response:
    # PostgreSQL refuses some values SQLite takes: NUL in text (an id, a cursor, a
    # filter), a number out of a column's range. They come from the request.
    log.warning("database refused a value on %s %s: %s", request.method, request.url.path,
                getattr(exc, "orig", exc))
    return error_response(400, "invalid_value",
                          "a value in the request cannot be stored or searched for "
                          "(a NUL character, or a number out of range)")


async def handle_redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "queue_unavailable",
                          "the job queue is unavailable; try again shortly",
                          headers={"Retry-After": "5"})


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Sent from outside every middleware (Starlette's ServerErrorMiddleware), so the
    # SecurityHeaders middleware never sees this response.
    return error_response(500, "internal_error", "internal server error",
                          headers={"X-Content-Type-Options": "nosniff"})


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    sqlalchemy.exc.DataError: handle_unstorable_value,
    sqlalchemy.exc.OperationalError: handle_database_down,
    sqlalchemy.exc.InterfaceError: handle_database_down,
    redis.ConnectionError: handle_redis_down,
    redis.TimeoutError: handle_redis_down,
    Exception: handle_unexpected,
}
