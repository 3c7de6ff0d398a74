"""Validation of request input: plain values in, typed values or ApiError out (pure)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from server.core.errors import ApiError, Problem
from server.core.wire import requests

# The limits are the request shapes'; callers have always found them here.
from server.core.wire.requests import MAX_ATTEMPTS_LIMIT as MAX_ATTEMPTS_LIMIT
from server.core.wire.requests import MAX_CLEAN_AGE_S as MAX_CLEAN_AGE_S
from server.core.wire.requests import MAX_DELAY_S as MAX_DELAY_S
from server.core.wire.requests import PRIORITIES as PRIORITIES

DEFAULT_PAGE = 50
MAX_PAGE = 200
# Digits past which a whole number (a parameter, a form field, an integer in a JSON body)
# is refused (422) before int() sees it, the default of MAX_NUMBER_DIGITS: far more than
# any value we take has (a 64-bit integer has 19; a longer one is still only out of range,
# 400), far fewer than the 4,300 past which int() raises ValueError (and parsing a long
# one costs time quadratic in its length).
MAX_INT_DIGITS = 100
# Nesting of a JSON body, the default of MAX_JSON_DEPTH: deeper is refused (every part of
# the service that walks a payload recurses, and Python's own limit is about 1,000 frames
# for the whole stack).
MAX_JSON_DEPTH = 64
# The top-level fields of POST /api/tasks; any other is a mistake worth a clear 422.
TASK_FIELDS = frozenset(requests.TaskRequest.__struct_fields__)

# An error a request field answers: status, code, message.
Refusal = tuple[Problem, str, str]


def _field_types(shape: type[msgspec.Struct]) -> dict[str, Any]:
    """Each field's declared type, constraints (msgspec.Meta) included."""
    return {field.name: field.type for field in msgspec.structs.fields(shape)}


def _typed(value: Any, kind: Any, refusal: Refusal) -> Any:
    """``value`` checked against a declared field type; ApiError(``refusal``) when it does
    not fit. Fields are checked one at a time, in the order the caller has always checked
    them: with several bad ones, that order says which error the body gets."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        raise ApiError(*refusal) from None


def _integral(value: Any) -> Any:
    """A whole float as an int: JSON Schema's integer takes 3.0, msgspec's int does not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class UploadOptions:
    priority: str = "normal"
    delay_s: int = 0


def upload_options(fields: Mapping[str, str], *,
                   max_digits: int = MAX_INT_DIGITS) -> UploadOptions:
    """The optional ``priority`` and ``delay`` form fields of an upload."""
    priority = (fields.get("priority") or "normal").strip().lower()
    if priority not in PRIORITIES:
        raise ApiError(Problem.INVALID, "invalid_priority",
                       f"priority must be one of {', '.join(PRIORITIES)}")
    raw_delay = (fields.get("delay") or "0").strip()
    _check_digits(raw_delay, "delay", max_digits)
    try:
        delay = int(raw_delay)
    except ValueError:
        raise ApiError(Problem.INVALID, "invalid_delay",
                       "delay must be a whole number of seconds") from None
    if not 0 <= delay <= MAX_DELAY_S:
        raise ApiError(Problem.INVALID, "invalid_delay",
                       f"delay must be between 0 and {MAX_DELAY_S} seconds")
    return UploadOptions(priority=priority, delay_s=delay)


def is_whole_number(raw: str) -> bool:
    """Whether ``raw`` is plain ASCII digits (str.isdigit also takes "²", which int() refuses)."""
    return raw.isascii() and raw.isdigit()


def _check_digits(raw: str, name: str, max_digits: int = MAX_INT_DIGITS) -> None:
    """422 for a number too long to be any value we take (before int() is asked to parse it)."""
    if len(raw.lstrip("+-")) > max_digits:
        raise ApiError(Problem.UNPROCESSABLE, "number_too_long",
                       f"{name} has more than {max_digits} digits")


def whole_number(raw: str, name: str, max_digits: int = MAX_INT_DIGITS) -> int | None:
    """``raw`` as a whole number; None when it is not plain digits, 422 when it has more
    than ``max_digits`` (MAX_NUMBER_DIGITS)."""
    if not is_whole_number(raw):
        return None
    _check_digits(raw, name, max_digits)
    return int(raw)


