"""Job search: the filters of ``GET /api/jobs`` and ``GET /api/dlq``, checked, free of I/O.

Every filter is optional and they combine with AND. Each text has a length cap, so a
search costs the database what an index or one bounded scan costs, never more.

- ``id``: a whole id, or its start (a prefix: an index range), or the short id the
  dashboard shows (its last ``SHORT_ID_CHARS`` characters, or the first 6 or 7 of those;
  they are random, while an id's start is its creation time, alike for jobs made the
  same minute).
- ``type``, ``queue``, ``user``: exact. ``queue`` also takes a base queue name for its
  whole family (``images`` matches ``images`` and ``images.high``).
- ``state``: one of COUNTED_STATES (``delayed``: queued, its run_at ahead).
- ``filename``, ``error``: case-insensitive "contains" (the error's type or message).
- ``sha256``: the content hash or its start (at least ``MIN_HASH_PREFIX`` hex digits).
- ``from``, ``to``: creation time, ISO-8601 with a timezone; ``from`` inclusive, ``to``
  exclusive. Ids start with their creation time in milliseconds (``new_id``), so a time
  range is an id range: it uses the primary key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime

from server.core.errors import ApiError, Problem
from server.core.queue_figures import COUNTED_STATES

ID_CHARS = 32
TIME_CHARS = 12  # the id's first characters: its creation time in ms, hex
SHORT_ID_CHARS = 8
MIN_SHORT_ID = 6  # an id filter of 6 to SHORT_ID_CHARS digits also matches short ids
MIN_HASH_PREFIX = 6
MAX_NAME_CHARS = 64  # type, queue, user (as the columns hold them)
MAX_TEXT_CHARS = 200  # filename, error
_HEX = re.compile(r"[0-9a-f]+")
_NAME = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class JobSearch:
    """What to find; None leaves a filter out."""

    id: str | None = None
    type: str | None = None
    state: str | None = None
    queue: str | None = None
    user: str | None = None
    filename: str | None = None
    sha256: str | None = None
    error: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def id_range(self) -> tuple[str | None, str | None]:
        """Bounds on the id (``low <= id < high``) from the time range."""
        low = None if self.created_from is None else time_id(self.created_from)
        high = None if self.created_to is None else time_id(self.created_to)
        return low, high

    def described(self) -> str:
        """The filters given, for the audit log: ``state=failed, type=image.process``."""
        given = [(f.name, getattr(self, f.name)) for f in fields(self)]
        return ", ".join(f"{name}={value}" for name, value in given if value is not None) or "*"


# No filter at all: every job (the default of the store's searches).
EVERYTHING = JobSearch()


def time_id(when: datetime) -> str:
    """The smallest id made at ``when`` (ms): ids made then or later sort at or after it."""
    ms = max(0, int(when.timestamp() * 1000))
    return f"{ms:0{TIME_CHARS}x}"


def short_id(job_id: str) -> str:
    """What the dashboard shows of an id: its random end."""
    return job_id[-SHORT_ID_CHARS:]


def job_search(query: Mapping[str, str], *, states: tuple[str, ...] = COUNTED_STATES
               ) -> JobSearch:
    """The filters in a list request's query string; 400 for a malformed one."""
    created_from = _time(query, "from")
    created_to = _time(query, "to")
    if created_from and created_to and created_from >= created_to:
        raise _invalid("from must be before to")
    state = _text(query, "state", MAX_NAME_CHARS)
    if state is not None and state not in states:
        raise ApiError(Problem.INVALID, "bad_request", f"unknown state {state!r}")
    return JobSearch(
        id=_hex(query, "id", 1, ID_CHARS),
        type=_name(query, "type"),
        state=state,
        queue=_name(query, "queue"),
        user=_name(query, "user"),
        filename=_text(query, "filename", MAX_TEXT_CHARS),
        sha256=_hex(query, "sha256", MIN_HASH_PREFIX, 64),
        error=_text(query, "error", MAX_TEXT_CHARS),
        created_from=created_from,
        created_to=created_to,
    )


def _invalid(message: str) -> ApiError:
    return ApiError(Problem.INVALID, "invalid_filter", message)


def _text(query: Mapping[str, str], name: str, cap: int) -> str | None:
    value = (query.get(name) or "").strip()
    if not value:
        return None
    if len(value) > cap:
        raise _invalid(f"{name} is over {cap} characters")
    if _CONTROL.search(value):  # stored filenames have none; the audit line must get none
        raise _invalid(f"{name} must not contain control characters")
    return value


def _name(query: Mapping[str, str], name: str) -> str | None:
    value = _text(query, name, MAX_NAME_CHARS)
    if value is not None and not _NAME.fullmatch(value):
        raise _invalid(f"{name} must be printable characters without spaces")
    return value


def _hex(query: Mapping[str, str], name: str, least: int, most: int) -> str | None:
    value = _text(query, name, most)
    if value is None:
        return None
    value = value.lower()
    if not _HEX.fullmatch(value) or len(value) < least:
        raise _invalid(f"{name} must be {least} to {most} hexadecimal digits")
    return value


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = _text(query, name, 40)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"{name} must be an ISO-8601 time, e.g. 2026-12-06T09:30:00Z") from None
    if when.tzinfo is None:
        raise _invalid(f"{name} needs a timezone (e.g. Z)")
    return when
