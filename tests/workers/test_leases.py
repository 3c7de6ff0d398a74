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
    lease = first.acquire("job1")
    assert lease is not None and lease.startswith(first.owner + ":")
    assert first.acquire("job1") is None, "not even the holder starts a second run"
    assert second.acquire("job1") is None
    second.release("job1", f"{second.owner}:1")  # not second's to release
    assert second.acquire("job1") is None
    first.release("job1", lease)
    assert second.acquire("job1") is not None
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
    del first._held["dead"]  # the process holding "dead" stopped refreshing it
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


def test_a_hung_run_stops_being_refreshed_and_a_new_run_takes_over(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A run that lasted its ``overdue_after_ms`` is taken for hung: the heartbeat no longer
    renews its lease (the sweeper can then resend its job), a new run of the job in the
    same process takes the lease over at once, and the hung run, should it return, gives
    back nothing but its own (long gone) lease. Another process still waits its turn."""
    first, second, client = _pair(redis_url, ttl_ms=60_000)
    key = f"{first.prefix}:lease:job"
    hung = first.acquire("job", overdue_after_ms=0)
    fresh = first.acquire("other", overdue_after_ms=60_000)
    assert hung and fresh
    client.pexpire(key, 5_000)
    client.pexpire(f"{first.prefix}:lease:other", 5_000)
    first.refresh()
    first.refresh()
    assert 0 < client.pttl(key) <= 5_000, "the hung run's lease is not renewed"
    assert client.pttl(f"{first.prefix}:lease:other") > 59_000
    assert sum("far past its time limit" in r.getMessage() for r in caplog.records) == 1, \
        "said once"
    assert second.acquire("job") is None, "another process waits for the lease to expire"
    taken = first.acquire("job", overdue_after_ms=60_000)
    assert taken is not None and taken != hung
    assert client.get(key) == taken.encode() and client.pttl(key) > 59_000
    assert first.acquire("job") is None, "the new run is not overdue"
    first.release("job", hung)  # the hung run returns at last
    assert client.get(key) == taken.encode()
    assert sorted(first.held()) == ["job", "other"]
    first.release("job", taken)
    assert client.get(key) is None and first.held() == ["other"]
    client.close()


def test_a_new_run_here_waits_while_another_process_holds_the_hung_runs_lease(
        redis_url: str) -> None:
    """The takeover is of this process's own hung run: had another process taken the lease
    since (the hung run's expired), the new run here does not start."""
    first, second, client = _pair(redis_url, ttl_ms=60_000)
    assert first.acquire("job", overdue_after_ms=0)
    client.delete(f"{first.prefix}:lease:job")  # expired, unrenewed
    elsewhere = second.acquire("job")
    assert elsewhere is not None
    assert first.acquire("job") is None
    assert client.get(f"{first.prefix}:lease:job") == elsewhere.encode()
    assert first.held() == ["job"], "the hung run is still known here"
    client.close()
