"""The fixed windows of the rates (pure parts; the counting itself runs in Redis and is
exercised by tests/integration/test_sessions.py)."""

from __future__ import annotations

from server import ratelimit
from server.ratelimit import HOUR_S, MINUTE_S, Rate


def test_windows_are_numbered_and_retry_after_counts_to_the_end_of_one() -> None:
    assert ratelimit.window_of(119.9, MINUTE_S) == 1
    assert ratelimit.window_of(120.0, MINUTE_S) == 2
    assert ratelimit.retry_after(120.0, MINUTE_S) == 60
    assert ratelimit.retry_after(179.2, MINUTE_S) == 1  # never 0: the client must wait
    assert ratelimit.retry_after(179.99, MINUTE_S) == 1
    assert ratelimit.retry_after(3600 * 5 + 10, HOUR_S) == 3590


def test_a_refusal_is_a_429_with_retry_after_and_says_the_rate() -> None:
    error = ratelimit.refusal(Rate("tasks", "task submissions", 120), now=130.0)
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.headers == {"Retry-After": "50"}
    assert error.message == "at most 120 task submissions per minute; try again in 50 s"
    hourly = ratelimit.refusal(Rate("high-priority", "high-priority jobs", 10, HOUR_S), 0.0)
    assert "10 high-priority jobs per hour" in hourly.message
    assert hourly.headers == {"Retry-After": "3600"}
