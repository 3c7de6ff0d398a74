"""Deployment-wide metrics in Redis: write a process's tally, report sockets, read a scrape.

Every process adds its increments to one hash with a single pipelined batch (workers
after each message, web processes every few seconds and before answering a scrape),
so any web process's ``GET /metrics`` shows the figures of the whole deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

import redis
import redis.asyncio as aioredis

from server.core import keys
from server.infra import metrics

log = logging.getLogger(__name__)

# Web processes write their tally and socket counts this often…
REPORT_INTERVAL_S = 5.0
# …and a socket report older than three intervals is a process that died or hung.
SOCKETS_MAX_AGE_S = 3 * REPORT_INTERVAL_S


def process_name() -> str:
    """``host:pid``: how a web process names itself in the sockets report."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _queue_increments(pipe: redis.client.Pipeline | aioredis.client.Pipeline, key: str,
                      increments: metrics.Increments) -> None:
    for name, count in increments.counts.items():
        pipe.hincrby(key, name, count)
    for name, amount in increments.sums.items():
        pipe.hincrbyfloat(key, name, amount)


def flush_sync(client: redis.Redis, prefix: str, tally: metrics.Tally) -> None:
    """Add the tally to the shared hash in one round trip (worker threads).

    If Redis refuses, the increments go back into the tally for the next flush.
    """
    increments = tally.drain()
    if not increments:
        return
    try:
        pipe = client.pipeline(transaction=False)
        _queue_increments(pipe, keys.metrics_samples(prefix), increments)
        pipe.execute()
    except redis.RedisError as exc:
        tally.restore(increments)
        log.warning("metrics not written yet: %s", exc)


async def flush(client: aioredis.Redis, prefix: str, tally: metrics.Tally) -> None:
    """Add the tally to the shared hash in one round trip (web process)."""
    increments = tally.drain()
    if not increments:
        return
    try:
        pipe = client.pipeline(transaction=False)
        _queue_increments(pipe, keys.metrics_samples(prefix), increments)
        await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        tally.restore(increments)
        log.warning("metrics not written yet: %s", exc)


async def report_sockets(client: aioredis.Redis, prefix: str, process: str,
                         sockets: int, users: int) -> None:
    """This web process's socket and user counts, stamped with the time."""
    await client.hset(keys.metrics_sockets(prefix), process,
                      metrics.encode_socket_report(sockets, users, time.time()))


async def report_forever(client: aioredis.Redis, prefix: str, tally: metrics.Tally,
                         counts: Callable[[], tuple[int, int]]) -> None:
    """Every REPORT_INTERVAL_S: write the tally and the socket counts; tidy up on exit."""
    process = process_name()
    key = keys.metrics_sockets(prefix)
    try:
        while True:
            await flush(client, prefix, tally)
            try:
                await report_sockets(client, prefix, process, *counts())
            except (redis.RedisError, OSError) as exc:
                log.warning("socket counts not reported: %s", exc)
            await asyncio.sleep(REPORT_INTERVAL_S)
    finally:
        # Shutting down: the last increments, and our sockets leave the report at once.
        with contextlib.suppress(Exception):
            await flush(client, prefix, tally)
            await client.hdel(key, process)


async def read_samples(client: aioredis.Redis, prefix: str) -> dict[bytes | str, bytes | str]:
    """Every shared counter and histogram field."""
    return dict(await client.hgetall(keys.metrics_samples(prefix)))


async def read_sockets(client: aioredis.Redis, prefix: str) -> list[metrics.SocketReport]:
    """The live web processes' socket reports; stale ones are removed on the way."""
    key = keys.metrics_sockets(prefix)
    live, stale = metrics.live_socket_reports(await client.hgetall(key), now=time.time(),
                                              max_age_s=SOCKETS_MAX_AGE_S)
    if stale:
        await client.hdel(key, *stale)
    return live


async def read_queue_messages(client: aioredis.Redis, namespace: str,
                              queues: Iterable[str]) -> dict[str, metrics.QueueMessages]:
    """How many messages Dramatiq holds for each queue, with those still waiting in
    their owners' lists (server.infra.fair) counted as ready (one transaction, so consistent)."""
    names = sorted(queues)
    prefix = namespace.removesuffix(":dramatiq")
    pipe = client.pipeline(transaction=True)
    for name in names:
        pipe.llen(keys.dramatiq_queue(namespace, name))
        pipe.hlen(keys.dramatiq_messages(namespace, name))
        pipe.hlen(keys.dramatiq_messages(namespace, keys.dramatiq_delay_queue(name)))
        pipe.hlen(keys.fair_messages(prefix, name))
    replies = await pipe.execute()
    found = {}
    for n, name in enumerate(names):
        ready, held, delayed, turns = (int(v) for v in replies[4 * n: 4 * n + 4])
        # The hash holds every message not yet acknowledged: the list's and the fetched.
        found[name] = metrics.QueueMessages(ready=ready + turns, delayed=delayed,
                                            unacked=max(0, held - ready))
    return found
