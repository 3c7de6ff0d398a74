"""Limits on live sockets: how many one user holds (across web processes), how fast one asks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from server import keys

log = logging.getLogger(__name__)

# Each web process re-stamps its sockets' entries every REFRESH_S (SOCKET_REFRESH_S); an
# entry not re-stamped for TTL_S (its process died without a goodbye) stops counting. Three
# refreshes fit in a TTL, so one slow or failed refresh never drops a live socket.
REFRESH_S = 20.0
TTL_S = 60.0

# Client → server events (subscribe, unsubscribe) per socket: a burst, then a steady rate.
# The bundled pages send one subscribe per connection; a client following each job of a
# batch (up to 100 files) subscribes to all of them at once without being refused, and
# only a flood beyond that is slowed down (the ack says when to try again).
EVENT_BURST = 120
EVENTS_PER_S = 5.0
# Sockets re-stamped per Redis round trip.
_REFRESH_BATCH = 200
# Job rooms one socket may join (admins following other users' jobs one by one).
MAX_JOB_ROOMS = 500

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
    own (``server.sockets.keep_sockets`` calls it every ``refresh_s``).
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

    def take(self, now: float | None = None) -> float:
        """Spend a token: 0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
