"""The error every layer raises for a client-facing failure (pure: no HTTP here).

An error says what kind of failure it is (``Problem``); ``server.web.http.error_handlers``
is the one place that turns a kind into an HTTP status and errors into the JSON shape.
"""

from __future__ import annotations

from enum import StrEnum


class Problem(StrEnum):
    """The kinds of failure a client is told about."""

    INVALID = "invalid"                  # the request is malformed
    UNAUTHENTICATED = "unauthenticated"  # no valid credentials
    FORBIDDEN = "forbidden"              # valid credentials, not allowed
    NOT_FOUND = "not_found"              # no such thing (or someone else's)
    CONFLICT = "conflict"                # the thing is not in a state that allows it
    TOO_LARGE = "too_large"              # over a size limit
    UNSUPPORTED = "unsupported"          # a type of content the service does not take
    UNPROCESSABLE = "unprocessable"      # well-formed, but its content cannot be used
    RATE_LIMITED = "rate_limited"        # over an allowance; try again later
    UNAVAILABLE = "unavailable"          # a part of the service is away; try again shortly


class ApiError(Exception):
    """An error a client caused or should know about: its kind, code and message, and when
    to try again (seconds) where waiting helps."""

    def __init__(self, kind: Problem, code: str, message: str, *,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def not_found(what: str) -> ApiError:
    """The error for a missing id (or one that belongs to someone else)."""
    return ApiError(Problem.NOT_FOUND, "not_found", f"{what} not found")
