"""The pause gate: an admin's switch that holds a queue's jobs, and what a worker does with
a message of a paused queue (puts it back for a few seconds; its job stays queued).

The switch is a Redis set shared by every process (``keys.paused_queues``), written by the
web process (``server.services.queues``). The gate is not a middleware of its own but the
first step of ``JobLifecycle.before_process_message``: Dramatiq runs every middleware's
``before_process_message`` even after one has raised anything but SkipMessage, so each
step before a run must be passed before the next is tried (see ``lifecycle``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import SkipMessage

from server.core import keys
from server.core.jobs import base_queue
from workers.progress import Reporter

# How often a message of a paused queue looks again: resume takes effect within this.
PAUSED_RECHECK_MS = 3000


class QueueGate:
    """Whether a queue is paused (an admin's switch, a Redis set shared by all processes)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = keys.paused_queues(prefix)

    def __call__(self, queue: str) -> bool:
        try:
            return bool(self.client.sismember(self.key, queue))
        except redis.RedisError:
            return False  # Redis is down: Dramatiq is not delivering anything anyway


def hold_if_paused(broker: dramatiq.Broker, message: Any, job_id: str, *,
                   is_paused: Callable[[str], bool], reporter: Reporter) -> None:
    """Skip a message whose queue is paused: put a copy back (delayed) to look again, and
    tell the job's owner once that it is paused. It uses no attempt and takes no lease."""
    if is_paused(base_queue(message.queue_name)):
        broker.enqueue(message.copy(), delay=PAUSED_RECHECK_MS)
        reporter.show_paused(job_id)
        raise SkipMessage(f"queue {message.queue_name} is paused")
