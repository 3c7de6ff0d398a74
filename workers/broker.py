"""The Dramatiq broker: Redis, our namespace, and the middleware stack."""

from __future__ import annotations

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from server import keys
from server.settings import Settings

IMAGE_QUEUE = "images"
IMAGE_ACTOR = "image.process"


def build_broker(settings: Settings, *extra: dramatiq.Middleware) -> RedisBroker:
    """A Redis broker for this deployment; ``extra`` middleware see the final outcome of a job.

    They are inserted before Retries: Dramatiq runs ``after_*`` hooks in reverse order, so
    they run after Retries has decided whether the message failed for good (FACTS.md §1).
    """
    broker = RedisBroker(url=settings.redis_url,
                         namespace=keys.dramatiq_namespace(settings.redis_prefix))
    for middleware in extra:
        broker.add_middleware(middleware, before=Retries)
    return broker


def enqueue_job(broker: RedisBroker, *, job_id: str, actor_name: str, queue_name: str,
                delay_ms: int | None = None) -> None:
    """Send the message for a stored job; its only argument is the job id."""
    message: Message[object] = Message(queue_name=queue_name, actor_name=actor_name,
                                       args=(job_id,), kwargs={}, options={})
    broker.enqueue(message, delay=delay_ms or None)
