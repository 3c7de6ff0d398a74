"""Publish and subscribe job events over Redis pub/sub.

A job's event is published by one script that also keeps the job's live state
(``server.core.live``): a ``job:active`` (or a progress step stored in the database)
seeds it, any other state marks it ended, and a worker's ``push`` of a progress step
writes it only while it still names that attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeGuard

import redis
import redis.asyncio as aioredis

from server.core import keys, live
from server.core.events import BatchEvent, BusEvent, JobEvent, decode_event
from server.core.jobs import JobState
from server.infra import tracing

log = logging.getLogger(__name__)

# KEYS[1]: the job's live hash. ARGV: mode, attempt, seq, stage, progress, channel,
# message, live TTL (ms), ended TTL (ms), and for a push the highest seq its attempt may
# push (its row's seq + SEQ_BLOCK). Modes:
#   "push": a worker's progress step, onto a hash of its attempt that has not ended.
#     1 = pushed; 0 = not pushed, use the database (no hash, a hash left by an earlier
#     attempt, one already at or past this seq, or Redis refuses writes); -1 = not
#     pushed, the run is over (the job left this attempt: a later write's seq is above
#     the attempt's block).
#   "active": seed the hash (a job:active, or a step the database took).
#   "ended": the job left active: note the seq of the event saying so, keeping the last
#     step (a reader that read the row before the end still shows it).
# Nothing goes back to an older seq. The state is written with pcall: a Redis out of
# memory refuses the write but still publishes, as a plain PUBLISH would (an end that
# cannot be noted removes the hash: the run's next step then asks the database).
_PUBLISH = """
local had = redis.call('HMGET', KEYS[1], 'attempt', 'seq', 'ended')
local seq = tonumber(ARGV[3])
local top = math.max(tonumber(had[2] or 0), tonumber(had[3] or 0))
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
if ARGV[1] == 'push' then
  if not had[1] then return 0 end
  if had[3] or had[1] ~= ARGV[2] then
    if top > tonumber(ARGV[10]) then return -1 end
    return 0
  end
  if top >= seq then return 0 end
  if failed(redis.pcall('HSET', KEYS[1], 'seq', ARGV[3], 'stage', ARGV[4],
                        'progress', ARGV[5])) then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  return 1
end
if ARGV[1] == 'active' then
  if top < seq then
    redis.call('DEL', KEYS[1])
    if not failed(redis.pcall('HSET', KEYS[1], 'attempt', ARGV[2], 'seq', ARGV[3],
                              'stage', ARGV[4], 'progress', ARGV[5])) then
      redis.call('PEXPIRE', KEYS[1], ARGV[8])
    end
  end
elseif had[1] and top < seq then
  if failed(redis.pcall('HSET', KEYS[1], 'ended', ARGV[3])) then
    redis.call('DEL', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[9])
  end
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""
# A batch's summary: published unless one counting more finished jobs (``BatchEvent.rank``)
# was, for that batch, within the key's life. KEYS[1] batch_shown; ARGV rank, channel,
# message, ttl.
_PUBLISH_BATCH = """
local shown = tonumber(redis.call('GET', KEYS[1]) or '-1')
local rank = tonumber(ARGV[1])
if rank < shown then return 0 end
redis.pcall('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
# How long a batch's last published rank is kept: longer than any batch runs in practice.
BATCH_SHOWN_TTL_MS = 24 * 3600 * 1000


def _batch_call(prefix: str, channel: str, event: BatchEvent, rank: int,
                message: str) -> tuple[list[str], list[str | int]]:
    return ([keys.batch_shown(prefix, str(event.batch["id"]))],
            [rank, channel, message, BATCH_SHOWN_TTL_MS])


# What a push answers.
PUSHED, NO_LIVE_STATE, RUN_OVER = 1, 0, -1


def _script_call(prefix: str, channel: str, event: JobEvent, mode: str, message: str,
                 ceiling: int = 0) -> tuple[list[str], list[str | int]]:
    job = event.job
    return ([keys.job_live(prefix, str(job["id"]))],
            [mode, int(job["attempt"]), int(job["seq"]), str(job["stage"]),
             int(job["progress"]), channel, message, live.LIVE_TTL_MS, live.ENDED_TTL_MS,
             ceiling])


def _keeps_live(event: BusEvent) -> TypeGuard[JobEvent]:
    """A job's event with what its live state needs (any <Job> has it)."""
    return isinstance(event, JobEvent) and all(
        name in event.job for name in ("id", "attempt", "seq", "stage", "progress"))


