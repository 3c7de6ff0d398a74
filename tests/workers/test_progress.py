from __future__ import annotations

import secrets
import time

import redis

from workers.progress import LINE_REFRESH_MS, RedisLineRefresh


def test_line_refreshes_are_throttled_per_family_and_a_skipped_one_is_owed(
        redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"line-test-{secrets.token_hex(4)}"
        one, other = RedisLineRefresh(client, prefix), RedisLineRefresh(client, prefix)
        assert not one.owed("images")
        assert one.claim("images")
        # Any worker, any queue of the family (priorities share a line): throttled...
        assert not other.claim("images.high")
        assert one.claim("default"), "another family has its own throttle"
        # ...and the skipped refresh is owed, once.
        assert other.owed("images.low")
        assert not one.owed("images")
        time.sleep(LINE_REFRESH_MS / 1000 + 0.05)
        assert other.claim("images")
    finally:
        client.close()