def page(query: Mapping[str, str], *,
         max_digits: int = MAX_INT_DIGITS) -> tuple[int, str | None]:
    """``limit`` (1..200, default 50) and the ``before`` cursor of a list request."""
    limit = whole_number(query.get("limit", str(DEFAULT_PAGE)), "limit", max_digits)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise ApiError(Problem.INVALID, "invalid_limit", f"limit must be between 1 and {MAX_PAGE}")
    before = query.get("before") or None
    return limit, before


_CLEAN_AGE = _field_types(requests.CleanRequest)["older_than_s"]


def clean_age(body: Any, query_value: str | None, *, default: int,
              max_digits: int = MAX_INT_DIGITS) -> int:
    """``older_than_s`` of a queue clean-up: from the JSON body, else the query, else default."""
    if not isinstance(body, dict):
        raise ApiError(Problem.INVALID, "bad_request", "send a JSON object")
    raw = body.get("older_than_s", default if query_value is None else query_value)
    if isinstance(raw, str):  # the query's, or a body's "120" (always taken)
        raw = whole_number(raw, "older_than_s", max_digits)
    age: int = _typed(_integral(raw), _CLEAN_AGE, (
        Problem.INVALID, "bad_request",
        f"older_than_s must be a whole number from 0 to {MAX_CLEAN_AGE_S}"))
    return age


def _not_json(constant: str) -> Any:
    """``parse_constant``: NaN and Infinity are Python's extension, not JSON."""
    raise ApiError(Problem.INVALID, "bad_request",
                   f"the body is not valid JSON ({constant} is not JSON)")


def _finite(text: str) -> float:
    """``parse_float``: 1e999 would become inf, which no JSON column or encoder takes."""
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(Problem.UNPROCESSABLE, "number_too_long",
                       f"the number {text[:20]}... is out of range")
    return value


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def _bounded_int(max_digits: int) -> Callable[[str], int]:
    """``parse_int``: an integer of more than ``max_digits`` digits is a 422, unparsed."""
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > max_digits:
            raise ApiError(Problem.UNPROCESSABLE, "number_too_long",
                           f"a number in the body has more than {max_digits} digits")
        return int(text)
    return parse


