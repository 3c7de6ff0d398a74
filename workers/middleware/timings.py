"""Job timings middleware: how long each stage and each run takes, into the shared metrics.

A run's clock starts once the job is active and stops when its message is done; a
stage ends when the next one is reported (``Reporter.progress``) or the run completes.
The increments of one message go to Redis in one pipelined batch, before the job's
final state is published, so whoever sees a job end also sees its timings in
``GET /metrics``.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis

from server.data.models import as_utc
from server.infra import metrics, telemetry
from server.infra.broker import QUEUED_OPTION
from workers import handoff
from workers.middleware import tracing


@dataclass
class _Clock:
    """One message's run: its type, when it started, and the stage it is in."""

    job_type: str
    started: float = field(default_factory=time.monotonic)
    stage: str | None = None
    stage_started: float = 0.0
    finished: list[tuple[str, float]] = field(default_factory=list)

    def enter(self, stage: str) -> None:
        """A stage starts (reporting the same stage again only moves its progress)."""
        if stage != self.stage:
            now = time.monotonic()
            self._end(now)
            self.stage, self.stage_started = stage, now

    def close_stage(self) -> None:
        """The run completed: so did the stage it was in."""
        self._end(time.monotonic())
        self.stage = None

    def _end(self, now: float) -> None:
        if self.stage is not None:
            self.finished.append((self.stage, now - self.stage_started))


# Each Dramatiq worker thread runs one message at a time, and has a context of its own.
_clock: contextvars.ContextVar[_Clock | None] = contextvars.ContextVar("darkroom_job_clock",
                                                                       default=None)
# The stages the run that just ended went through, as timed: JobLifecycle and DeadLetters
# store them with the attempt's end (their after-hooks run after this middleware's).
_measured: contextvars.ContextVar[tuple[tuple[str, float], ...] | None] = \
    contextvars.ContextVar("darkroom_job_stages", default=None)


def measured_stages() -> list[tuple[str, float]] | None:
    """The stages (name, seconds) of the run this thread just ended; None if untimed."""
    stages = _measured.get()
    return None if stages is None else list(stages)


def stage_entered(stage: str) -> None:
    """The running job reported a new stage: the one before it is over (timed, and when
    tracing, a span each: ``workers.middleware.tracing``)."""
    clock = _clock.get()
    if clock is not None:
        clock.enter(stage)
    tracing.enter_stage(stage)


def job_type_of(actor_name: str) -> str:
    """``image.process@high`` → ``image.process`` (see server.core.jobs.actor_for)."""
    return actor_name.partition("@")[0]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def waited_s(*, made: datetime, run_at: datetime | None, queued_ms: int | None,
             began: datetime) -> float:
    """How long a run waited in its queue: from when it could run to when it ``began``.

    It could run once made, or its delay or back-off over (``run_at``), or, for a failed
    job's retry (a dead letter's, or its owner's), once it went back in the queue
    (``queued_ms``, epoch ms: the message option ``QUEUED_OPTION`` the retry sets), not
    when the job was first made.
    """
    ready = as_utc(run_at or made)
    if queued_ms is not None:
        ready = max(ready, _EPOCH + timedelta(milliseconds=queued_ms))
    return max(0.0, (as_utc(began) - ready).total_seconds())


class JobTimings(dramatiq.Middleware):
    """Times each run and its stages; writes them to the deployment's metrics."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.tally = metrics.Tally()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # Added after JobLifecycle: this runs once the job is active (and not if skipped).
        job_type = job_type_of(message.actor_name)
        _clock.set(_Clock(job_type))
        _measured.set(None)
        view = handoff.peek(str(message.args[0]))  # a job actor's one argument: the job id
        if view is not None and view.job.started_at is not None:
            job = view.job
            queued = message.options.get(QUEUED_OPTION)
            self.tally.observe(metrics.WAIT_DURATION, waited_s(
                made=job.created_at, run_at=job.run_at,
                queued_ms=queued if isinstance(queued, int) else None,
                began=job.updated_at), type=job_type)

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        # The stage's span ends where its timing does: before JobLifecycle completes the job.
        tracing.end_stage(exception)
        if exception is None:
            self._record("completed", complete=True)
        else:
            self._record("failed" if message.failed else "retrying", complete=False)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # A run that began and then stopped for its cancelled job (skips before the run
        # began have no clock).
        tracing.end_stage()
        self._record("cancelled", complete=False)

    def _record(self, outcome: str, *, complete: bool) -> None:
        clock = _clock.get()
        _clock.set(None)
        if clock is None:
            return
        if complete:
            clock.close_stage()  # a stage cut short by a failure is not a stage's duration...
        told = list(clock.finished)
        if clock.stage is not None:  # ...but the attempt's story says how long it ran
            told.append((clock.stage, time.monotonic() - clock.stage_started))
        _measured.set(tuple((stage, round(seconds, 4)) for stage, seconds in told))
        for stage, seconds in clock.finished:
            self.tally.observe(metrics.STAGE_DURATION, seconds, type=clock.job_type,
                               stage=stage)
        self.tally.observe(metrics.RUN_DURATION, time.monotonic() - clock.started,
                           type=clock.job_type, outcome=outcome)
        telemetry.flush_sync(self.client, self.prefix, self.tally)
