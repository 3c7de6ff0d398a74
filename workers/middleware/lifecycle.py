"""Job lifecycle as Dramatiq middleware: active, retrying, completed.

Actors only do their work; this middleware moves the job row through its states and
publishes each change. Before a message runs it passes three gates, in order: its queue's
pause (``workers.middleware.pause``), its job's lease (``workers.middleware.leases``), and
the start of the job's next attempt.

It is added ``before=Retries`` (see ``server.infra.broker``) so its
``after_process_message`` runs once Retries has decided whether the failure is final;
final failures are recorded by ``workers.middleware.dead_letters``; cancellation is written
by whoever cancels (the web process, or an actor that finds its input gone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import SkipMessage, TimeLimit

from server.core.jobs import (
    AttemptsExhausted,
    ImageDeleted,
    JobState,
    Stage,
    TransitionError,
    is_final,
)
from server.core.lifecycle import hung_after_ms
from server.data import store
from server.data.models import utcnow
from server.infra import logs
from workers import handoff
from workers.faults import DatabaseUnavailable, describe, image_deleted_error, trace_of
from workers.middleware import timings
from workers.middleware.leases import Leases
from workers.middleware.pause import hold_if_paused
from workers.progress import Reporter
from workers.tasks.registry import Completed

log = logging.getLogger(__name__)

# The message options this middleware sets, in memory, for the after_* hooks (its own and
# DeadLetters'). It reads no actor option: an actor's retry and time-limit options are
# Dramatiq's Retries' and TimeLimit's.
# The attempt the message runs as.
ATTEMPT_OPTION = "darkroom_attempt"
# Marks a message whose processing took its job's lease.
LEASE_OPTION = "darkroom_lease"

# How soon a message whose job could not be marked active (database away) is tried again.
START_RETRY_MS = 3000


def release_lease(leases: Leases, message: Any) -> None:
    """Give the job's lease back, if this message's processing took it."""
    value = message.options.pop(LEASE_OPTION, None)
    if isinstance(value, str):
        leases.release(job_id_of(message), value)


def time_limit_ms(broker: dramatiq.Broker, message: Any) -> float:
    """The time limit Dramatiq's TimeLimit middleware gives this message's run."""
    actor = broker.get_actor(message.actor_name)
    default = next((m.time_limit for m in broker.middleware if isinstance(m, TimeLimit)),
                   600_000)  # TimeLimit's own default
    return float(message.options.get("time_limit") or actor.options.get("time_limit", default))


def job_id_of(message: dramatiq.Message[Any]) -> str:
    """Every job actor takes the job id as its only argument."""
    return str(message.args[0])


def complete(reporter: Reporter, job_id: str, done: Completed, attempt: int | None,
             remove_renditions: Callable[[str], None]) -> None:
    """Mark the job completed, with what its last stage produced for its image; if the
    image was deleted meanwhile, the job ends cancelled and its renditions go.

    Raises TransitionError when the job may not complete (cancelled while it ran, or a
    later attempt took over). If the job ended without completing (cancelled, failed,
    gone), the renditions this run wrote go too, as when a run stops at a stage; a
    later attempt still running, or one that completed, keeps them.
    """
    outputs: dict[str, Any] = ({"image_id": done.image_id, "image_outputs": done.image_outputs}
                               if done.image_outputs else {})
    try:
        reporter.transition(job_id, JobState.COMPLETED, stage=Stage.DONE.value, progress=100,
                            result=done.result, of_attempt=attempt,
                            stage_times=timings.measured_stages(), **outputs)
    except ImageDeleted:
        if done.image_id is not None:
            remove_renditions(done.image_id)
        reporter.transition(job_id, JobState.CANCELLED, stage="cancelled",
                            error=image_deleted_error(), of_attempt=attempt)
    except TransitionError:
        if done.image_id is not None:
            now = reporter.db.read(store.get_job, job_id=job_id, user_id=None)
            if now is None or (is_final(now.job.state)
                               and now.job.state != JobState.COMPLETED.value):
                remove_renditions(done.image_id)
                reporter.db.write(store.record_image_output, image_id=done.image_id,
                                  has_thumbnail=False, has_preview=False)
        raise


class JobLifecycle(dramatiq.Middleware):
    """Moves each job through its states as Dramatiq processes its message."""

    def __init__(self, reporter: Reporter, leases: Leases,
                 is_paused: Callable[[str], bool],
                 remove_renditions: Callable[[str], None]) -> None:
        self.reporter = reporter
        self.leases = leases
        self.is_paused = is_paused
        self.remove_renditions = remove_renditions
        self._next_run: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Let the message run only past three gates, in this order, each of which skips it
        (SkipMessage) when it must not run now: its queue's pause, its job's lease, and the
        start of its job's next attempt.

        Steps of one hook rather than three middleware: Dramatiq runs every middleware's
        ``before_process_message`` even after one has raised anything but SkipMessage (it
        logs the error and runs the actor anyway), so a gate that failed would not stop
        the next; here it does.
        """
        job_id = self._start_handling(message)
        hold_if_paused(broker, message, job_id, is_paused=self.is_paused,
                       reporter=self.reporter)
        self._take_lease(broker, message, job_id)
        self._begin_attempt(broker, message, job_id)

    def _start_handling(self, message: Any) -> str:
        """Start handling the message: its job's id, named by every line logged meanwhile."""
        job_id = job_id_of(message)
        # Every line logged while this message is handled names its job (and, once the
        # row is read, its owner); cleared when the message is acked or nacked.
        logs.clear()
        logs.bind(job_id=job_id)
        # A view an earlier message handed over, its actor never run (a failed message).
        handoff.clear()
        # Options travel with re-enqueued copies: a flag from an earlier delivery is stale.
        message.options.pop(LEASE_OPTION, None)
        return job_id

    def _take_lease(self, broker: dramatiq.Broker, message: Any, job_id: str) -> None:
        """Take the job's lease, or skip the message while a run of the job is alive."""
        lease = self.leases.acquire(
            job_id, overdue_after_ms=hung_after_ms(time_limit_ms(broker, message)))
        if lease is None:
            # (No lease taken: the skip below must not release the running copy's lease.)
            # Another live process runs this job (this copy was redelivered while that
            # worker was silent, e.g. during a Redis outage). Look again once its lease
            # would have expired, had it died.
            broker.enqueue(message.copy(), delay=self.leases.ttl_ms)
            raise SkipMessage(f"job {job_id} is running elsewhere")
        message.options[LEASE_OPTION] = lease

    def _begin_attempt(self, broker: dramatiq.Broker, message: Any, job_id: str) -> None:
        """Mark the job active as its next attempt, or skip the message (giving the lease
        back) when the job must not run: over, superseded, out of attempts or deleted, or
        not startable now (database away)."""
        try:
            view = self.reporter.begin_attempt(job_id, message.message_id)
        except TransitionError as exc:
            # Cancelled or finished while the message waited, or a superseded copy.
            release_lease(self.leases, message)
            log.info("skipping message for job %s: %s", job_id, exc)
            raise SkipMessage(str(exc)) from None
        except AttemptsExhausted as exc:
            # Every delivery counts as an attempt, so a message that kills its worker
            # process each time (and is redelivered each time) ends here, not in a loop.
            release_lease(self.leases, message)
            log.warning("job %s: %s", job_id, exc)
            self.reporter.dead_letter(
                job_id, {"type": "WorkerLost", "message": str(exc), "retryable": True},
                traceback=None)
            raise SkipMessage(str(exc)) from None
        except DatabaseUnavailable as exc:
            # Nothing was written. Dramatiq only logs an error raised here and runs the
            # actor anyway, on a job never marked active (whose end is then refused,
            # leaving it queued for good): put the message back for later instead.
            release_lease(self.leases, message)
            log.warning("could not start job %s, trying again in %d ms: %s", job_id,
                        START_RETRY_MS, exc)
            try:
                broker.enqueue(message.copy(), delay=START_RETRY_MS)
            except Exception as again:  # Redis is away too: so is the ack of this copy
                log.warning("could not put job %s back: %s", job_id, again)
            raise SkipMessage(f"job {job_id} could not be started") from None
        except BaseException:
            release_lease(self.leases, message)
            raise
        if view is None:
            release_lease(self.leases, message)
            log.info("skipping message for job %s: the job no longer exists", job_id)
            raise SkipMessage("job deleted")
        logs.bind(user_id=view.job.user_id)
        message.options[ATTEMPT_OPTION] = view.job.attempt
        handoff.hand_over(view)  # the actor runs next, in this thread

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        # Retries re-enqueues with a delay just before our after_process_message runs:
        # remember when the next attempt is due so job:retrying can say so.
        if delay and message.options.get("retries"):
            with self._lock:
                self._next_run[message.message_id] = utcnow() + timedelta(milliseconds=delay)

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        job_id = job_id_of(message)
        attempt = message.options.get(ATTEMPT_OPTION)
        with self._lock:
            next_run = self._next_run.pop(message.message_id, None)
        try:
            if exception is None:
                complete(self.reporter, job_id, result if isinstance(result, Completed)
                         else Completed(result=result), attempt, self.remove_renditions)
            elif not message.failed:
                # No enqueue seen: Redis refused the retry's message (dramatiq#545). The
                # row keeps the retry, unsent, for the web's sweeper to send.
                self.reporter.transition(job_id, JobState.RETRYING, stage="retrying",
                                         error=describe(exception),
                                         traceback=trace_of(exception), of_attempt=attempt,
                                         stage_times=timings.measured_stages(),
                                         run_at=next_run or utcnow(), resend=next_run is None)
        except TransitionError as exc:
            # Cancelled elsewhere meanwhile, or a later attempt took over: that state stands.
            log.info("job %s: %s", job_id, exc)
        finally:
            if not message.failed:
                release_lease(self.leases, message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # An actor that stopped because its job was cancelled (not our own skips above,
        # which release before raising; releasing twice is harmless).
        release_lease(self.leases, message)

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        logs.clear()

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        # After DeadLetters.after_nack (hooks run in reverse order), so its lines name the job.
        logs.clear()
