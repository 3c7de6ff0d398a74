"""Task payloads against their schemas (``server.core.payloads``), with plain inputs."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema.exceptions import SchemaError

from server.core import tasks
from server.core.payloads import checked, payload_errors

SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
        "mode": {"type": "string", "enum": ["a", "b"]},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def test_payload_that_fits_has_no_errors() -> None:
    assert payload_errors(SCHEMA, {"url": "https://x.test/h", "count": 2, "mode": "a"}) == {}


def test_payload_errors_name_each_field() -> None:
    errors = payload_errors(SCHEMA, {"count": True, "mode": "c", "extra": 1})
    assert errors == {
        "payload.url": "is required",
        "payload.count": "must be of type integer",
        "payload.mode": "must be one of a, b",
        "payload.extra": "is not allowed",
    }
    assert payload_errors(SCHEMA, {"url": "ftp://x", "count": 9}) == {
        "payload.url": "must be an http(s) URL", "payload.count": "must be at most 5"}
    assert payload_errors(SCHEMA, []) == {"payload": "must be of type object"}


@pytest.mark.parametrize("url", [
    "http://[abc/x", "http://[::1", "https://h:99999/", "https://h:port/", "http://a b.test/",
    "http://a\x00b.test/", "https://x.test/\n", "http://", "mailto:a@b.test", "",
])
def test_urls_that_are_not_http_are_field_errors(url: str) -> None:
    assert payload_errors(SCHEMA, {"url": url}) == {"payload.url": "must be an http(s) URL"}


def test_http_urls_pass() -> None:
    for url in ("https://x.test/h?a=1#f", "http://127.0.0.1:8080/", "http://[::1]:80/x"):
        assert payload_errors(SCHEMA, {"url": url}) == {}


EMAIL = tasks.EMAIL_SEND.schema


def test_email_payloads_name_the_address_and_the_one_line_subject() -> None:
    assert payload_errors(EMAIL, {"to": "ana@example.com", "subject": "Hi"}) == {}
    assert payload_errors(EMAIL, {"to": "not an address", "subject": "two\nlines"}) == {
        "payload.to": "must be an email address", "payload.subject": "must be one line"}
    # The pattern matches the whole subject: a line break at either end is refused too.
    for subject in ("Hi\n", "\rHi"):
        assert payload_errors(EMAIL, {"to": "a@b.c", "subject": subject}) == {
            "payload.subject": "must be one line"}
    assert payload_errors(EMAIL, {"to": "a@b.c", "subject": ""}) == {
        "payload.subject": "must be at least 1 characters"}
    assert payload_errors(EMAIL, {"to": "a@" + "b" * 320, "subject": "x"}) == {
        "payload.to": "must be at most 320 characters"}


def test_a_pattern_without_its_message_says_the_form_is_wrong() -> None:
    schema = {"type": "string", "pattern": "[a-z]+"}
    assert payload_errors(schema, "abc") == {}
    assert payload_errors(schema, "abc1") == {"payload": "has the wrong form"}


@pytest.mark.parametrize(("schema", "value", "message"), [
    ({"type": "string", "enum": ["a"]}, 3, "must be of type string"),  # the type alone
    ({"type": "number", "minimum": 0}, -0.5, "must be at least 0"),
    ({"type": "string", "minLength": 2, "maxLength": 3}, "abcd", "must be at most 3 characters"),
    ({"type": "boolean"}, 1, "must be of type boolean"),
    ({"type": "integer"}, 1.5, "must be of type integer"),
])
def test_one_message_per_field(schema: dict[str, Any], value: object, message: str) -> None:
    assert payload_errors(schema, value, path="x") == {"x": message}


def test_nested_fields_are_named_by_their_path() -> None:
    schema = {"type": "object", "properties": {"inner": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["m"]}}}
    assert payload_errors(schema, {"inner": {"n": "1"}}, path="body") == {
        "body.inner.n": "must be of type integer", "body.inner.m": "is required"}


def test_every_declared_schema_is_valid_and_a_bad_one_is_refused() -> None:
    for spec in (*tasks.BUILTIN, *tasks.TESTING):
        assert checked(spec.schema) is spec.schema
    for bad in ({"type": "strng"}, {"type": "string", "pattern": "[a-"},
                {"type": "integer", "minimum": "1"}):
        with pytest.raises(SchemaError):
            checked(bad)
