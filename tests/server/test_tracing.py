"""``server.infra.tracing``: off and free without an OTLP endpoint; on, the W3C context
travels in Dramatiq messages and bus messages, database transactions are spans, and log
lines name the trace. "On" here is a real SDK TracerProvider (``tests.recorded_spans``);
the exporting processes are tested in ``tests/integration/test_tracing.py``."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from server.core.events import BatchEvent, JobEvent, TokenRevoked, decode_event
from server.data import store
from server.data.db import _NO_SPAN, Database, SyncDatabase
from server.infra import logs, tracing
from server.infra.broker import enqueue_job
from server.infra.settings import Settings
from tests.recorded_spans import Recorded, recording

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    yield from recording(monkeypatch)


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
])
def test_tracing_is_on_only_with_an_endpoint_and_not_disabled(
        tmp_path: Path, env: dict[str, str], on: bool) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), **env})
    assert settings.tracing is on
    assert settings.otel_service_name == env.get("OTEL_SERVICE_NAME", "")


def test_off_it_is_the_no_op_tracer_and_nothing_is_carried() -> None:
    # This process never configured tracing: OpenTelemetry's API has no provider but its
    # proxy, whose spans record nothing, and none of our helpers makes a span.
    assert tracing.configure(Settings(), "darkroom-web") is False
    assert not tracing.enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not trace.get_tracer("x").start_span("s").is_recording()
    assert tracing.tracer("x") is None
    assert tracing.start_span("s") is None
    assert tracing.carrier() is None
    assert not tracing.in_trace()
    with tracing.span("s", parent={"traceparent": TRACEPARENT}) as span:
        assert span is None
    tracing.end(None, ValueError("x"))
    tracing.shutdown()  # nothing to flush


def test_off_a_message_carries_no_trace_option() -> None:
    broker = StubBroker()
    broker.declare_queue("images")
    enqueue_job(broker, job_id="j1", message_id="m1", actor_name="image.process@normal",
                queue_name="images", max_attempts=3, user_id="u1")
    message = Message.decode(broker.queues["images"].get_nowait())
    assert message.options == {"max_retries": 2, "darkroom_user": "u1"}


def test_off_a_bus_message_carries_no_trace_and_queries_make_no_span() -> None:
    event = JobEvent(name="job:queued", user_id="u", job={"id": "j", "seq": 1})
    raw = json.loads(event.encode(published_at=1.0, trace=tracing.carrier()))
    assert "trace" not in raw
    assert Database("sqlite:///:memory:")._span("read", store.get_job) is _NO_SPAN
    assert SyncDatabase("sqlite:///:memory:")._span("write", store.get_job) is _NO_SPAN


def test_on_a_message_continues_the_senders_trace(recorded: Recorded) -> None:
    broker = StubBroker()
    broker.declare_queue("images")
    with tracing.span("request", parent={"traceparent": TRACEPARENT}) as request:
        assert request is not None and tracing.in_trace()
        enqueue_job(broker, job_id="j1", message_id="m1", actor_name="image.process@normal",
                    queue_name="images", max_attempts=1)
    sent = Message.decode(broker.queues["images"].get_nowait())
    enqueue = recorded.named("enqueue images")
    assert enqueue.kind == SpanKind.PRODUCER
    assert enqueue.parent is not None and enqueue.parent.span_id == request.get_span_context(
        ).span_id
    assert enqueue.attributes is not None and enqueue.attributes["darkroom.job.id"] == "j1"
    # The message carries the enqueue span's context, in the caller's trace.
    carried = sent.options[tracing.MESSAGE_OPTION]
    _, trace_id, span_id, flags = carried["traceparent"].split("-")
    assert trace_id == TRACEPARENT.split("-")[1] and flags == "01"
    assert int(span_id, 16) == enqueue.context.span_id
    assert tracing.extract(carried) is not None


def test_on_a_message_sent_outside_any_span_starts_a_trace(recorded: Recorded) -> None:
    broker = StubBroker()
    broker.declare_queue("images")
    enqueue_job(broker, job_id="j1", message_id="m1", actor_name="image.process@normal",
                queue_name="images", max_attempts=1, delay_ms=5)
    enqueue = recorded.named("enqueue images")
    assert enqueue.parent is None
    assert enqueue.attributes is not None and enqueue.attributes["darkroom.delay_ms"] == 5
    sent = Message.decode(broker.queues["images.DQ"].get_nowait())
    assert tracing.MESSAGE_OPTION in sent.options


def test_a_span_fails_with_the_exception_that_leaves_it(recorded: Recorded) -> None:
    with pytest.raises(ValueError), tracing.span("work", kind="client"):
        raise ValueError("bad input")
    work = recorded.named("work")
    assert work.kind == SpanKind.CLIENT and work.status.status_code == StatusCode.ERROR
    assert [e.name for e in work.events] == ["exception"]
    started = tracing.start_span("manual")
    tracing.end(started, RuntimeError("late"))
    assert recorded.named("manual").status.status_code == StatusCode.ERROR


def test_bus_messages_carry_the_publishers_context() -> None:
    trace_headers = {"traceparent": TRACEPARENT}
    for event in (JobEvent(name="job:progress", user_id="u", job={"id": "j", "seq": 3}),
                  BatchEvent(user_id="u", batch={"id": "b"}), TokenRevoked(token_id="t")):
        decoded = decode_event(event.encode(published_at=2.0, trace=trace_headers))
        assert decoded.trace == trace_headers and decoded.published_at == 2.0
        assert "trace" not in json.dumps(decoded.payload())
        # Carried on: an event decoded and published again keeps its context.
        assert decode_event(decoded.encode()).trace == trace_headers


@pytest.mark.parametrize("bad", ['"x"', "5", '{"traceparent": 5}', "[1]", "{}"])
def test_a_malformed_trace_context_is_dropped_not_the_event(bad: str) -> None:
    raw = ('{"name": "job:queued", "user_id": "u", "job": {"id": "j", "seq": 1}, '
           f'"trace": {bad}}}')
    event = decode_event(raw)
    assert isinstance(event, JobEvent) and event.trace is None and event.seq == 1


def test_queries_in_a_trace_are_spans_and_outside_one_none(recorded: Recorded) -> None:
    tracer = tracing.tracer("server.data.db")
    assert tracer is not None
    db = SyncDatabase("sqlite:///:memory:", tracer=tracer)
    db.migrate()
    try:
        assert db.read(store.get_job, job_id="nope", user_id=None) is None
        assert recorded.spans() == []  # a background loop's query: no trace, no span
        with tracing.span("request") as request:
            assert request is not None
            db.read(store.get_job, job_id="nope", user_id=None)
            with pytest.raises(Exception, match="boom"):
                db.write(_explode)
    finally:
        db.dispose()
    read = recorded.named("db.read get_job")
    assert read.kind == SpanKind.CLIENT and read.attributes == {"db.system": "sqlite"}
    assert read.parent is not None and read.parent.span_id == request.get_span_context().span_id
    write = recorded.named("db.write _explode")
    assert write.status.status_code == StatusCode.ERROR


def _explode(session: object) -> None:
    raise RuntimeError("boom")


async def test_the_web_databases_transactions_are_spans_too(recorded: Recorded,
                                                            tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}", tracer=tracing.tracer("server.data.db"))
    await db.migrate()
    try:
        with tracing.span("request"):
            await db.read(store.get_job, job_id="nope", user_id=None)
            await db.write(store.create_user, token_hash="h")
    finally:
        await db.dispose()
    names = [s.name for s in recorded.spans()]
    assert names == ["db.read get_job", "db.write create_user", "request"]


def test_log_lines_in_a_span_carry_its_trace_id(recorded: Recorded,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_sources", [])
    logs.add_source(tracing._log_fields)
    logs.add_source(tracing._log_fields)  # once per source
    assert len(logs._sources) == 1
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tests.tracing")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        with tracing.span("request", parent={"traceparent": TRACEPARENT}) as span:
            assert span is not None
            logger.warning("inside")
        handler.setFormatter(logs.TextFormatter())
        with tracing.span("again", parent={"traceparent": TRACEPARENT}):
            logger.warning("as text")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    outside, inside, text = stream.getvalue().splitlines()
    assert "trace_id" not in json.loads(outside)
    line = json.loads(inside)
    assert line["trace_id"] == TRACEPARENT.split("-")[1]
    assert line["span_id"] == trace.format_span_id(span.get_span_context().span_id)
    assert f"trace_id={TRACEPARENT.split('-')[1]}" in text


def test_a_collector_that_never_answers_holds_up_no_exit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    with socket.socket() as silent:  # accepts connections (the backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/traces"
        provider = TracerProvider(shutdown_on_exit=False)
        # The exporter would retry for its timeout (1.5 s here, 10 s by default).
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                        timeout=1.5)))
        monkeypatch.setattr(tracing, "_provider", provider)
        monkeypatch.setattr(tracing, "SHUTDOWN_WAIT_S", 0.5)
        with tracing.span("last"):
            pass
        started = time.monotonic()
        tracing.shutdown()
        assert time.monotonic() - started < 1.2
        assert not tracing.enabled()
        # (The export gives up by itself meanwhile; it ends before its receiver goes.)
        for thread in threading.enumerate():
            if thread.name == "tracing-shutdown":
                thread.join(5)
