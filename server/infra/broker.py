"""The Dramatiq broker: Redis, our namespace, redelivery bounds and the middleware stack."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from server.core import keys
from server.core.jobs import actor_for
from server.core.lifecycle import hung_after_ms
from server.data.models import Job
from server.infra import tracing
from server.infra.fair import USER_OPTION, FairQueues
from server.infra.settings import Settings

# Maintenance (requeueing the unacked messages of dead workers) on every broker call
# instead of 1 in 1000: with idle consumers polling about once a second this bounds
# redelivery after a crash by heartbeat timeout + ~1 s. It costs one ZRANGEBYSCORE.
MAINTENANCE_CHANCE = 1_000_000


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast instead of hanging when Redis is unreachable."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                                health_check_interval=30)


class FairRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with a job's message for now (not delayed) put in its
    owner's waiting list instead of the queue (``server.infra.fair``): the first send, a
    delayed message once due, a retry once its backoff is over. Delayed messages go to
    Dramatiq's delay queue as before."""

    fair: FairQueues

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        user = message.options.get(USER_OPTION)
        if delay or not user:
            return super().enqueue(message, delay=delay)
        self.emit_before("enqueue", message, delay)
        stored: Message[Any] = self.fair.push(message, str(user))
        self.emit_after("enqueue", stored, delay)
        return stored


def build_broker(settings: Settings, *, maintenance: bool = True) -> FairRedisBroker:
    """A Redis broker for this deployment (Dramatiq's default middleware included).

    Only workers do maintenance: a web process that happened to enqueue right after a
    Redis outage would otherwise requeue the messages of workers that are alive but
    have not beaten since Redis came back.
    """
    broker = FairRedisBroker(  # type: ignore[no-untyped-call]
        client=redis_client(settings.require_redis()),
        namespace=keys.dramatiq_namespace(settings.redis_prefix),
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        maintenance_chance=MAINTENANCE_CHANCE if maintenance else 0,
    )
    broker.fair = FairQueues(
        broker.client, prefix=settings.redis_prefix,
        heartbeat_timeout_ms=settings.worker_heartbeat_timeout_ms,
        per_user_cap=settings.max_jobs_in_flight_per_user,
        # An entry whose end was never reported (Redis away at that moment) stops
        # counting after this: a run of the default time limit that long is taken for
        # hung (workers.middleware.leases).
        stale_ms=int(hung_after_ms(settings.job_time_limit_s * 1000)))
    return broker


def install(broker: dramatiq.Broker, *middleware: dramatiq.Middleware) -> None:
    """Add job middleware so that it sees the final outcome of each message.

    It goes before Retries: Dramatiq runs ``after_*`` hooks in reverse order, so ours
    run after Retries has decided whether the message failed for good (FACTS.md §1).
    """
    for item in middleware:
        broker.add_middleware(item, before=Retries)


# When a job went back in the queue (epoch ms), on the message of a failed job's retry:
# its wait counts from then, not from when the job was made (workers' JobTimings).
QUEUED_OPTION = "darkroom_queued_ms"


def send_job(broker: RedisBroker, job: Job, *, delay_ms: int | None = None,
             queued_ms: int | None = None) -> None:
    """Enqueue the message a stored job names (its ``message_id``)."""
    assert job.message_id is not None
    enqueue_job(broker, job_id=job.id, message_id=job.message_id,
                actor_name=actor_for(job.type, job.priority), queue_name=job.queue,
                max_attempts=job.max_attempts, delay_ms=delay_ms, user_id=job.user_id,
                queued_ms=queued_ms)


def enqueue_job(broker: RedisBroker, *, job_id: str, message_id: str, actor_name: str,
                queue_name: str, max_attempts: int, delay_ms: int | None = None,
                user_id: str | None = None, queued_ms: int | None = None) -> None:
    """Send the message for a stored job; its only argument is the job id.

    With tracing on, the send is a span (``enqueue <queue>``) whose context the message
    carries (``tracing.MESSAGE_OPTION``), for the worker's job span to continue.
    """
    message: Message[object] = Message(
        queue_name=queue_name, actor_name=actor_name, args=(job_id,), kwargs={},
        message_id=message_id,
        # Per-job attempts: Retries reads max_retries from the message before the actor.
        options={"max_retries": max(0, max_attempts - 1),
                 # Its owner: whose turn it waits for (server.infra.fair).
                 **({USER_OPTION: user_id} if user_id else {}),
                 **({QUEUED_OPTION: queued_ms} if queued_ms is not None else {})},
    )
    if not tracing.enabled():
        broker.enqueue(message, delay=delay_ms or None)
        return
    with tracing.span(f"enqueue {queue_name}", kind="producer", attributes={
            "messaging.system": "dramatiq", "messaging.operation.type": "send",
            "messaging.destination.name": queue_name, "messaging.message.id": message_id,
            "darkroom.job.id": job_id, "darkroom.delay_ms": delay_ms or 0}):
        carrier = tracing.carrier()
        if carrier:
            message.options[tracing.MESSAGE_OPTION] = carrier
        broker.enqueue(message, delay=delay_ms or None)
