"""``workers.middleware.tracing.JobTracing`` run by Dramatiq itself (a real ``Worker`` on a
``StubBroker``), its spans made by a real SDK provider (``tests.recorded_spans``): a job
span continuing the context its message carries, a child span per stage reported through
``timings.stage_entered``, failures and skips marked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, SkipMessage
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from server.infra import tracing
from tests.recorded_spans import Recorded, recording
from workers.middleware import timings
from workers.middleware.tracing import JobTracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SENDER = "b7ad6b7169203331"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    yield from recording(monkeypatch)


def _work(job_id: str, outcome: str = "ok") -> None:
    timings.stage_entered("reading")
    timings.stage_entered("reading")  # the same stage again: its progress only
    timings.stage_entered("writing")
    if outcome == "fail":
        raise ValueError("bad input")
    if outcome == "skip":
        raise SkipMessage("cancelled")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker()
    stub.emit_after("process_boot")
    # Before Retries, as workers.app installs it: its after_* hooks see Retries' verdict.
    stub.add_middleware(JobTracing(), before=Retries)
    dramatiq.actor(broker=stub, actor_name="test.work@normal", queue_name="work",
                   max_retries=0)(_work)
    worker = dramatiq.Worker(stub, worker_timeout=100)
    worker.start()
    yield stub
    worker.stop()
    stub.close()


def _run(broker: StubBroker, recorded: Recorded, *args: Any, **options: Any) -> list[
        ReadableSpan]:
    """Send one message, wait until its job span has ended; every span so far."""
    broker.get_actor("test.work@normal").send_with_options(args=args, **options)
    broker.join("work", fail_fast=False)
    deadline = time.monotonic() + 5
    while not any(s.name == "job test.work" for s in recorded.spans()):
        assert time.monotonic() < deadline, [s.name for s in recorded.spans()]
        time.sleep(0.01)
    return recorded.spans()


def _by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_a_run_continues_its_senders_trace_with_a_span_per_stage(
        broker: StubBroker, recorded: Recorded) -> None:
    carried = {"traceparent": f"00-{TRACE_ID}-{SENDER}-01"}
    spans = _by_name(_run(broker, recorded, "j1", **{tracing.MESSAGE_OPTION: carried}))
    assert set(spans) == {"job test.work", "stage reading", "stage writing"}
    job = spans["job test.work"]
    assert job.kind == SpanKind.CONSUMER
    assert f"{job.context.trace_id:032x}" == TRACE_ID
    assert job.parent is not None and f"{job.parent.span_id:016x}" == SENDER
    assert job.attributes is not None
    assert job.attributes["darkroom.job.id"] == "j1"
    assert job.attributes["messaging.destination.name"] == "work"
    assert job.attributes["darkroom.outcome"] == "completed"
    for stage in ("stage reading", "stage writing"):
        assert spans[stage].parent is not None
        assert spans[stage].parent.span_id == job.context.span_id
    assert spans["stage reading"].end_time <= spans["stage writing"].start_time


def test_a_failed_run_fails_its_span_and_its_stage(broker: StubBroker,
                                                   recorded: Recorded) -> None:
    spans = _by_name(_run(broker, recorded, "j2", "fail"))
    job, stage = spans["job test.work"], spans["stage writing"]
    # No context in the message: a trace of its own.
    assert job.parent is None
    assert job.status.status_code == StatusCode.ERROR
    assert job.attributes is not None and job.attributes["darkroom.outcome"] == "failed"
    assert [e.name for e in job.events] == ["exception"]
    assert stage.status.status_code == StatusCode.ERROR
    assert spans["stage reading"].status.status_code == StatusCode.UNSET


def test_a_skipped_run_is_not_a_failure(broker: StubBroker, recorded: Recorded) -> None:
    spans = _by_name(_run(broker, recorded, "j3", "skip"))
    job = spans["job test.work"]
    assert job.attributes is not None and job.attributes["darkroom.outcome"] == "skipped"
    assert job.status.status_code == StatusCode.UNSET
    assert spans["stage writing"].end_time is not None


def test_stages_outside_a_traced_run_make_no_span(recorded: Recorded) -> None:
    timings.stage_entered("alone")
    assert recorded.spans() == []


def test_the_worker_flushes_its_spans_when_it_stops(recorded: Recorded) -> None:
    stub = StubBroker()
    stub.add_middleware(JobTracing())
    worker = dramatiq.Worker(stub, worker_timeout=100)
    worker.start()
    assert tracing.enabled()
    worker.stop()
    assert not tracing.enabled()  # shut down: its last spans sent
