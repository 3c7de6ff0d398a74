from __future__ import annotations

import secrets
import time

import redis

from workers.leases import Leases


def _pair(redis_url: str, ttl_ms: int = 5000) -> tuple[Leases, Leases, redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"lease-test-{secrets.token_hex(4)}"
    return Leases(client, prefix, ttl_ms), Leases(client, prefix, ttl_ms), client


def test_a_held_lease_keeps_a_second_run_out_until_released(redis_url: str) -> None:
    first, second, client = _pair(redis_url)
    assert first.acquire("job1")
    assert not first.acquire("job1"), "not even the holder starts a second run"
    assert not second.acquire("job1")
    second.release("job1")  # not second's to release
    assert not second.acquire("job1")
    first.release("job1")
    assert second.acquire("job1")
    client.close()


def test_a_dead_holders_lease_expires_and_a_live_one_is_refreshed(redis_url: str) -> None:
    first, second, client = _pair(redis_url, ttl_ms=300)
    assert first.acquire("live") and first.acquire("dead")
    for _ in range(4):
        time.sleep(0.15)
        first.refresh()
        first._held.discard("dead")  # the process holding "dead" stopped refreshing it
    assert not second.acquire("live")
    assert second.acquire("dead")
    client.close()


def test_refresh_takes_back_a_lease_lost_in_a_redis_restart(redis_url: str) -> None:
    first, second, client = _pair(redis_url)
    assert first.acquire("job")
    client.delete(f"{first.prefix}:lease:job")  # as if Redis restarted without it
    first.refresh()
    assert not second.acquire("job")
    client.close()
