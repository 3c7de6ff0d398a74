"""The body of POST /api/webhooks, checked against the JSON Schema of its Struct
(``server.web.http.routes.webhooks``): the field errors of its 422 invalid_webhook."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from server.core.payloads import payload_errors
from server.core.wire.requests import WebhookRequest
from server.web.http.routes import webhooks


def test_the_schema_is_the_structs() -> None:
    assert webhooks._SCHEMA == msgspec.json.schema(WebhookRequest)


@pytest.mark.parametrize(("body", "errors"), [
    ({"url": "https://example.com/hook"}, {}),
    ({"url": "https://example.com/" + "é" * 1980}, {}),
    (None, {"body": "must be of type object"}),
    ([], {"body": "must be of type object"}),
    ({}, {"body.url": "is required"}),
    ({"url": 5}, {"body.url": "must be of type string"}),
    ({"url": "file:///etc/passwd"}, {"body.url": "must be an http(s) URL"}),
    ({"url": "http://[abc/x"}, {"body.url": "must be an http(s) URL"}),
    ({"url": "https://x.test/" + "a" * 2000}, {"body.url": "must be at most 2000 characters"}),
    ({"x": 1}, {"body.url": "is required", "body.x": "is not allowed"}),
    ({"url": 7, "x": 1}, {"body.url": "must be of type string", "body.x": "is not allowed"}),
])
def test_field_errors(body: Any, errors: dict[str, str]) -> None:
    found = payload_errors(webhooks._SCHEMA, body, path="body")
    assert list(found.items()) == list(errors.items())
    if not found:
        assert msgspec.convert(body, WebhookRequest).url == body["url"]
