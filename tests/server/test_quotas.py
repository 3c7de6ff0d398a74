"""Per-user caps (``core.quotas``) and what a job's end sends to webhooks (``core.webhooks``)."""

from __future__ import annotations

from server.core import quotas, webhooks
from server.core.tasks import WEBHOOK_DELIVER


def test_a_user_has_room_below_the_cap_only() -> None:
    assert (quotas.MAX_WEBHOOKS_PER_USER, quotas.MAX_SCHEDULES_PER_USER) == (20, 100)
    assert quotas.has_room(19, 20) and not quotas.has_room(20, 20)


def test_every_end_is_announced_except_a_deliverys_own() -> None:
    assert webhooks.announces_its_end("image.process")
    assert not webhooks.announces_its_end(WEBHOOK_DELIVER.name)
    assert webhooks.delivery_payload("https://a.example/", "job.completed", {"x": 1}) == {
        "url": "https://a.example/", "event": "job.completed", "body": {"x": 1}}
