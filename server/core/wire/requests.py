"""The JSON bodies the API takes, with their limits (pure).

``server.core.validation`` checks input against these field types, one field at a time
in the order declared here: that order says which error a body with several gets.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from msgspec import Meta, Struct

from server.core.wire.fields import Priority

PRIORITIES: tuple[str, ...] = get_args(Priority)
# Dramatiq's Redis broker refuses delays of 7 days or more.
MAX_DELAY_S = 7 * 24 * 3600 - 60
MAX_ATTEMPTS_LIMIT = 20
# Far enough back for any clean-up; further would underflow datetime (year 1).
MAX_CLEAN_AGE_S = 100 * 365 * 24 * 3600
DEFAULT_CLEAN_AGE_S = 3600

# JSON Schema's integer takes 3.0 and msgspec's int does not: validation turns whole
# numbers into ints before it checks an integer field.


class Repeat(Struct, frozen=True, kw_only=True):
    """Makes a task a schedule; any other field is ignored."""

    cron: Annotated[str, Meta(description="5-field cron expression.")]
    timezone: Annotated[str, Meta(description="IANA name; UTC when absent.")] | None = None


class TaskRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Give at most one of delay and run_at, and neither with repeat. Any other field is
    422 unknown_field; a payload over MAX_TASK_PAYLOAD_KB as compact JSON is 422
    invalid_payload."""

    type: Annotated[str, Meta(min_length=1, description="A type from GET /api/tasks/types.")]
    payload: Annotated[dict[str, Any], Meta(
        description="Checked against the type's payload_schema.")] | None = None
    priority: Priority | None = None
    run_at: Annotated[str, Meta(description="When it may start; with a time zone.",
                                extra_json_schema={"format": "date-time"})] | None = None
    delay: Annotated[float, Meta(ge=0, le=MAX_DELAY_S,
                                 description="Seconds before it may start.")] | None = None
    max_attempts: Annotated[int, Meta(
        ge=1, le=MAX_ATTEMPTS_LIMIT,
        description="Attempts in all; more than the type's own max_attempts (a ceiling) "
                    "gets the ceiling.")] | None = None
    repeat: Repeat | None = None


class WebhookRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A URL to POST every final state of the caller's jobs to."""

    url: Annotated[str, Meta(max_length=2000, description="An http(s) URL.",
                             extra_json_schema={"format": "uri"})]


class CleanRequest(Struct, frozen=True, kw_only=True):
    """Which finished jobs a queue clean-up removes."""

    older_than_s: Annotated[int, Meta(
        ge=0, le=MAX_CLEAN_AGE_S,
        description="Finished at least this long ago.")] = DEFAULT_CLEAN_AGE_S

