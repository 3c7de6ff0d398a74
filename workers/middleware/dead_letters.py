"""Dead-letter middleware: record a job's final failure in the database, then tell its owner.

Dramatiq keeps its own copy of a dead message in Redis (``<queue>.XQ``), but that copy is
the one from the last enqueue — its traceback is from the previous attempt — and it expires
after 7 days (FACTS.md §1). Ours is the error as it happened, kept until an admin clears it.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from server.core.jobs import TransitionError
from workers.faults import describe, trace_of
from workers.middleware import timings
from workers.middleware.leases import Leases
from workers.middleware.lifecycle import ATTEMPT_OPTION, job_id_of, release_lease
from workers.progress import Reporter

log = logging.getLogger(__name__)

class DeadLetters(dramatiq.Middleware):
    """Turns a nacked message (retries exhausted, or a permanent error) into a dead letter."""

    def __init__(self, reporter: Reporter, leases: Leases) -> None:
        self.reporter = reporter
        self.leases = leases

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        # after_nack runs in the worker thread before Dramatiq clears the stuffed exception.
        exception: BaseException | None = getattr(message, "_exception", None)
        if exception is None:
            error: dict[str, Any] = {"type": "Failed",
                                     "message": "the job failed without an error"}
            trace = None
        else:
            error = describe(exception)
            trace = trace_of(exception)
        job_id = job_id_of(message)
        try:
            self.reporter.dead_letter(job_id, error, traceback=trace,
                                      of_attempt=message.options.get(ATTEMPT_OPTION),
                                      stage_times=timings.measured_stages())
        except TransitionError as exc:
            log.info("job %s: %s", job_id, exc)
        finally:
            release_lease(self.leases, message)