def json_body(raw: bytes, *, empty: Any = None, max_depth: int = MAX_JSON_DEPTH,
              max_digits: int = MAX_INT_DIGITS) -> Any:
    """A request body parsed as JSON (``empty`` when there is none).

    400 when it is not JSON or nests deeper than ``max_depth`` (MAX_JSON_DEPTH); 422 for
    an integer of more than ``max_digits`` digits (MAX_NUMBER_DIGITS) or a number beyond a
    float's range.
    """
    if not raw.strip():
        return empty
    try:
        value = json.loads(raw, parse_constant=_not_json, parse_float=_finite,
                           parse_int=_bounded_int(max_digits))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(Problem.INVALID, "bad_request", "the body is not valid JSON") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError:  # int() refusing thousands of digits (when max_digits lets them by)
        raise ApiError(Problem.UNPROCESSABLE, "number_too_long",
                       "a number in the body has too many digits") from None
    if json_depth_over(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _too_deep(limit: int) -> ApiError:
    return ApiError(Problem.INVALID, "too_deep", f"the JSON nests deeper than {limit} levels")


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: how a stored payload is measured."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class TaskRequest:
    task_type: str
    payload: dict[str, Any]
    priority: str
    delay_s: int
    max_attempts: int | None


def attempts_for(requested: int | None, task_type: str, ceiling: int | None, *,
                 default: int) -> int:
    """The attempts a job of ``task_type`` gets: the caller's ``max_attempts``, else the
    type's, else the deployment's RETRY_MAX_ATTEMPTS. A type's own limit is a ceiling: a
    caller may ask for fewer attempts, and asking for more gets the ceiling (the job's
    ``max_attempts`` in the answer says what it really got), as callers that asked up to
    MAX_ATTEMPTS_LIMIT before the ceilings existed keep working."""
    if requested is None:
        return ceiling or default
    if ceiling is not None:
        return min(requested, ceiling)
    return requested


# "0,5,10,...,55 0-23 1-31 1-12 0-6" is about 60 characters; nothing useful is longer.
# The default of MAX_CRON_CHARS.
MAX_CRON_CHARS = 200


_REPEAT = _field_types(requests.Repeat)


def repeat_fields(repeat: Any, *, max_chars: int = MAX_CRON_CHARS) -> tuple[str, str]:
    """``(cron, timezone)`` of a task's ``repeat`` object (UTC when the zone is absent);
    a cron expression is at most ``max_chars`` (MAX_CRON_CHARS) characters.

    Only the shape is checked here (422); ``server.core.cron`` checks the values.
    """
    shape: Refusal = (Problem.UNPROCESSABLE, "invalid_cron",
                      'repeat must be {"cron": "<5-field cron>", "timezone": "<IANA name>"}')
    if not isinstance(repeat, dict):
        raise ApiError(*shape)
    cron: str = _typed(repeat.get("cron"), _REPEAT["cron"], shape)
    if len(cron) > max_chars:
        # Also keeps every number in it far below what int() refuses.
        raise ApiError(Problem.UNPROCESSABLE, "invalid_cron",
                       f"a cron expression is at most {max_chars} characters")
    timezone: str | None = _typed(repeat.get("timezone"), _REPEAT["timezone"], (
        Problem.UNPROCESSABLE, "invalid_timezone",
        "timezone must be an IANA name, e.g. Europe/Paris"))
    return cron.strip(), timezone or "UTC"


_TASK = _field_types(requests.TaskRequest)
# What a field of POST /api/tasks of the wrong type, or out of range, answers (the payload's
# fit is checked against its type's schema, and repeat by repeat_fields, later).
_TASK_REFUSALS: dict[str, Refusal] = {
    "type": (Problem.INVALID, "bad_request", '"type" must name a registered task type'),
    "priority": (Problem.INVALID, "invalid_priority",
                 f"priority must be one of {', '.join(PRIORITIES)}"),
    "run_at": (Problem.INVALID, "invalid_run_at", "run_at must be an ISO-8601 time"),
    "delay": (Problem.INVALID, "invalid_delay",
              f"delay must be between 0 and {MAX_DELAY_S} seconds"),
    "max_attempts": (Problem.INVALID, "invalid_max_attempts",
                     f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"),
}


def _task_field(name: str, value: Any) -> Any:
    return _typed(value, _TASK[name], _TASK_REFUSALS[name])


def task_request(body: Any, *, now: datetime, max_payload_bytes: int | None = None
                 ) -> TaskRequest:
    """The fields of ``POST /api/tasks`` (the payload's fit to its type is the caller's).

    422 for a top-level field that is not one of TASK_FIELDS, and for a payload over
    ``max_payload_bytes`` as compact JSON (it is stored with the job, and read back on every
    retry, timeline and dead-letter listing).
    """
    if not isinstance(body, dict):
        raise ApiError(Problem.INVALID, "bad_request", "send a JSON object")
    unknown = sorted(set(body) - TASK_FIELDS)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ApiError(Problem.UNPROCESSABLE, "unknown_field",
                       f"unknown field(s) {shown}; a task takes "
                       f"{', '.join(sorted(TASK_FIELDS))}")
    task_type: str = _task_field("type", body.get("type"))
    payload = body.get("payload", {})
    if payload is None:
        payload = {}
    if max_payload_bytes is not None and json_size(payload) > max_payload_bytes:
        raise ApiError(Problem.UNPROCESSABLE, "invalid_payload",
                       f"the payload is over {max_payload_bytes // 1024} KB as compact JSON")
    priority = body.get("priority")
    # "" has always meant the default, as null does ({} and false are refused).
    priority = _task_field("priority", None if priority == "" else priority) or "normal"
    delay_s = _delay(body, now)
    max_attempts: int | None = _task_field("max_attempts", _integral(body.get("max_attempts")))
    return TaskRequest(task_type, payload, priority, delay_s, max_attempts)


def _delay(body: dict[str, Any], now: datetime) -> int:
    delay, run_at = body.get("delay"), body.get("run_at")
    if delay is not None and run_at is not None:
        raise ApiError(Problem.INVALID, "bad_request", "give either delay or run_at, not both")
    if run_at is not None:
        # Parsed here, not by msgspec: fromisoformat takes forms its RFC 3339 does not.
        text: str = _task_field("run_at", run_at)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(*_TASK_REFUSALS["run_at"]) from None
        if when.tzinfo is None:
            raise ApiError(Problem.INVALID, "invalid_run_at", "run_at needs a timezone (e.g. Z)")
        delay = max(0, math.ceil((when - now).total_seconds()))
    if delay is None:
        return 0
    seconds: float = _task_field("delay", delay)
    return math.ceil(seconds)
