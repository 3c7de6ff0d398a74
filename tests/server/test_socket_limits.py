"""The socket registry against a real Redis (with an explicit clock), and the token bucket."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server import keys
from server.socket_limits import TTL_S, SocketRegistry, TokenBucket


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.mark.integration
async def test_the_limit_is_shared_by_every_process(client: aioredis.Redis) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    web1, web2 = SocketRegistry(client, prefix, 2), SocketRegistry(client, prefix, 2)
    assert await web1.claim("ana", "s1", now=1000)
    assert await web2.claim("ana", "s2", now=1000)
    assert not await web2.claim("ana", "s3", now=1000)
    assert await web1.claim("bo", "s4", now=1000), "another user has their own allowance"
    await web1.release("s1")
    assert await web2.claim("ana", "s3", now=1000)
    assert await client.zcard(keys.user_sockets(prefix, "ana")) == 2


@pytest.mark.integration
async def test_a_dead_process_sockets_stop_counting_after_the_ttl(client: aioredis.Redis) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    dead, alive = SocketRegistry(client, prefix, 1), SocketRegistry(client, prefix, 1)
    assert await dead.claim("ana", "gone", now=1000)
    assert not await alive.claim("ana", "new", now=1000 + TTL_S - 1)
    assert await alive.claim("ana", "new", now=1000 + TTL_S + 1)


@pytest.mark.integration
async def test_refreshed_sockets_keep_counting(client: aioredis.Redis) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    web1, web2 = SocketRegistry(client, prefix, 1), SocketRegistry(client, prefix, 1)
    assert await web1.claim("ana", "s1", now=1000)
    await web1.refresh(now=1000 + TTL_S - 1)
    assert not await web2.claim("ana", "s2", now=1000 + TTL_S + 1)
    await web1.release_all()
    assert await web2.claim("ana", "s2", now=1000 + TTL_S + 1)


def test_the_bucket_allows_a_burst_then_a_steady_rate() -> None:
    bucket = TokenBucket(capacity=3, rate=2, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2, "refills up to capacity only"
