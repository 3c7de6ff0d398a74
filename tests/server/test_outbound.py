"""Limits on tasks that reach outside, as far as they are pure: attempts and recipients."""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio

from server.core import keys
from server.core.errors import ApiError
from server.core.validation import attempts_for
from server.infra.settings import Settings
from server.services.outbound import count_task, payload_errors
from server.web.http.error_handlers import status_of


def test_a_types_attempt_limit_is_a_ceiling_callers_cannot_raise() -> None:
    assert attempts_for(None, "webhook.deliver", 5, default=4) == 5
    assert attempts_for(2, "webhook.deliver", 5, default=4) == 2
    assert attempts_for(5, "webhook.deliver", 5, default=4) == 5
    # More is cut to the ceiling, not refused: callers that asked for up to 20 before the
    # ceilings existed keep working, and the job's max_attempts says what it got.
    assert attempts_for(6, "webhook.deliver", 5, default=4) == 5
    assert attempts_for(20, "webhook.deliver", 5, default=4) == 5
    assert attempts_for(20, "email.send", 3, default=4) == 3


def test_a_type_without_a_limit_takes_the_callers_or_the_deployments() -> None:
    assert attempts_for(None, "image.reprocess", None, default=4) == 4
    assert attempts_for(20, "image.reprocess", None, default=4) == 20


def test_an_email_goes_to_exactly_one_address() -> None:
    assert payload_errors("email.send", {"to": "victim@ex.com,postmaster"}) == {
        "payload.to": "must be exactly one address (no list, no name)"}
    assert payload_errors("email.send", {"to": "ana@example.com"}) == {}
    assert payload_errors("webhook.deliver", {"url": "https://x.example"}) == {}


@pytest.mark.integration
async def test_an_email_job_that_cannot_be_enqueued_gives_its_send_back(
        redis_url: str) -> None:
    """count_task's undo (run when the message cannot be enqueued) deletes the job and
    uncounts its send: the owner keeps their allowance."""
    client = redis.asyncio.Redis.from_url(redis_url)
    prefix = f"t{secrets.token_hex(4)}"
    state = SimpleNamespace(redis=client, settings=Settings(
        redis_prefix=prefix, email_rate_per_user_per_hour=1, email_rate_per_hour=10))
    undone: list[str] = []

    def email(job_id: str) -> Any:
        return SimpleNamespace(job=SimpleNamespace(id=job_id, user_id="ana", type="email.send"))

    async def undo() -> None:
        undone.append("deleted")

    try:
        give_back = await count_task(state, email("j1"), undo)
        assert await client.zscore(keys.email_sends(prefix, "ana"), "j1") is not None
        await give_back()
        assert undone == ["deleted"]
        for key in (keys.email_sends(prefix, "ana"), keys.email_sends(prefix)):
            assert await client.zcard(key) == 0
        # The allowance (1 an hour here) is whole again: the next job is counted.
        await count_task(state, email("j2"), undo)
        with pytest.raises(ApiError) as over:
            await count_task(state, email("j3"), undo)
        assert status_of(over.value) == 429 and undone == ["deleted", "deleted"]
    finally:
        await client.aclose()
