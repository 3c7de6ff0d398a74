"""Webhooks: the URLs a user registered, and the deliveries queued when a job of theirs ends
(the rules: ``server.core.webhooks``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from server.core import quotas, webhooks
from server.core.jobs import is_final
from server.core.tasks import WEBHOOK_DELIVER, WEBHOOK_MAX_ATTEMPTS
from server.data.models import Job, Webhook, new_id, utcnow
from server.data.store.jobs import create_job
from server.data.store.views import JobView

# Read at every job's end (built once: building it would cost more than running it).
_HOOK_URLS = (select(Webhook.url).where(Webhook.user_id == bindparam("user_id"))
              .order_by(Webhook.id))


def create_webhook(s: Session, /, *, user_id: str, url: str,
                   max_per_user: int = quotas.MAX_WEBHOOKS_PER_USER) -> Webhook | None:
    """Register a URL; None when the user already has ``max_per_user``."""
    count = s.scalar(select(func.count()).select_from(Webhook).where(Webhook.user_id == user_id))
    if not quotas.has_room(count or 0, max_per_user):
        return None
    hook = Webhook(id=new_id(), user_id=user_id, url=url, created_at=utcnow())
    s.add(hook)
    s.flush()
    return hook


def list_webhooks(s: Session, /, *, user_id: str) -> list[Webhook]:
    """The user's URLs, oldest first."""
    return list(s.scalars(select(Webhook).where(Webhook.user_id == user_id)
                          .order_by(Webhook.id)))


def deliveries_of(s: Session, /, *, job_id: str, limit: int) -> list[Job]:
    """The newest ``limit`` webhook deliveries of the job's ends, newest first."""
    return list(s.scalars(select(Job).where(Job.parent_id == job_id)
                          .order_by(Job.id.desc()).limit(limit)))


def delete_webhook(s: Session, /, *, user_id: str, webhook_id: str) -> bool:
    """Unregister one of the user's URLs; False if they have no such webhook."""
    result = s.execute(delete(Webhook).where(Webhook.id == webhook_id,
                                             Webhook.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


def end_with_deliveries(s: Session, /, *, change: Callable[..., JobView | None],
                        webhook: Callable[[JobView], tuple[str, dict[str, Any]]],
                        **fields: Any) -> tuple[JobView | None, list[JobView]]:
    """Run a state change (``transition``, ``dead_letter``, ``cancel_job``…); if it ended the
    job, queue its owner's webhook deliveries in the same transaction, so that no job ends
    without them. ``webhook`` makes the delivery's event name and body from the ended job
    (only when the owner has a webhook: the body is not made for nothing while the write
    is held). Every delivery gets the type's own attempts (WEBHOOK_MAX_ATTEMPTS) and none
    is dropped (see create_webhook_deliveries)."""
    changed = change(s, **fields)
    if changed is None or not is_final(changed.job.state):
        return changed, []
    return changed, create_webhook_deliveries(s, job=changed.job,
                                              body=lambda: webhook(changed))


def create_webhook_deliveries(s: Session, /, *, job: Job,
                              body: Callable[[], tuple[str, dict[str, Any]]]) -> list[JobView]:
    """One queued ``webhook.deliver`` job per URL the job's owner registered, each with the
    type's own attempts (WEBHOOK_MAX_ATTEMPTS); none for a delivery's own end. ``body``
    makes the event name and body, once, if there is a URL.

    None is ever dropped, however many of the owner's are unfinished: every final state is
    POSTed (the public contract). Their number is bounded upstream (job rates, at most
    MAX_WEBHOOKS_PER_USER URLs), and how many run at once is the dispatcher's to cap.
    """
    if not webhooks.announces_its_end(job.type):
        return []
    urls = list(s.scalars(_HOOK_URLS, {"user_id": job.user_id}))
    if not urls:
        return []
    event, content = body()
    return [
        create_job(s, user_id=job.user_id, task_type=WEBHOOK_DELIVER.name,
                   queue=WEBHOOK_DELIVER.queue,
                   payload=webhooks.delivery_payload(url, event, content),
                   max_attempts=WEBHOOK_MAX_ATTEMPTS, parent_id=job.id)
        for url in urls
    ]
