"""Job lifecycle as Dramatiq middleware: active, retrying, completed.

Actors only do their work; this middleware moves the job row through its states and
publishes each change. It is added ``before=Retries`` (see ``workers.broker``) so its
``after_process_message`` runs once Retries has decided whether the failure is final;
final failures are recorded by ``workers.dead_letters``; cancellation is written by
whoever cancels (the web process, or an actor that finds its input gone).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import SkipMessage

from server.jobs import AttemptsExhausted, JobState, Stage, TransitionError
from server.models import utcnow
from workers.faults import describe
from workers.progress import Reporter

log = logging.getLogger(__name__)


def job_id_of(message: dramatiq.Message[Any]) -> str:
    """Every job actor takes the job id as its only argument."""
    return str(message.args[0])


class JobLifecycle(dramatiq.Middleware):
    """Moves each job through its states as Dramatiq processes its message."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._next_run: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        job_id = job_id_of(message)
        try:
            view = self.reporter.begin_attempt(job_id, message.message_id)
        except TransitionError as exc:
            # Cancelled (or finished) while the message waited: it must never run.
            log.info("skipping message for job %s: %s", job_id, exc)
            raise SkipMessage(str(exc)) from None
        except AttemptsExhausted as exc:
            # Every delivery counts as an attempt, so a message that kills its worker
            # process each time (and is redelivered each time) ends here, not in a loop.
            log.warning("job %s: %s", job_id, exc)
            self.reporter.dead_letter(job_id, {"type": "WorkerLost", "message": str(exc)},
                                      traceback=None)
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
            elif not message.failed:
                self.reporter.transition(job_id, JobState.RETRYING, stage="retrying",
                                         error=describe(exception), run_at=next_run)
        except TransitionError as exc:
            # Cancelled elsewhere meanwhile: the stored final state stands.
            log.info("job %s: %s", job_id, exc)
