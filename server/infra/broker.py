"""The Dramatiq broker: Redis, our namespace, redelivery bounds and the middleware stack."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Retries

from server.core import keys
from server.core.jobs import actor_for
from server.core.lifecycle import hung_after_ms
from server.data.models import Job
from server.infra import tracing
from server.infra.fair import USER_OPTION, FairQueues
from server.infra.fair import ring as fair_ring
from server.infra.settings import Settings

log = logging.getLogger(__name__)

# Maintenance (requeueing the unacked messages of dead workers) on every broker call
# instead of 1 in 1000: with idle consumers polling about once a second this bounds
# redelivery after a crash by heartbeat timeout + ~1 s. It costs one ZRANGEBYSCORE.
MAINTENANCE_CHANCE = 1_000_000


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast instead of hanging when Redis is unreachable."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                                health_check_interval=30)


# Redis rounds a BLPOP's timeout up to its clock tick (100 ms at the default hz 10):
# shorter back-offs sleep, as Dramatiq's do. And at most this long, under the client's
# socket timeout (30 s), whatever the worker timeout.
_BELL_MIN_MS = 100
_BELL_MAX_MS = 25_000


class PromptConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer of one queue, fetching as soon as there is a message for it.

    Dramatiq's consumer sleeps after every fetch that brings nothing, each sleep twice the
    last, up to the worker timeout (1 s), and a message that arrives meanwhile waits for
    the sleep to end. It also counts as such a fetch every round in which it had no room
    (as many of its messages in hand as it may prefetch, its process's threads busy with
    them): under a steady load the sleeps grew while the threads worked, and a thread
    that ended its job waited out the rest of one (often 100-300 ms) for its next message.
    Measured with 12 MP uploads: the machine idle 15 % of the time with work waiting.
    Here:

    - with no room, it waits for one of its own messages to end (``ack``, ``nack``), at
      most the worker timeout, and counts no miss;
    - with room and nothing fetched, it backs off as Dramatiq does, but a wait of 100 ms
      or more is spent on the queue's bell (``keys.fair_bell``: the fair dispatcher rings
      it once per message it moves in: at a send, a worker's end or tick) instead of
      asleep, so such a message is fetched at once. A message that reaches the queue
      another way (Dramatiq's redelivery of a dead worker's) is found by the polls.

    Delay queues (``.DQ``) are consumed as Dramatiq does: their messages end in this same
    thread. The bell needs Redis 6 (a BLPOP timeout under a second); where BLPOP is
    refused (an older Redis, an ACL without blocking commands) the consumer sleeps instead.
    """

    def __init__(self, broker: FairRedisBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._room = threading.Event()
        self._delay_queue = queue_name.endswith((".DQ", ".XQ"))
        # None once Redis refused to BLPOP: the back-off sleeps then, as Dramatiq's does.
        self._bell: str | None = None if self._delay_queue else \
            keys.fair_bell(broker.fair.prefix, queue_name)

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def __next__(self) -> Any:
        if not self._delay_queue and not self.message_cache:
            if self.outstanding_message_count >= self.prefetch:
                self._room.wait(self.timeout / 1000)
                self._room.clear()  # the next round sees the room an ack made, if any
                return None
            try:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    self.misses, backoff_ms = compute_backoff(self.misses,
                                                              max_backoff=self.timeout)
                    self._wait_for_bell(backoff_ms)
                    return None
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        # Dramatiq's own: the next message of the cache (or its fetch and back-off).
        return super().__next__()  # type: ignore[no-untyped-call]

    def _wait_for_bell(self, backoff_ms: int) -> None:
        if backoff_ms < _BELL_MIN_MS or self._bell is None:
            time.sleep(backoff_ms / 1000)
            return
        try:
            self.broker.client.blpop([self._bell],
                                     timeout=min(backoff_ms, _BELL_MAX_MS) / 1000)
        except redis.ResponseError as exc:
            log.warning("queue %s: waiting on its bell refused (%s); polling instead",
                        self.queue_name, exc)
            self._bell = None
            time.sleep(backoff_ms / 1000)


class FairRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with a job's message for now (not delayed) put in its
    owner's waiting list instead of the queue (``server.infra.fair``): the first send, a
    delayed message once due, a retry once its backoff is over. Delayed messages go to
    Dramatiq's delay queue as before."""

    fair: FairQueues

    @property
    def consumer_class(self) -> type[PromptConsumer]:
        return PromptConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        return self.send(message, delay=delay)[0]

    def send(self, message: Message[Any], *, delay: int | None = None,
             announce: tuple[str, str] | None = None) -> tuple[Message[Any], bool]:
        """``enqueue``, and whether ``announce`` was published with it.

        ``announce``: a channel and the job's event, published by the script that stores
        an owner's message for now, before any worker can take it (``FairQueues.push``).
        A delayed message or one without an owner is sent without it (False): its sender
        publishes the event itself.
        """
        user = message.options.get(USER_OPTION)
        if delay:
            return super().enqueue(message, delay=delay), False
        if not user:  # no owner, no turn, nobody's events: straight in, as Dramatiq sends
            sent: Message[Any] = super().enqueue(message)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    fair_ring(pipe, self.fair.prefix, message.queue_name)
                    pipe.execute()
            except redis.RedisError as exc:  # sent all the same: a poll finds it
                log.warning("could not ring queue %s's bell: %s", message.queue_name, exc)
            return sent, False
        self.emit_before("enqueue", message, delay)
        stored: Message[Any] = self.fair.push(message, str(user), announce=announce)
        self.emit_after("enqueue", stored, delay)
        return stored, announce is not None


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
             queued_ms: int | None = None, announce: tuple[str, str] | None = None) -> bool:
    """Enqueue the message a stored job names (its ``message_id``; ``announce``: as
    ``enqueue_job``)."""
    assert job.message_id is not None
    return enqueue_job(broker, job_id=job.id, message_id=job.message_id,
                       actor_name=actor_for(job.type, job.priority), queue_name=job.queue,
                       max_attempts=job.max_attempts, delay_ms=delay_ms,
                       user_id=job.user_id, queued_ms=queued_ms, announce=announce)


def enqueue_job(broker: RedisBroker, *, job_id: str, message_id: str, actor_name: str,
                queue_name: str, max_attempts: int, delay_ms: int | None = None,
                user_id: str | None = None, queued_ms: int | None = None,
                announce: tuple[str, str] | None = None) -> bool:
    """Send the message for a stored job; its only argument is the job id.

    ``announce``: a channel and the job's event (its ``job:queued``), published by the
    script that stores a message for now (not delayed) with an owner, before any worker
    can take it (``FairQueues.push``). Returns whether it was: a delayed message,
    or one without an owner, is sent without it, and the caller publishes it.

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
        return _send(broker, message, delay_ms or None, announce)
    with tracing.span(f"enqueue {queue_name}", kind="producer", attributes={
            "messaging.system": "dramatiq", "messaging.operation.type": "send",
            "messaging.destination.name": queue_name, "messaging.message.id": message_id,
            "darkroom.job.id": job_id, "darkroom.delay_ms": delay_ms or 0}):
        carrier = tracing.carrier()
        if carrier:
            message.options[tracing.MESSAGE_OPTION] = carrier
        return _send(broker, message, delay_ms or None, announce)


def _send(broker: RedisBroker, message: Message[object], delay: int | None,
          announce: tuple[str, str] | None) -> bool:
    if not isinstance(broker, FairRedisBroker):
        broker.enqueue(message, delay=delay)
        return False
    return broker.send(message, delay=delay, announce=announce)[1]
