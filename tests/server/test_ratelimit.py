"""The fixed windows of the rates (pure parts), and taking and giving back in a real Redis
(the routes' use of them: tests/integration/test_sessions.py)."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio as aioredis

from server.core.errors import ApiError, Problem
from server.infra import ratelimit
from server.infra.ratelimit import HOUR_S, MINUTE_S, Rate
from server.web.http.error_handlers import api_error_headers


def test_windows_are_numbered_and_retry_after_counts_to_the_end_of_one() -> None:
    assert ratelimit.window_of(119.9, MINUTE_S) == 1
    assert ratelimit.window_of(120.0, MINUTE_S) == 2
    assert ratelimit.retry_after(120.0, MINUTE_S) == 60
    assert ratelimit.retry_after(179.2, MINUTE_S) == 1  # never 0: the client must wait
    assert ratelimit.retry_after(179.99, MINUTE_S) == 1
    assert ratelimit.retry_after(3600 * 5 + 10, HOUR_S) == 3590


def test_a_refusal_is_a_429_with_retry_after_and_says_the_rate() -> None:
    error = ratelimit.refusal(Rate("tasks", "task submissions", 120), now=130.0)
    assert (error.kind, error.code) == (Problem.RATE_LIMITED, "rate_limited")
    assert api_error_headers(error) == {"Retry-After": "50"}
    assert error.message == "at most 120 task submissions per minute; try again in 50 s"
    hourly = ratelimit.refusal(Rate("high-priority", "high-priority jobs", 10, HOUR_S), 0.0)
    assert "10 high-priority jobs per hour" in hourly.message
    assert hourly.retry_after_s == 3600


@pytest.mark.integration
async def test_what_was_taken_goes_back_to_its_own_window(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    prefix, rate = f"rl{secrets.token_hex(4)}", Rate("high-priority", "high jobs", 3, HOUR_S)
    try:
        taken = await ratelimit.take(client, prefix, rate, "ana", 3)
        assert taken is not None and taken.amount == 3
        with pytest.raises(ApiError):
            await ratelimit.take(client, prefix, rate, "ana")
        await ratelimit.give_back(client, taken, 2)  # two of the three were not used
        assert await ratelimit.take(client, prefix, rate, "ana", 2) is not None
        with pytest.raises(ApiError):
            await ratelimit.take(client, prefix, rate, "ana")
        # Never below zero, whatever is given back; nothing taken, nothing to give.
        await ratelimit.give_back(client, taken)
        await ratelimit.give_back(client, taken)
        assert int(await client.get(taken.key)) == 0
        await ratelimit.give_back(client, None)
        assert await ratelimit.take(client, prefix, rate, "ana", 0) is None
        assert await ratelimit.take(client, prefix, Rate("x", "x", 0), "ana") is None
    finally:
        await client.aclose()
