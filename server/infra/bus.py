"""Publish and subscribe job events over Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis

from server.core import keys
from server.core.events import BusEvent, decode_event
from server.infra import tracing

log = logging.getLogger(__name__)

# Reconnect backoff after Redis goes away: start fast, never hammer a down server.
_MIN_BACKOFF_S = 0.2
_MAX_BACKOFF_S = 5.0


def raise_if_cancelled(exc: BaseException | None = None) -> None:
    """Raise this task's cancellation if a library ate it.

    redis-py turns a cancel that lands while a connection is being set up into a
    ConnectionError (``exc`` here), or loses it inside SUBSCRIBE. A loop that catches
    Redis errors to try again would then run on and its task never end: a web process
    that could not bind its port hung in shutdown. Call this where such a loop catches.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class Bus:
    """The web process's side of the bus (asyncio)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._channel = keys.events_channel(prefix)

    async def publish(self, event: BusEvent) -> None:
        # Stamped now, so the relay (and any client) can tell how long delivery took; with
        # the current span's context, so that the relay's emit joins its trace.
        await self._client.publish(self._channel, event.encode(published_at=time.time(),
                                                               trace=tracing.carrier()))

    async def listen(self) -> AsyncIterator[BusEvent | None]:
        """Yield events forever, re-subscribing by itself whenever Redis drops.

        After each re-subscription it yields None: events published in the gap are
        lost (pub/sub keeps nothing), so the caller should resync its clients.
        """
        backoff = _MIN_BACKOFF_S
        gap = False
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                raise_if_cancelled()
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        # Subscribed only once Redis confirms it: it may refuse (an ACL
                        # without the channel), and that must back off, not resync at once.
                        backoff = _MIN_BACKOFF_S
                        if gap:
                            gap = False
                            yield None
                        continue
                    if kind != "message":
                        continue
                    try:
                        yield decode_event(message["data"])
                    except ValueError:
                        log.warning("dropping malformed bus message")
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise_if_cancelled(exc)
                log.warning("event bus lost Redis (%s); re-subscribing in %.1fs", exc, backoff)
                gap = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:
                raise_if_cancelled(exc)
                # Whatever went wrong, live events must not stop for good.
                log.exception("event bus failed; re-subscribing in %.1fs", backoff)
                gap = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class SyncBus:
    """A worker's side of the bus: publish only."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._channel = keys.events_channel(prefix)

    def publish(self, event: BusEvent) -> None:
        self._client.publish(self._channel, event.encode(published_at=time.time(),
                                                         trace=tracing.carrier()))
