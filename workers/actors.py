"""One Dramatiq actor per registered task type: load the job, run its work, classify failures."""

from __future__ import annotations

import itertools
from typing import Any

import dramatiq

from server.core.jobs import PRIORITY_ORDER, actor_for, queue_for
from server.data import store
from workers import handoff
from workers.context import WorkerContext
from workers.faults import JobCancelled, PermanentFailure, is_transient
from workers.tasks.registry import Completed, TaskType


def run_job(ctx: WorkerContext, task_type: TaskType,
            job_id: str) -> dict[str, Any] | Completed | None:
    """Run one attempt; a failure not worth retrying leaves as PermanentFailure."""
    view = handoff.take(job_id) or ctx.db.read(store.get_job, job_id=job_id, user_id=None)
    if view is None:
        raise JobCancelled("the job was deleted")
    try:
        return task_type.run(ctx, view)
    except JobCancelled:
        raise
    except Exception as exc:
        if not is_transient(exc, task_type.permanent):
            raise PermanentFailure(str(exc)) from exc
        if view.job.attempt >= view.job.max_attempts:
            # Crash redeliveries used attempts Retries does not know about.
            raise PermanentFailure(str(exc)) from exc
        raise


def declare_actors(broker: dramatiq.Broker, ctx: WorkerContext,
                   registry: dict[str, TaskType]) -> None:
    """Register an actor per task type, with its retry policy and time limit."""
    settings = ctx.settings
    for task_type, priority in itertools.product(registry.values(), PRIORITY_ORDER):

        def work(job_id: str,
                 _task_type: TaskType = task_type) -> dict[str, Any] | Completed | None:
            return run_job(ctx, _task_type, job_id)

        dramatiq.actor(
            broker=broker,
            actor_name=actor_for(task_type.name, priority),
            queue_name=queue_for(task_type.queue, priority),
            priority=PRIORITY_ORDER[priority],
            max_retries=(task_type.max_attempts or settings.retry_max_attempts) - 1,
            min_backoff=settings.retry_min_backoff_ms,
            max_backoff=settings.retry_max_backoff_ms,
            time_limit=(task_type.time_limit_s or settings.job_time_limit_s) * 1000,
            throws=(PermanentFailure,),
        )(work)
