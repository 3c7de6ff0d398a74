"""Validation of request input: plain values in, typed values or ApiError out (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.errors import ApiError

PRIORITIES = ("high", "normal", "low")
# Dramatiq's Redis broker refuses delays of 7 days or more.
MAX_DELAY_S = 7 * 24 * 3600 - 60
DEFAULT_PAGE = 50
MAX_PAGE = 200


@dataclass(frozen=True)
class UploadOptions:
    priority: str = "normal"
    delay_s: int = 0


def upload_options(fields: Mapping[str, str]) -> UploadOptions:
    """The optional ``priority`` and ``delay`` form fields of an upload."""
    priority = (fields.get("priority") or "normal").strip().lower()
    if priority not in PRIORITIES:
        raise ApiError(400, "invalid_priority", f"priority must be one of {', '.join(PRIORITIES)}")
    raw_delay = (fields.get("delay") or "0").strip()
    try:
        delay = int(raw_delay)
    except ValueError:
        raise ApiError(400, "invalid_delay", "delay must be a whole number of seconds") from None
    if not 0 <= delay <= MAX_DELAY_S:
        raise ApiError(400, "invalid_delay", f"delay must be between 0 and {MAX_DELAY_S} seconds")
    return UploadOptions(priority=priority, delay_s=delay)


def page(query: Mapping[str, str]) -> tuple[int, str | None]:
    """``limit`` (1..200, default 50) and the ``before`` cursor of a list request."""
    raw = query.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_limit", f"limit must be between 1 and {MAX_PAGE}")
    before = query.get("before") or None
    return int(raw), before
