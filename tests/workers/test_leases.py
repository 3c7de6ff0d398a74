from __future__ import annotations

import secrets
import time

import pytest
import redis

from workers.middleware.leases import Leases

pytestmark = pytest.mark.integration


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
    """A refresh sets a held lease's time to live back to the full TTL; a lease nobody
    refreshes runs out and frees the job. Time passing is made by shortening the keys'
    TTL in Redis, not by sleeping through a short TTL (which a slow machine could miss)."""
    first, second, client = _pair(redis_url, ttl_ms=60_000)
    assert first.acquire("live") and first.acquire("dead")
    live, dead = f"{first.prefix}:lease:live", f"{first.prefix}:lease:dead"
    client.pexpire(live, 5_000)
    client.pexpire(dead, 1)
    first._held.discard("dead")  # the process holding "dead" stopped refreshing it
    deadline = time.monotonic() + 5
    while client.exists(dead):
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.01)
    first.refresh()
    assert client.pttl(live) > 59_000, "refresh gives the live lease its whole TTL again"
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
