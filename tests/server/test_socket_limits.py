"""The socket registry against a real Redis (with an explicit clock), and the token bucket."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.core import keys
from server.infra.settings import Settings
from server.web.app import create_app
from server.web.live.socket_limits import TTL_S, HandshakeRate, SocketRegistry, TokenBucket


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


# -- engine.io handshakes: rate per address, and a deadline to authenticate -----------------


def test_handshakes_per_address_burst_then_refill_and_addresses_are_apart() -> None:
    rate = HandshakeRate(3)
    assert [rate.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take("a", now=0.0) == pytest.approx(20.0)  # 3 a minute: one every 20 s
    assert rate.take("b", now=0.0) == 0.0
    assert rate.take("a", now=20.0) == 0.0
    assert HandshakeRate(0).take("a") == 0.0, "0 turns the limit off"


def test_remembered_addresses_stay_bounded() -> None:
    rate = HandshakeRate(2, max_tracked=100)
    for n in range(1000):
        rate.take(f"10.0.{n // 250}.{n % 250}", now=0.0)
    assert len(rate) <= 100
    rate.take("idle", now=0.0)
    rate.take("busy", now=0.0)
    rate.take("busy", now=0.0)
    for n in range(200):  # much later: "idle" has its whole allowance back, "busy" too
        rate.take(f"x{n}", now=1000.0)
    assert len(rate) <= 100


async def _get(app: Any, path: str, query: str, client: str = "203.0.113.9"
               ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP GET through the ASGI app: status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": [(b"host", b"test")],
             "client": (client, 50000), "server": ("test", 80), "scheme": "http",
             "http_version": "1.1", "root_path": "", "asgi": {"version": "3.0"}}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Any]:
    """The web process's ASGI app as create_app builds it (no lifespan: handshakes alone
    need none), with a short deadline to authenticate."""
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0",
                                  "SOCKET_CONNECT_TIMEOUT_S": "1"})
    app = create_app(settings)
    try:
        yield app
    finally:
        await app.app.engineio_server.shutdown()


HANDSHAKE = "EIO=4&transport=polling"


async def test_6000_tokenless_handshakes_are_limited_and_their_sessions_closed(
        web: Any) -> None:
    # The issue: 6,000 engine.io handshakes without a token were all 200, each holding a
    # session (RSS +81 MB) until its ping timed out.
    sio = web.app.engineio_server
    started = time.monotonic()
    statuses = [(await _get(web, "/socket.io/", HANDSHAKE))[0] for _ in range(6000)]
    per_min = Settings().socket_handshakes_per_min
    # A burst, then a trickle as the allowance refills while the loop runs (slowly, on a
    # busy machine).
    allowed = per_min + math.ceil((time.monotonic() - started) * per_min / 60) + 1
    assert statuses.count(200) <= allowed
    assert statuses.count(429) >= 6000 - allowed
    assert len(sio.eio.sockets) <= allowed
    status, headers, body = await _get(web, "/socket.io/", HANDSHAKE)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "rate_limited"
    # Another address is not affected.
    assert (await _get(web, "/socket.io/", HANDSHAKE, client="198.51.100.7"))[0] == 200
    # None of them sent a token: each is closed once SOCKET_CONNECT_TIMEOUT_S has passed.
    await asyncio.sleep(1.5)
    assert len(sio.eio.sockets) == 0


async def test_a_session_that_joins_the_namespace_in_time_is_kept(web: Any) -> None:
    sio = web.app.engineio_server
    status, _, body = await _get(web, "/socket.io/", HANDSHAKE)
    assert status == 200
    eio_sid = json.loads(body[1:])["sid"]
    # What a connect with a token does first (the session joins before the token is checked).
    await sio.manager.connect(eio_sid, "/")
    await asyncio.sleep(1.5)
    assert eio_sid in sio.eio.sockets


@pytest.mark.parametrize(("method", "query", "counted"), [
    ("GET", HANDSHAKE, True),
    ("GET", "EIO=4&transport=websocket", True),
    ("GET", HANDSHAKE + "&sid=abc", False),  # a poll of an open session
    ("POST", HANDSHAKE + "&sid=abc", False),
    ("OPTIONS", HANDSHAKE, False),
    # engine.io reads a query that is not UTF-8 as empty: a new session, so counted.
    ("GET", HANDSHAKE + "&sid=abc&\xff", True),
])
def test_what_counts_as_a_handshake(tmp_path: Path, method: str, query: str,
                                    counted: bool) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path),
                                  "REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(settings).app
    scope = {"type": "http", "method": method, "path": "/socket.io/",
             "query_string": query.encode("latin-1")}
    assert app._is_handshake(scope) is counted
    assert app._is_handshake({**scope, "path": "/socket.io"}) is counted
    assert not app._is_handshake({**scope, "path": "/api/images"})


@pytest.mark.parametrize(("exempt", "limited"), [("", False), ("none", True)])
async def test_loopback_handshakes_are_not_counted_unless_the_operator_says_so(
        tmp_path: Path, exempt: str, limited: bool) -> None:
    # SOCKET_HANDSHAKES_PER_MIN counted 127.0.0.1 too: local tools, test suites and a proxy
    # on this host (every user behind it) shared one allowance. RATE_LIMIT_EXEMPT_ADDRESSES
    # (loopback by default; "none" as an operator may set it) leaves them out.
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0",
                                  "SOCKET_CONNECT_TIMEOUT_S": "1",
                                  "SOCKET_HANDSHAKES_PER_MIN": "3",
                                  "RATE_LIMIT_EXEMPT_ADDRESSES": exempt})
    app = create_app(settings)
    try:
        local = [(await _get(app, "/socket.io/", HANDSHAKE, client=client))[0]
                 for client in ("127.0.0.1", "::1") for _ in range(5)]
        assert local == (([200] * 3 + [429] * 2) * 2 if limited else [200] * 10)
        remote = [(await _get(app, "/socket.io/", HANDSHAKE))[0] for _ in range(4)]
        assert remote == [200] * 3 + [429], "every other address is limited as before"
    finally:
        await app.app.engineio_server.shutdown()


def test_a_socket_bucket_starts_with_its_whole_burst() -> None:
    bucket = TokenBucket.full(4, 2)
    assert [bucket.take(bucket.updated) for _ in range(5)][-2:] == [0.0, pytest.approx(0.5)]
    assert (bucket.capacity, bucket.rate) == (4, 2)
