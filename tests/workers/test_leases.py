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
    first._held.pop("dead")  # the process holding "dead" stopped refreshing it
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


def test_a_hung_runs_lease_is_let_go_after_max_hold(redis_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A run still going max_hold_ms after it began (a thread the time limit cannot reach)
    stops having its lease refreshed, so it expires and the job can run elsewhere; this
    process still starts no second run of it, and takes it again once its thread ends."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"lease-test-{secrets.token_hex(4)}"
    now = [1000.0]
    hung = Leases(client, prefix, 60_000, max_hold_ms=10_000, clock=lambda: now[0])
    other = Leases(client, prefix, 60_000)
    assert hung.acquire("stuck") and hung.acquire("busy")
    now[0] += 5
    assert hung.acquire("late")  # began later: not overdue when the others are
    stuck, busy = f"{prefix}:lease:stuck", f"{prefix}:lease:busy"
    client.pexpire(stuck, 5_000)
    client.pexpire(busy, 5_000)
    now[0] += 6  # "stuck" and "busy" began 11 s ago, "late" 6 s ago
    hung.release("busy")  # this one ended in time
    assert hung.acquire("busy")  # and a new run of it began
    client.pexpire(busy, 5_000)
    with caplog.at_level("ERROR", logger="workers.middleware.leases"):
        hung.refresh()
        hung.refresh()
    assert client.pttl(stuck) <= 5_000, "an overdue run's lease is not refreshed"
    assert client.pttl(busy) > 59_000 and client.pttl(f"{prefix}:lease:late") > 59_000
    assert [r.getMessage() for r in caplog.records if "stuck" in r.getMessage()] == [
        "job stuck has run for 11 s, past its time limit: its thread looks hung; its lease "
        "is let go so that it can run again"], "logged once"
    assert not hung.acquire("stuck"), "no second run here while the hung thread lives"
    client.delete(stuck)  # the lease ran out
    assert other.acquire("stuck")
    other.release("stuck")
    hung.release("stuck")  # the hung thread came back at last
    assert hung.acquire("stuck")
    client.close()
