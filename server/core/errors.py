"""The error every layer raises for a client-facing failure (pure: no HTTP library).

``server.web.http.error_handlers`` is the one place that turns errors into the JSON shape.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error a client caused or should know about; carries status, code and message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_found(what: str) -> ApiError:
    """The 404 for a missing id (or one that belongs to someone else)."""
    return ApiError(404, "not_found", f"{what} not found")
