"""Hand a stored job to the queue and announce it; undo the store if Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from types import EllipsisType
from typing import Any

import redis

from server.core import keys
from server.core.errors import ApiError, Problem, not_found
from server.core.events import BusEvent
from server.core.jobs import PRIORITY_ORDER, TransitionError, queue_for
from server.data import store
from server.data.models import Job, as_utc, utcnow
from server.data.store import JobView
from server.infra.broker import send_job
from server.services import live_views, outcomes
from server.services.context import Services

log = logging.getLogger(__name__)


async def enqueue(state: Services, view: JobView, *, delay_s: int = 0,
                  undo: Callable[[], Awaitable[object]], queued_ms: int | None = None,
                  position: int | EllipsisType | None = ...) -> dict[str, Any]:
    """Send the job's message and announce it (``job:queued``); returns the <Job>
    announced. If Redis is unreachable, run ``undo`` and raise UNAVAILABLE
    ``queue_unavailable``. ``queued_ms``: when it went back in the queue (a failed job's
    retry), which its wait is measured from; ``position``: its queue position when the
    caller knows it already (else it is read).

    No 202 without a message in the queue: a job recorded but never enqueued would
    wait forever, so the request fails as a whole and the client may try again.

    A message for now goes in one step with its event (``FairQueues.push``): no worker
    can begin the job (``job:active``) before ``job:queued`` is out, and a send that
    Redis refuses publishes nothing (its position, should it not be read, is left
    out). A delayed message is announced once sent, as ``announce`` does: it waits in
    the delay queue meanwhile.

    A send whose answer is lost after Redis ran it (the connection dropped at that
    moment) is undone all the same: its ``job:queued`` went out, for a job that is not
    there; workers skip its message, and clients drop the job at their next
    ``jobs:snapshot`` (every socket gets one after any gap in the bus).
    """
    job = view.job
    assert job.message_id is not None
    event = None
    if not delay_s:
        if isinstance(position, EllipsisType):
            try:
                position = await state.db.read(store.queue_position, job=job)
            except outcomes.UNANNOUNCED as exc:
                log.warning("job %s announced without its queue position: %s", job.id, exc,
                            extra={"job_id": job.id, "user_id": job.user_id})
                position = None
        event = state.presenter.event(view, queue_position=position)
    try:
        announced = await send(state, job, delay_s=delay_s, queued_ms=queued_ms,
                               announce=None if event is None
                               else state.bus.announcement(event))
    except redis.RedisError as exc:
        await undo()
        log.warning("refused job %s, Redis unavailable: %s", job.id, exc,
                    extra={"job_id": job.id})
        raise ApiError(Problem.UNAVAILABLE, "queue_unavailable",
                       "the job queue is unavailable; try again shortly") from None
    state.sent.add(job)
    if event is None or not announced:
        return await announce(state, view, position)
    await outcomes.run_async(outcomes.publish_batch(event), StatePorts(state))
    return dict(event.job)


async def send(state: Services, job: Job, *, delay_s: int = 0, queued_ms: int | None = None,
               announce: tuple[str, str] | None = None) -> bool:
    """Put the job's current message on its queue (raises redis errors); ``announce``:
    as ``broker.enqueue_job``, and whether it was published with the message."""
    announced: bool = await asyncio.to_thread(
        send_job, state.broker, job, delay_ms=delay_s * 1000, queued_ms=queued_ms,
        announce=announce)
    return announced


# How much longer than another a silent job whose message Dramatiq still holds is
# left to Dramatiq's redelivery: the supervisor's longest restart back-off (30 s) and a
# worker's start, with room to spare.
HELD_GRACE_S = 60


async def sweep(state: Services) -> int:
    """Send a fresh message for every job that would otherwise wait forever; returns count.

    - waiting (queued or retrying) jobs whose message never reached Redis;
    - active jobs silent for three heartbeat timeouts whose lease is gone: their run
      died. If Dramatiq still holds the message (a killed worker's, unacknowledged), a
      consumer of its queue requeues it once that worker's heartbeat is stale, and a
      restarted worker usually does so within seconds: such a job is left to Dramatiq
      for HELD_GRACE_S more, then resent all the same (a live worker may hold a message
      it will never run: one it lost from its prefetch in a Redis outage, or one behind
      hung threads). A message Dramatiq no longer holds was acknowledged before the run
      died (say, its final write failed): that job is resent at once.
    - waiting jobs whose delayed message (a retry's backoff, an upload's delay) a live
      worker fetched and lost: Dramatiq's consumer keeps fetched delayed messages in
      memory until due, and forgets them all after a Redis connection error (dramatiq
      ``ConsumerThread.run``) while they stay unacknowledged in its name, so Dramatiq
      itself redelivers them only once that worker process dies. One still in a live
      worker's hands SWEEP_AFTER_S after it was due is resent (a healthy worker moves a
      due message on within a second; were it merely late, its copy is skipped).
    Each gets a new message id, so an older copy that turns up after all is skipped.
    """
    settings = state.settings
    now = utcnow()
    unsent_before = now - timedelta(seconds=settings.sweep_after_s)
    silent_before = now - timedelta(seconds=max(settings.sweep_after_s,
                                                3 * settings.worker_heartbeat_timeout_ms / 1000))
    stuck = [(job, unsent_before)
             for job in await state.db.read(store.unsent_jobs, changed_before=unsent_before)]
    held_until = silent_before - timedelta(seconds=HELD_GRACE_S)
    held: dict[str, set[str]] = {}
    for job in await state.db.read(store.silent_active_jobs, changed_before=silent_before):
        if await state.redis.exists(keys.job_lease(settings.redis_prefix, job.id)):
            continue
        if job.queue not in held:
            held[job.queue] = await _held_message_ids(state, job.queue)
        if job.message_id in held[job.queue] and as_utc(job.updated_at) >= held_until:
            log.info("job %s is silent but Dramatiq still holds its message: left for its "
                     "redelivery", job.id, extra={"job_id": job.id, "user_id": job.user_id})
            continue
        stuck.append((job, silent_before))
    renewals: list[tuple[str, datetime, str | None]] = [
        (job.id, cutoff, None) for job, cutoff in stuck]
    lost = await _lost_delayed_messages(state, due_before_ms=unsent_before.timestamp() * 1000)
    renewals += [(job_id, now, message_id) for job_id, message_id in lost.items()]
    sent = 0
    for job_id, cutoff, lost_message_id in renewals:
        renewed = await state.db.write(store.renew_message, job_id=job_id, changed_before=cutoff,
                                       lost_message_id=lost_message_id)
        if renewed is None:
            continue
        job = renewed
        remaining = 0
        if job.run_at is not None:
            remaining = max(0, math.ceil((as_utc(job.run_at) - now).total_seconds()))
        await send(state, job, delay_s=remaining)
        state.sent.add(job)
        log.warning("sent a new message for stuck job %s (%s)", job.id, job.state,
                    extra={"job_id": job.id, "user_id": job.user_id})
        sent += 1
    return sent


async def _lost_delayed_messages(state: Services, *, due_before_ms: float) -> dict[str, str]:
    """Job id → message id of the delayed messages live workers fetched and still hold,
    due before ``due_before_ms``: lost from the worker's memory (see ``sweep``). Reads
    only what live workers hold of each delay queue (their prefetch, bounded)."""
    settings = state.settings
    namespace = keys.dramatiq_namespace(settings.redis_prefix)
    now_ms = time.time() * 1000
    workers = [w.decode() if isinstance(w, bytes) else str(w) for w in
               await state.redis.zrangebyscore(keys.dramatiq_heartbeats(namespace),
                                               now_ms - settings.worker_heartbeat_timeout_ms,
                                               "+inf")]
    delay_queues = sorted({keys.dramatiq_delay_queue(queue_for(spec.queue, priority))
                           for spec in state.task_types.values() for priority in PRIORITY_ORDER})
    lost: dict[str, str] = {}
    if not workers:
        return lost
    async with state.redis.pipeline(transaction=False) as pipe:
        for queue in delay_queues:
            for worker in workers:
                pipe.smembers(keys.dramatiq_acks(namespace, worker, queue))
        held = await pipe.execute()
    for index, queue in enumerate(delay_queues):
        ids = sorted(set().union(*held[index * len(workers):(index + 1) * len(workers)]))
        if not ids:
            continue
        for body in await state.redis.hmget(keys.dramatiq_messages(namespace, queue), ids):
            if body is None:  # acknowledged meanwhile
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
                message = json.loads(body)
                if float(message["options"]["eta"]) < due_before_ms:
                    lost[str(message["args"][0])] = str(message["message_id"])
    return lost


async def _held_message_ids(state: Services, queue: str) -> set[str]:
    """The message ids of a queue's messages Dramatiq has not acknowledged: waiting in it
    or held by a worker. As many as the queue's workers have threads and prefetch (the
    fair layer moves no more), and read only for silent jobs whose lease is gone."""
    namespace = keys.dramatiq_namespace(state.settings.redis_prefix)
    bodies = await state.redis.hvals(keys.dramatiq_messages(namespace, queue))
    ids = set()
    for body in bodies:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ids.add(str(json.loads(body)["message_id"]))
    return ids


async def retry_failed(state: Services, job_id: str, *, user_id: str | None = None,
                       dead_letters_only: bool = True,
                       retryable_only: bool = False) -> dict[str, Any]:
    """Run a failed job again under the same id with fresh attempts; returns its <Job>.

    CONFLICT ``input_missing`` if its image was deleted, CONFLICT ``conflict`` if it is not
    failed (or someone retried it a moment ago), NOT_FOUND if there is no such job.
    """
    found = await state.db.read(store.get_job, job_id=job_id, user_id=user_id)
    if found is None:
        raise not_found("job" if user_id else "dead letter")
    if retryable_only and not (found.job.error or {}).get("retryable", False):
        raise ApiError(Problem.CONFLICT, "not_retryable",
                       "this job failed for a reason another run cannot fix")
    if found.job.image_id is not None and (
            found.image is None
            or not await asyncio.to_thread(state.storage.original(found.job.image_id).exists)):
        raise ApiError(Problem.CONFLICT, "input_missing",
                       "the image this job processed was deleted, so it cannot run again")
    try:
        requeued = await state.db.write(store.requeue_failed, job_id=job_id, user_id=user_id,
                                        dead_letters_only=dead_letters_only)
    except TransitionError:
        raise ApiError(Problem.CONFLICT, "conflict", "only a failed job can run again") from None
    if requeued is None:
        raise not_found("job" if user_id else "dead letter")
    undo_fields, view = requeued
    if view.job.batch_id:
        # The batch counts one finished job fewer from now: its summaries are news again.
        try:
            await state.redis.delete(keys.batch_shown(state.settings.redis_prefix,
                                                      view.job.batch_id))
        except redis.RedisError as exc:  # the enqueue below tells the caller Redis is away
            log.warning("could not reset batch %s's last summary: %s", view.job.batch_id, exc)

    async def undo() -> None:
        await state.db.write(store.dead_letter, job_id=job_id, **undo_fields)

    # Its wait (the wait-time metric) counts from now, not from when the job was made.
    return await enqueue(state, view, undo=undo,
                         queued_ms=int(as_utc(view.job.updated_at).timestamp() * 1000))


async def announce(state: Services, view: JobView, position: int | EllipsisType | None = ...,
                   *, deliveries: Sequence[JobView] = ()) -> dict[str, Any]:
    """Publish the job's current state to its owner, then send the webhook deliveries its
    end made (one Redis refuses is left for the sweeper); returns the <Job> sent.

    ``position``: its queue position when the caller knows it already (else it is read).
    """
    event = await outcomes.run_async(
        outcomes.changed(state.presenter, view, deliveries, position=position),
        StatePorts(state))
    return dict(event.job)


async def publish(state: Services, event: BusEvent) -> None:
    """Publish any event (a job's followed by its batch's summary); failures are logged."""
    await outcomes.run_async(outcomes.publish(event), StatePorts(state))


class StatePorts:
    """The outcomes' steps in the web process (``outcomes.Ports``, asynchronously)."""

    def __init__(self, state: Services) -> None:
        self.state = state

    async def queue_position(self, job: Job) -> int | None:
        position: int | None = await self.state.db.read(store.queue_position, job=job)
        return position

    async def batch_progress(self, batch_id: str) -> store.BatchProgress | None:
        found: store.BatchProgress | None = await self.state.db.read(
            store.batch_progress, batch_id=batch_id, user_id=None)
        return await live_views.current_batch(self.state.bus, found)

    async def publish(self, event: BusEvent) -> None:
        await self.state.bus.publish(event)

    async def send(self, job: Job) -> None:
        await send(self.state, job)

    async def note_sent(self, job: Job) -> None:
        self.state.sent.add(job)
