"""Answers built from the wire Structs (``server.services.presenter``): the JSON they
become is the contract's, key for key and null for null."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from server.core import tasks
from server.core.wire import responses as wire
from server.data.models import Webhook
from server.services import presenter
from server.services.presenter import builtins

AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def _hook(n: int) -> Webhook:
    return Webhook(id=f"h{n}", user_id="u1", url=f"https://example.com/{n}", created_at=AT)


def test_webhook_answers_send_a_null_signing_secret() -> None:
    entry = {"id": "h1", "url": "https://example.com/1", "created_at": "2024-05-06T07:08:09Z"}
    assert presenter.webhook_created(_hook(1), None) == {"webhook": entry,
                                                         "signing_secret": None}
    assert presenter.webhooks([_hook(1)], "k") == {"items": [entry], "signing_secret": "k"}
    assert presenter.webhooks([], None) == {"items": [], "signing_secret": None}


def test_task_types_list_every_field_in_order() -> None:
    listed = presenter.task_types([tasks.IMAGE_REPROCESS])["types"]
    assert [list(t) for t in listed] == [["type", "description", "queue", "payload_schema",
                                          "max_attempts", "time_limit_s"]]
    assert listed[0]["type"] == "image.reprocess"
    assert listed[0]["payload_schema"] == tasks.IMAGE_REPROCESS.schema
    assert listed[0]["max_attempts"] == tasks.IMAGE_REPROCESS.max_attempts


def test_small_answers_keep_their_bytes() -> None:
    # What the routes sent as hand-made dicts, byte for byte (json.dumps keeps key order).
    pairs = [
        (wire.Session(token="t", user_id="u"), {"token": "t", "user_id": "u"}),
        (wire.Health(status="unavailable", redis="error: TimeoutError", database="ok",
                     relay="stopped"),
         {"status": "unavailable", "redis": "error: TimeoutError", "database": "ok",
          "relay": "stopped"}),
        (wire.QueueState(name="images", paused=True), {"name": "images", "paused": True}),
        (wire.QueueCleaned(name="images", removed=3), {"name": "images", "removed": 3}),
        (wire.DeadLetterRetry(retried=["a"], errors=[wire.RetryRefusal(
            job_id="b", error=wire.ErrorBody(code="input_missing", message="gone"))]),
         {"retried": ["a"], "errors": [{"job_id": "b", "error": {"code": "input_missing",
                                                                 "message": "gone"}}]}),
    ]
    for shape, sent in pairs:
        assert json.dumps(builtins(shape)) == json.dumps(sent)
