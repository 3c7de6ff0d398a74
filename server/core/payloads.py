"""Payloads checked against the JSON Schemas their task types declare (pure).

jsonschema validates (Draft 2020-12), and each error becomes a field and a short message
(``{"payload.to": "must be an email address"}``: the ``fields`` of a 422), one per field.
Our schemas add to the standard:

- ``format``: checked for the formats they use, "uri" (an http or https URL: where a
  webhook may be sent) and "email"; any other format is not checked;
- ``pattern`` matches the whole value, as it always has here ("[^\\r\\n]*" is one line;
  JSON Schema's own searches anywhere in it), and a failure says the schema's
  ``patternMessage`` when it has one.

Every declared task type's schema is checked against the metaschema when this module is
imported, so that a bad declaration stops the process at start, not a client's request.
The caps on a payload's size and depth are checked before (``server.core.validation``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from server.core import tasks

Schema = dict[str, Any]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# Control characters and spaces never belong in a URL (and NUL cannot be stored in PostgreSQL).
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f]")


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):  # a format says nothing of other types
        return True
    if _NOT_IN_URL.search(value):
        return False
    try:
        parts = urlsplit(value)
        # Both raise ValueError for what urlsplit lets through: "http://[x", "http://h:99999".
        host, _ = parts.hostname, parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host)


def _is_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL.fullmatch(value) is not None


# Only the formats our schemas use: any other is not checked.
FORMATS = FormatChecker(formats=())
FORMATS.checks("uri")(_is_http_url)
FORMATS.checks("email")(_is_email)


def _whole_pattern(_validator: Any, pattern: str, instance: Any,
                   schema: Schema) -> Iterator[ValidationError]:
    """``pattern``, matched against the whole string, with the schema's own message."""
    if isinstance(instance, str) and re.fullmatch(pattern, instance) is None:
        yield ValidationError(schema.get("patternMessage", "has the wrong form"))


_Validator = validators.extend(Draft202012Validator, validators={"pattern": _whole_pattern})


def checked(schema: Schema) -> Schema:
    """``schema``, once it is a valid Draft 2020-12 schema (``SchemaError`` otherwise)."""
    _Validator.check_schema(schema)
    return schema


for _spec in (*tasks.BUILTIN, *tasks.TESTING):
    checked(_spec.schema)

# When one field breaks several keywords, the first of these names its message (a value of
# the wrong type says only that); other keywords come after them.
_PRECEDENCE = ("type", "pattern", "format", "maxLength", "minLength", "maximum", "minimum",
               "exclusiveMaximum", "exclusiveMinimum", "enum", "const")
_FORMAT_MESSAGES = {"uri": "must be an http(s) URL", "email": "must be an email address"}


def _message(error: ValidationError) -> str:
    value = error.validator_value
    match error.validator:
        case "type":
            kinds = value if isinstance(value, list) else [value]
            return f"must be of type {' or '.join(map(str, kinds))}"
        case "enum":
            return f"must be one of {', '.join(map(str, value))}"
        case "const":
            return f"must be {value}"
        case "minimum":
            return f"must be at least {value}"
        case "maximum":
            return f"must be at most {value}"
        case "exclusiveMinimum":
            return f"must be more than {value}"
        case "exclusiveMaximum":
            return f"must be less than {value}"
        case "minLength":
            return f"must be at least {value} characters"
        case "maxLength":
            return f"must be at most {value} characters"
        case "format":
            return _FORMAT_MESSAGES.get(value, f"must be a valid {value}")
    return str(error.message)  # "pattern" among them: its message is the schema's own


def _fields(error: ValidationError, path: str) -> Iterator[tuple[str, str]]:
    """The fields one error is about, each with its message."""
    where = path + "".join(f".{part}" for part in error.absolute_path)
    instance, schema = error.instance, error.schema
    if error.validator == "required" and isinstance(instance, dict):
        yield from ((f"{where}.{name}", "is required") for name in error.validator_value
                    if name not in instance)
    elif error.validator == "additionalProperties" and isinstance(instance, dict) \
            and isinstance(schema, dict):
        known, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        yield from ((f"{where}.{name}", "is not allowed") for name in instance
                    if name not in known and not any(re.search(p, name) for p in patterns))
    else:
        yield where, _message(error)


def payload_errors(schema: Schema, payload: Any, path: str = "payload") -> dict[str, str]:
    """Each field of ``payload`` that ``schema`` refuses, with why; empty when it fits."""
    found: dict[str, tuple[int, str]] = {}
    for error in _Validator(schema, format_checker=FORMATS).iter_errors(payload):
        keyword = str(error.validator)
        rank = _PRECEDENCE.index(keyword) if keyword in _PRECEDENCE else len(_PRECEDENCE)
        for field, message in _fields(error, path):
            if field not in found or rank < found[field][0]:
                found[field] = (rank, message)
    return {field: message for field, (_, message) in found.items()}
