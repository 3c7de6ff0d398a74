from __future__ import annotations

import secrets
import time

import pytest
import redis

from server.core import keys
from workers.progress import RedisLineRefresh

pytestmark = pytest.mark.integration


def _wait_gone(client: redis.Redis, key: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while client.exists(key):
        assert time.monotonic() < deadline, f"{key} never expired"
        time.sleep(0.01)


def test_line_refreshes_are_throttled_per_family_and_a_skipped_one_is_owed(
        redis_url: str) -> None:
    """Within the window only the first refresh of a family runs; the skipped one is owed
    once; when the window has passed (its key expired) the next claim runs again.

    The window is a minute, so no scheduling delay can end it early; its end is made to
    come by expiring the key, not by sleeping through it."""
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"line-test-{secrets.token_hex(4)}"
        one = RedisLineRefresh(client, prefix, interval_ms=60_000)
        other = RedisLineRefresh(client, prefix, interval_ms=60_000)
        assert not one.owed("images")
        assert one.claim("images")
        window = keys.line_refresh(prefix, "images")
        assert 59_000 < client.pttl(window) <= 60_000, "the window is the interval given"
        # Any worker, any queue of the family (priorities share a line): throttled...
        assert not other.claim("images.high")
        assert one.claim("default"), "another family has its own throttle"
        # ...and the skipped refresh is owed, once.
        assert other.owed("images.low")
        assert not one.owed("images")
        client.pexpire(window, 1)
        _wait_gone(client, window)
        assert other.claim("images")
    finally:
        client.close()
