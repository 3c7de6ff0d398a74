"""Job lifecycle as Dramatiq middleware: active, retrying, completed, failed, cancelled.

Actors only do their work; this middleware moves the job row through its states and
publishes each change. It is added ``before=Retries`` (see ``workers.broker``) so its
``after_process_message`` runs once Retries has decided whether the failure is final.
"""

from __future__ import annotations

import logging
import threading
import traceback
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import SkipMessage

from server.jobs import JobState, Stage, TransitionError
from server.models import utcnow
from workers.progress import Reporter

log = logging.getLogger(__name__)

# Enough of a traceback to debug from the job detail, small enough for a DB row.
TRACEBACK_LIMIT = 30


class JobCancelled(Exception):
    """The job was cancelled or its input is gone: stop now, never retry."""


def job_id_of(message: dramatiq.Message[Any]) -> str:
    """Every job actor takes the job id as its only argument."""
    return str(message.args[0])


def describe(exc: BaseException) -> dict[str, str]:
    """The ``error`` field of a Job: the exception's type and a human message."""
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


class JobLifecycle(dramatiq.Middleware):
    """Moves each job through its states as Dramatiq processes its message."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._next_run: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        job_id = job_id_of(message)
        attempt = int(message.options.get("retries", 0)) + 1
        try:
            view = self.reporter.transition(job_id, JobState.ACTIVE, stage=Stage.STORED.value,
                                            progress=0, attempt=attempt)
        except TransitionError as exc:
            log.info("skipping message for job %s: %s", job_id, exc)
            raise SkipMessage(str(exc)) from None
        if view is None:
            log.info("skipping message for job %s: the job no longer exists", job_id)
            raise SkipMessage("job deleted")

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        # Retries re-enqueues with a delay just before our after_process_message runs:
        # remember when the next attempt is due so job:retrying can say so.
        if delay and message.options.get("retries"):
            with self._lock:
                self._next_run[message.message_id] = utcnow() + timedelta(milliseconds=delay)

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        job_id = job_id_of(message)
        with self._lock:
            next_run = self._next_run.pop(message.message_id, None)
        try:
            if exception is None:
                self.reporter.transition(job_id, JobState.COMPLETED, stage=Stage.DONE.value,
                                         progress=100, result=result)
            elif isinstance(exception, JobCancelled):
                self.reporter.transition(job_id, JobState.CANCELLED, stage="cancelled",
                                         error=describe(exception))
            elif message.failed:
                self.reporter.transition(
                    job_id, JobState.FAILED, stage="failed", error=describe(exception),
                    traceback="".join(traceback.format_exception(exception,
                                                                 limit=TRACEBACK_LIMIT)),
                )
            else:
                self.reporter.transition(job_id, JobState.RETRYING, stage="retrying",
                                         error=describe(exception), run_at=next_run)
        except TransitionError as exc:
            # Cancelled or finished elsewhere meanwhile: the stored final state stands.
            log.info("job %s: %s", job_id, exc)
