"""Limits on the tasks that reach outside Darkroom, checked when a job or schedule is made.

- ``webhook.deliver``: a caller may submit one more only while fewer than
  WEBHOOK_MAX_IN_FLIGHT_PER_USER of their deliveries are unfinished (429). The deliveries
  made when a job ends count towards that but are never refused or dropped (every final
  state is POSTed; ``store.create_webhook_deliveries``); a schedule's firing is skipped
  while the owner is over it (``workers.scheduler``).
- ``email.send``: ``to`` is exactly one address (422); plain users may mail only what
  EMAIL_ALLOWED_RECIPIENTS lists, admins anyone (403); per-user and deployment-wide
  send rates (429), counted per job so that the worker, which counts scheduled mail,
  never counts a job twice (``server.core.mail_limits``). The worker checks the recipient
  again, so that a schedule made before these rules mails no one it may not.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from server.core import keys
from server.core.errors import ApiError, Problem
from server.core.jobs import queue_family
from server.core.mail_limits import (
    SendRates,
    give_back_async,
    recipient_allowed,
    single_address,
    take_send_async,
)
from server.core.principal import Principal
from server.core.tasks import EMAIL_SEND, WEBHOOK_DELIVER
from server.data import store
from server.data.store import JobView
from server.services.context import Services

EMAIL_TASK = EMAIL_SEND.name
# How soon a user refused for a webhook backlog is told to try again.
BACKLOG_RETRY_S = 30

log = logging.getLogger(__name__)


def backlog_keys(state: Services, user_id: str) -> list[str]:
    """The user's lists of webhook deliveries waiting for their turn (``server.infra.fair``),
    one per queue of the family."""
    prefix = state.settings.redis_prefix
    return [keys.fair_user_list(prefix, queue, user_id)
            for queue in queue_family(WEBHOOK_DELIVER.queue)]


def backlog_refusal(waiting: int, limit: int) -> ApiError | None:
    """The 429 while ``waiting`` deliveries reach WEBHOOK_BACKLOG_PER_USER (``limit``; 0:
    no cap), else None."""
    if limit <= 0 or waiting < limit:
        return None
    wait = BACKLOG_RETRY_S
    return ApiError(Problem.RATE_LIMITED, "webhook_backlog",
                    f"{waiting} of your webhook deliveries are waiting for their receivers "
                    f"(at most {limit}); new work is refused until they catch up: try "
                    f"again in {wait} s", retry_after_s=wait)


async def check_backlog(state: Services, user_id: str) -> None:
    """429 while WEBHOOK_BACKLOG_PER_USER or more of the user's webhook deliveries wait
    for their turn (``server.infra.fair``): the deliveries of a job's end are never dropped,
    so a receiver slower than the user's uploads would otherwise let them pile up for
    ever. New uploads and tasks wait instead, until the receiver catches up."""
    limit = state.settings.webhook_backlog_per_user
    if limit <= 0:
        return
    pipe = state.redis.pipeline(transaction=False)
    for key in backlog_keys(state, user_id):
        pipe.llen(key)
    refused = backlog_refusal(sum(int(n) for n in await pipe.execute()), limit)
    if refused is not None:
        raise refused


def payload_errors(task_type: str, payload: dict[str, Any]) -> dict[str, str]:
    """What the payload schema cannot say: an e-mail's ``to`` must be one bare address."""
    if task_type == EMAIL_TASK and single_address(str(payload.get("to", ""))) is None:
        return {"payload.to": "must be exactly one address (no list, no name)"}
    return {}


async def check_task(state: Services, principal: Principal, task_type: str,
                     payload: dict[str, Any], *, schedule: bool) -> None:
    """Refuse a job (or a schedule of them) these limits do not allow; call it after the
    payload passed ``payload_errors``."""
    settings = state.settings
    if task_type == EMAIL_TASK and not principal.is_admin:
        allowed = settings.email_allowed_recipients
        if not recipient_allowed(str(payload["to"]), allowed):
            which = ("the addresses and domains in EMAIL_ALLOWED_RECIPIENTS" if allowed
                     else "no address on this server (EMAIL_ALLOWED_RECIPIENTS is empty)")
            raise ApiError(Problem.FORBIDDEN, "recipient_not_allowed",
                           f"{payload['to']} is not a recipient you may mail: without an "
                           f"admin token, e-mail may go to {which}")
    if task_type == WEBHOOK_DELIVER.name and not schedule:
        limit = settings.webhook_max_in_flight_per_user
        pending = await state.db.read(store.count_unfinished, user_id=principal.user_id,
                                      task_type=task_type)
        if pending >= limit:
            wait = settings.webhook_deadline_s
            raise ApiError(Problem.RATE_LIMITED, "too_many_deliveries",
                           f"at most {limit} of your webhook deliveries may be unfinished at "
                           f"once; try again in {wait} s",
                           retry_after_s=wait)


async def count_task(state: Services, view: JobView, undo: Callable[[], Awaitable[object]]
                     ) -> Callable[[], Awaitable[object]]:
    """Count a new e-mail job against the send rates; over one, ``undo`` (delete the job)
    and answer 429 with Retry-After.

    Returns the undo to use from then on (``undo`` itself for other types): for an e-mail
    it also gives the counted send back, so that a job whose message then cannot be
    enqueued costs its owner none of their allowance."""
    job, settings = view.job, state.settings
    if job.type != EMAIL_TASK:
        return undo
    prefix = settings.redis_prefix
    rates = SendRates(settings.email_rate_per_user_per_hour, settings.email_rate_per_hour)
    user_key, overall_key = keys.email_sends(prefix, job.user_id), keys.email_sends(prefix)
    try:
        refused = await take_send_async(state.redis, rates, user_key, overall_key, job.id)
    except redis.RedisError:
        await undo()
        raise ApiError(Problem.UNAVAILABLE, "queue_unavailable",
                       "the job queue is unavailable; try again shortly") from None
    if refused is not None:
        await undo()
        raise ApiError(Problem.RATE_LIMITED, "rate_limited", refused.message(),
                       retry_after_s=refused.retry_after_s)

    async def undo_and_give_back() -> None:
        await undo()
        try:
            await give_back_async(state.redis, user_key, overall_key, job.id)
        except redis.RedisError as exc:  # Redis is likely why the undo runs: it stays counted
            log.warning("e-mail job %s stays counted against the send rates: %s", job.id, exc,
                        extra={"job_id": job.id, "user_id": job.user_id})

    return undo_and_give_back
