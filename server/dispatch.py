"""Hand a stored job to the queue and announce it; undo the store if Redis is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from server import store
from server.errors import ApiError
from server.store import JobView
from workers.broker import enqueue_job

log = logging.getLogger(__name__)


async def enqueue(state: Any, view: JobView, *, delay_s: int = 0,
                  undo: Callable[[], Awaitable[object]]) -> None:
    """Send the job's message; if Redis is unreachable, run ``undo`` and answer 503.

    No 202 without a message in the queue: a job recorded but never enqueued would
    wait forever, so the request fails as a whole and the client may try again.
    """
    job = view.job
    try:
        await asyncio.to_thread(enqueue_job, state.broker, job_id=job.id, actor_name=job.type,
                                queue_name=job.queue, max_attempts=job.max_attempts,
                                delay_ms=delay_s * 1000)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        await undo()
        log.warning("refused job %s, Redis unavailable: %s", job.id, exc)
        raise ApiError(503, "queue_unavailable",
                       "the job queue is unavailable; try again shortly") from None


async def announce(state: Any, view: JobView) -> dict[str, Any]:
    """Publish the job's current state to its owner; returns the <Job> sent."""
    position = await state.db.read(store.queue_position, job=view.job)
    event = state.presenter.event(view, queue_position=position)
    await state.publish(event)
    return event.job
