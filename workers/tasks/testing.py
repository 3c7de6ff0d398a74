"""Task types for exercising failure handling; registered only with ENABLE_TEST_TASKS=true.

They let tests (and operators trying the service) inject a slow job, transient and
permanent faults, and a worker crash through the public API.
"""

from __future__ import annotations

import os
import time
from typing import Any

from server.core import keys
from server.core.tasks import TEST_CRASH, TEST_FLAKY, TEST_SLEEP
from server.data.store import JobView
from workers.context import WorkerContext
from workers.faults import TransientError
from workers.tasks.registry import TaskType, register


def steps_key(prefix: str, job_id: str) -> str:
    """The Redis list where ``test.sleep`` with ``record`` logs what it does, one entry per
    step begun (``step N``) and one when the run ends (``end <outcome>``)."""
    return f"{prefix}:test-steps:{job_id}"


def sleep_task(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    """Sleep in steps, reporting progress before each (a stand-in for slow work).

    Like real tasks it looks for cancellation at each stage boundary: ``progress`` raises
    JobCancelled once the job is no longer active. With ``record``, every step is logged
    in Redis (``steps_key``) as it begins, with the ``seq`` its progress report was given,
    and the end of the run with its outcome, so a test can tell whether work went on
    without relying on events.
    """
    seconds = float(view.job.payload.get("seconds", 1))
    steps = int(view.job.payload.get("steps", 4))
    key = steps_key(ctx.settings.redis_prefix, view.job.id)
    record = bool(view.job.payload.get("record", False))

    def log(entry: str) -> None:
        if record:
            ctx.redis.rpush(key, entry)
            ctx.redis.expire(key, 86_400)

    outcome = "interrupted"
    try:
        for step in range(steps):
            seq = ctx.reporter.progress(view.job.id, f"step {step + 1} of {steps}",
                                        100 * step // steps)
            log(f"step {step + 1} seq {seq}")
            time.sleep(seconds / steps)
        outcome = "completed"
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        log(f"end {outcome}")
    return {"slept_s": seconds}


def flaky_task(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    """Fail the first ``fail_runs`` runs (counted across retries and DLQ retries), then succeed."""
    run = int(ctx.redis.incr(keys.test_task_runs(ctx.settings.redis_prefix, view.job.id)))
    ctx.redis.expire(keys.test_task_runs(ctx.settings.redis_prefix, view.job.id), 86_400)
    ctx.reporter.progress(view.job.id, f"run {run}", 50)
    time.sleep(float(view.job.payload.get("sleep_s", 0)))
    if run <= int(view.job.payload.get("fail_runs", 1)):
        if view.job.payload.get("error", "transient") == "permanent":
            raise ValueError(f"injected permanent fault on run {run}")
        raise TransientError(f"injected transient fault on run {run}")
    return {"runs": run}


def crash_task(ctx: WorkerContext, view: JobView) -> None:
    """Kill the worker process mid-job, like a segfault or the OOM killer would."""
    ctx.reporter.progress(view.job.id, "crashing", 50)
    os._exit(70)


register(TaskType.of(TEST_SLEEP, run=sleep_task))
register(TaskType.of(TEST_FLAKY, run=flaky_task))
register(TaskType.of(TEST_CRASH, run=crash_task))