def _mode(event: JobEvent) -> str:
    return "active" if event.job.get("state") == JobState.ACTIVE.value else "ended"


def _scripted(prefix: str, channel: str, event: BusEvent,
              message: str) -> tuple[str, list[str], list[str | int]] | None:
    """How an event is published, from either side of the bus: through a script (its
    source, keys and arguments), or None for a plain PUBLISH."""
    if _keeps_live(event):
        return (_PUBLISH, *_script_call(prefix, channel, event, _mode(event), message))
    if isinstance(event, BatchEvent) and (rank := event.rank) is not None:
        return (_PUBLISH_BATCH, *_batch_call(prefix, channel, event, rank, message))
    return None


def _states(ids: list[str], rows: list[list[bytes | None]]) -> dict[str, live.LiveState]:
    found = {job_id: live.parse(row) for job_id, row in zip(ids, rows, strict=True)}
    return {job_id: state for job_id, state in found.items() if state is not None}


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
        self._prefix = prefix
        self._channel = keys.events_channel(prefix)
        self._scripts = {source: client.register_script(source)
                         for source in (_PUBLISH, _PUBLISH_BATCH)}

    async def publish(self, event: BusEvent) -> None:
        # Stamped now, so the relay (and any client) can tell how long delivery took; with
        # the current span's context, so that the relay's emit joins its trace.
        message = event.encode(published_at=time.time(), trace=tracing.carrier())
        call = _scripted(self._prefix, self._channel, event, message)
        if call is None:
            await self._client.publish(self._channel, message)
        else:
            source, names, args = call
            await self._scripts[source](keys=names, args=args)

    def announcement(self, event: JobEvent) -> tuple[str, str]:
        """The channel and message of a waiting job's event (its ``job:queued``), for the
        queue's script to publish in the step that stores the job's message
        (``FairQueues.push``): a plain PUBLISH, stamped now. A waiting job has no live
        state to keep: a new job has none, and a failed job run again has at most its
        last run's, marked ended by that run's end and replaced by the next job:active
        (``publish`` would mark it ended once more: this matters only should the end's
        own event have been lost while that run still pushed steps, and those steps have
        lower seqs than this event, so clients drop them)."""
        if event.job.get("state") != JobState.QUEUED.value:
            raise ValueError(f"only a waiting job's event is announced so: {event.name}")
        return self._channel, event.encode(published_at=time.time(), trace=tracing.carrier())

    async def live_states(self, job_ids: Iterable[str]) -> dict[str, live.LiveState]:
        """The live state of those jobs that have one (one round trip)."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(keys.job_live(self._prefix, job_id), live.FIELDS)
            rows = await pipe.execute()
        return _states(ids, rows)

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
        self._prefix = prefix
        self._channel = keys.events_channel(prefix)
        self._scripts = {source: client.register_script(source)
                         for source in (_PUBLISH, _PUBLISH_BATCH)}

    def publish(self, event: BusEvent) -> None:
        message = event.encode(published_at=time.time(), trace=tracing.carrier())
        call = _scripted(self._prefix, self._channel, event, message)
        if call is None:
            self._client.publish(self._channel, message)
        else:
            source, names, args = call
            self._scripts[source](keys=names, args=args)

    def push(self, event: JobEvent, ceiling: int) -> int:
        """Publish a running job's progress step from Redis alone (``server.core.live``):
        PUSHED; NO_LIVE_STATE (nothing published: report it through the database); or
        RUN_OVER (nothing published: the job left this attempt). ``ceiling``: the highest
        seq the attempt may push (a seq above it in the hash is a later write's)."""
        message = event.encode(published_at=time.time(), trace=tracing.carrier())
        names, args = _script_call(self._prefix, self._channel, event, "push", message,
                                   ceiling)
        return int(self._scripts[_PUBLISH](keys=names, args=args))

    def live_states(self, job_ids: Iterable[str]) -> dict[str, live.LiveState]:
        """The live state of those jobs that have one (one round trip)."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        with self._client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(keys.job_live(self._prefix, job_id), live.FIELDS)
            rows = pipe.execute()
        return _states(ids, rows)
