"""Limits on live sockets: how many one user holds (across web processes), how fast one asks,
how fast one address opens engine.io sessions and how long one may stay without a token."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import redis
import redis.asyncio as aioredis
import socketio

from server.core import keys
from server.core.client_address import Network, TrustedProxies, limit_subject
from server.web.http.error_handlers import error_response

log = logging.getLogger(__name__)

# Each web process re-stamps its sockets' entries every REFRESH_S (SOCKET_REFRESH_S); an
# entry not re-stamped for TTL_S (its process died without a goodbye) stops counting. Three
# refreshes fit in a TTL, so one slow or failed refresh never drops a live socket.
REFRESH_S = 20.0
TTL_S = 60.0

# Client → server events (subscribe, unsubscribe) per socket: a burst, then a steady rate
# (the defaults of SOCKET_EVENT_BURST and SOCKET_EVENTS_PER_S). The bundled pages send one
# subscribe per connection; a client following each job of a batch (up to 100 files)
# subscribes to all of them at once without being refused, and only a flood beyond that
# is slowed down (the ack says when to try again).
EVENT_BURST = 120
EVENTS_PER_S = 5.0
# Sockets re-stamped per Redis round trip.
_REFRESH_BATCH = 200
# Client addresses whose handshake allowance one process remembers; past it, those whose
# allowance is whole again are forgotten first.
MAX_TRACKED_ADDRESSES = 10_000

# Drop expired entries, then add this socket if the user is under the limit.
_CLAIM = """
redis.call("zremrangebyscore", KEYS[1], "-inf", ARGV[1])
if not redis.call("zscore", KEYS[1], ARGV[2])
   and redis.call("zcard", KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call("zadd", KEYS[1], ARGV[3], ARGV[2])
redis.call("expire", KEYS[1], ARGV[5])
return 1
"""


class SocketRegistry:
    """Every live socket of every user, in one Redis sorted set per user shared by all web
    processes (member: the socket id; score: when the entry expires unless refreshed).

    ``claim`` at connect, ``release`` at disconnect, ``refresh`` re-stamps this process's
    own (``server.web.live.sockets.keep_sockets`` calls it every ``refresh_s``).
    """

    def __init__(self, client: aioredis.Redis, prefix: str, limit: int,
                 refresh_s: float = REFRESH_S) -> None:
        self._client = client
        self._prefix = prefix
        self.limit = limit
        self.refresh_s = refresh_s
        self._ttl_s = TTL_S * refresh_s / REFRESH_S
        self._local: dict[str, str] = {}  # sid → user id, the sockets of this process

    def _key(self, user_id: str) -> str:
        return keys.user_sockets(self._prefix, user_id)

    async def claim(self, user_id: str, sid: str, *, now: float | None = None) -> bool:
        """Count the socket against its user's limit; False when the user is at the limit."""
        now = time.time() if now is None else now
        added = await self._client.eval(_CLAIM, 1, self._key(user_id), now, sid,
                                        now + self._ttl_s, self.limit,
                                        max(1, int(self._ttl_s * 2)))
        if int(added):
            self._local[sid] = user_id
        return bool(int(added))

    async def release(self, sid: str) -> None:
        """The socket is gone: its slot is free at once."""
        user_id = self._local.pop(sid, None)
        if user_id is not None:
            await self._client.zrem(self._key(user_id), sid)

    async def refresh(self, *, now: float | None = None) -> None:
        """Re-stamp this process's sockets so they keep counting."""
        now = time.time() if now is None else now
        stamped = dict(self._local)
        items = list(stamped.items())
        for start in range(0, len(items), _REFRESH_BATCH):
            # One round trip per batch; the loop relays events between batches.
            async with self._client.pipeline(transaction=False) as pipe:
                for sid, user_id in items[start:start + _REFRESH_BATCH]:
                    pipe.zadd(self._key(user_id), {sid: now + self._ttl_s})
                    pipe.expire(self._key(user_id), max(1, int(self._ttl_s * 2)))
                await pipe.execute()
        # A socket that left while the stamps were in flight may have been stamped again
        # after its release: take it out once more.
        for sid in stamped.keys() - self._local.keys():
            await self._client.zrem(self._key(stamped[sid]), sid)

    def local_sids(self) -> list[str]:
        """The sockets of this process that count against their users."""
        return list(self._local)

    async def release_all(self) -> None:
        """At shutdown: this process's sockets stop counting now rather than after TTL_S."""
        for sid in list(self._local):
            try:
                await self.release(sid)
            except (redis.RedisError, OSError):
                return


@dataclass
class TokenBucket:
    """``capacity`` events at once, refilled at ``rate`` per second."""

    capacity: float = EVENT_BURST
    rate: float = EVENTS_PER_S
    tokens: float = EVENT_BURST
    updated: float = field(default_factory=time.monotonic)

    @classmethod
    def full(cls, capacity: float, rate: float) -> TokenBucket:
        """A bucket with its whole burst available."""
        return cls(capacity=capacity, rate=rate, tokens=capacity)

    def take(self, now: float | None = None) -> float:
        """Spend a token: 0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class HandshakeRate:
    """Engine.IO handshakes per client address in this process (SOCKET_HANDSHAKES_PER_MIN):
    a burst of ``per_min``, then ``per_min`` a minute. Each handshake makes a session before
    any token is looked at, so this is what bounds the sessions one address can open (with
    ``HandshakeTimeouts`` closing those that never authenticate). Kept in memory: it guards
    this process's memory, and a handshake must not wait for Redis."""

    def __init__(self, per_min: int, *, max_tracked: int = MAX_TRACKED_ADDRESSES) -> None:
        self.per_min = per_min
        self.max_tracked = max_tracked
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, address: str, now: float | None = None) -> float:
        """One handshake from ``address``: 0 when allowed, else the seconds until one is."""
        if self.per_min <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget_idle(now)
            bucket = self._buckets[address] = TokenBucket(
                capacity=self.per_min, rate=self.per_min / 60, tokens=self.per_min, updated=now)
        return bucket.take(now)

    def _forget_idle(self, now: float) -> None:
        """Drop the addresses whose allowance is whole again (as good as never seen); if
        that is not enough, the longest-known half."""
        for address, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * bucket.rate >= bucket.capacity:
                del self._buckets[address]
        if len(self._buckets) >= self.max_tracked:
            for address in list(self._buckets)[: self.max_tracked // 2]:
                del self._buckets[address]

    def __len__(self) -> int:
        return len(self._buckets)


class HandshakeTimeouts:
    """Close engine.io sessions that have not joined the Socket.IO namespace within
    ``timeout_s`` (SOCKET_CONNECT_TIMEOUT_S) of their handshake, or of a refused connect.

    engine.io keeps a session per handshake until its ping timeout (45 s) whether or not a
    token ever comes; a socket whose connect is still being checked has joined already.
    """

    def __init__(self, sio: socketio.AsyncServer, timeout_s: float) -> None:
        self.sio = sio
        self.timeout_s = timeout_s
        self._closing: set[asyncio.Task[None]] = set()

    def watch(self, eio_sid: str) -> None:
        """Check the session ``timeout_s`` from now."""
        asyncio.get_running_loop().call_later(self.timeout_s, self._check, eio_sid)

    def _check(self, eio_sid: str) -> None:
        if eio_sid not in self.sio.eio.sockets \
                or self.sio.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return
        log.debug("closing engine.io session %s: no namespace connect in time", eio_sid)
        task = asyncio.ensure_future(self._close(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, eio_sid: str) -> None:
        """Close and forget the session now, whether or not the client is listening.

        ``eio.disconnect`` would wait for the CLOSE packet to be taken from the session's
        queue, which a client that never polls never does. Instead: queue CLOSE, then the
        None engine.io itself uses to end a WebSocket's writer (which closes the connection;
        a waiting long-poll returns CLOSE), and drop the session (a later poll gets 400).
        """
        eio = self.sio.eio
        socket = eio.sockets.get(eio_sid)
        if socket is None:
            return
        try:
            await socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
            socket.queue.put_nowait(None)
        finally:
            eio.sockets.pop(eio_sid, None)


class LimitedSocketApp(socketio.ASGIApp):  # type: ignore[misc]
    """``socketio.ASGIApp`` that answers an engine.io handshake past the client address's
    ``HandshakeRate`` with 429 (a WebSocket one is closed before it is accepted); the
    ``exempt`` addresses (RATE_LIMIT_EXEMPT_ADDRESSES) are not counted."""

    def __init__(self, sio: socketio.AsyncServer, other_asgi_app: Any, *,
                 handshakes: HandshakeRate, trusted_proxies: TrustedProxies,
                 exempt: tuple[Network, ...] = ()) -> None:
        super().__init__(sio, other_asgi_app=other_asgi_app)
        self.handshakes = handshakes
        self.trusted_proxies = trusted_proxies
        self.exempt = exempt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._is_handshake(scope):
            subject = limit_subject(scope, self.trusted_proxies, self.exempt)
            wait_s = self.handshakes.take(subject) if subject is not None else 0.0
            if wait_s > 0:
                await _refuse_handshake(scope, receive, send, math.ceil(wait_s))
                return
        await super().__call__(scope, receive, send)

    def _is_handshake(self, scope: dict[str, Any]) -> bool:
        """A new engine.io session: a GET (or WebSocket) on its path without a ``sid``."""
        kind = scope["type"]
        if not (kind == "websocket" or (kind == "http" and scope.get("method") == "GET")):
            return False
        path = str(scope.get("path", ""))
        # As engine.io matches its path ("/socket.io" is "/socket.io/" there too).
        if not (path if path.endswith("/") else path + "/").startswith(self.engineio_path):
            return False
        try:
            query = bytes(scope.get("query_string", b"")).decode("utf-8")
        except UnicodeDecodeError:
            query = ""  # engine.io reads it so: no sid, a new session
        return "sid" not in parse_qs(query)


async def _refuse_handshake(scope: dict[str, Any], receive: Any, send: Any,
                            retry_after: int) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        # Before accept: the server answers the upgrade with 403.
        await send({"type": "websocket.close", "code": 1008})
        return
    response = error_response(429, "rate_limited",
                              "too many Socket.IO connections from this address; try again "
                              f"in {retry_after} s", headers={"Retry-After": str(retry_after)})
    await response(scope, receive, send)
