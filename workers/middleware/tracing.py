"""Job tracing middleware: a span per run of a message, in the trace of whoever sent it.

Installed by ``workers.app`` only when tracing is on, and before JobLifecycle: so the job
span (CONSUMER, ``job <type>``) covers the gates and the start of the attempt (its
database write), and, since it ends in ``after_ack``/``after_nack`` (the last hooks of a
message), also the completion or dead letter and the webhook deliveries they send, whose
messages carry this span's context so that their own runs join the trace. The sender's
context comes from the message option ``server.infra.tracing.MESSAGE_OPTION``; a message
without one (a job the sweeper resent in a process that does not trace) starts a trace.

Each stage of the run is a child span (``stage <name>``), started where stages are timed
(``timings.stage_entered``) and ended by the next stage or, as the stage's timing, by
``timings.JobTimings`` once the run is over (``end_stage``): the completion is the job's,
not its last stage's.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq

from server.infra import tracing
from workers import handoff

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span


@dataclass
class _Run:
    """One message's spans in this worker thread, and the tokens that made them current."""

    job: Span
    token: Token[Context]
    stage_name: str | None = None
    stage: Span | None = None
    stage_token: Token[Context] | None = None


# Each Dramatiq worker thread runs one message at a time, and has a context of its own.
_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("darkroom_job_spans",
                                                                  default=None)


def enter_stage(stage: str) -> None:
    """The running job reported ``stage``: the stage before it ends, its span starts.

    Reporting the same stage again only moves its progress (as ``timings`` counts it)."""
    run = _run.get()
    if run is None or stage == run.stage_name:
        return
    _end_stage(run)
    span = tracing.start_span(f"stage {stage}", attributes={"darkroom.stage": stage})
    if span is not None:
        run.stage_name, run.stage, run.stage_token = stage, span, tracing.activate(span)


def end_stage(error: BaseException | None = None) -> None:
    """The run is over: so is its stage (failed with ``error``, if given)."""
    run = _run.get()
    if run is not None:
        _end_stage(run, error)


def _end_stage(run: _Run, error: BaseException | None = None) -> None:
    if run.stage is None:
        return
    if run.stage_token is not None:
        tracing.deactivate(run.stage_token)
    tracing.end(run.stage, error)
    run.stage_name = run.stage = run.stage_token = None


def _job_id(message: Any) -> str:
    """Every job actor takes the job id as its only argument."""
    return str(message.args[0])


def _job_type(actor_name: str) -> str:
    """``image.process@high`` → ``image.process`` (see server.core.jobs.actor_for)."""
    return actor_name.partition("@")[0]


class JobTracing(dramatiq.Middleware):
    """A CONSUMER span per message run, continuing the context its sender put in it."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _finish()  # a run whose end was never seen (none expected) ends here
        carried = message.options.get(tracing.MESSAGE_OPTION)
        # No usable context: a trace of its own ({} rather than this thread's context).
        parent = carried if isinstance(carried, dict) else {}
        span = tracing.start_span(f"job {_job_type(message.actor_name)}", kind="consumer",
                                  parent=parent, attributes={
            "messaging.system": "dramatiq", "messaging.operation.type": "process",
            "messaging.destination.name": message.queue_name,
            "messaging.message.id": message.message_id,
            "darkroom.job.id": _job_id(message),
            "darkroom.job.type": _job_type(message.actor_name),
            "darkroom.retries": int(message.options.get("retries", 0) or 0)})
        if span is not None:
            _run.set(_Run(job=span, token=tracing.activate(span)))

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        run = _run.get()
        if run is None:
            return
        _end_stage(run, exception)  # (JobTimings has ended it already, when installed)
        attempt = handoff.attempt_of(_job_id(message))  # the attempt JobLifecycle began
        if attempt is not None:
            run.job.set_attribute("darkroom.job.attempt", attempt)
        if exception is None:
            run.job.set_attribute("darkroom.outcome", "completed")
        else:
            run.job.set_attribute("darkroom.outcome", "failed" if message.failed else "retrying")
            tracing.fail(run.job, exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        run = _run.get()
        if run is not None:
            _end_stage(run)
            run.job.set_attribute("darkroom.outcome", "skipped")

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        _finish()

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        # After DeadLetters.after_nack (hooks run in reverse order): the dead letter is in.
        _finish()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Dramatiq's worker processes leave through os._exit, past atexit: flush now.
        tracing.shutdown()


def _finish() -> None:
    """End this thread's message run: its stage, then its job span."""
    run = _run.get()
    if run is None:
        return
    _run.set(None)
    _end_stage(run)
    tracing.deactivate(run.token)
    run.job.end()
