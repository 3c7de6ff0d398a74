"""OpenTelemetry tracing across real processes, received by a real OTLP/HTTP receiver.

The stack (a web process, a supervised worker, the I/O worker) runs with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a small HTTP server of the test's own that
accepts ``POST /v1/traces`` the way a collector does and decodes each request with
``opentelemetry-proto``; nothing of the SDK is replaced. The issue's "Done when": one
upload, sent with a ``traceparent`` of the test's own, is one trace spanning the web
process and the worker, from the HTTP request to the webhook delivery's POST and the
Socket.IO emits, every span linked to its parent.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth, jpeg_bytes, new_token, upload, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

SERVER, CLIENT = ProtoSpan.SPAN_KIND_SERVER, ProtoSpan.SPAN_KIND_CLIENT
PRODUCER, CONSUMER = ProtoSpan.SPAN_KIND_PRODUCER, ProtoSpan.SPAN_KIND_CONSUMER


@dataclass(frozen=True)
class Span:
    """One received span, as the collector saw it (ids in hex)."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    events: tuple[str, ...]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    """Every span of one ``ExportTraceServiceRequest``, with its resource's service.name."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(Span(
                    service=str(resource.get("service.name")), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                    name=span.name, kind=span.kind,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    status=span.status.code, events=tuple(e.name for e in span.events)))
    return spans


@dataclass
class Collector:
    """What the OTLP/HTTP receiver got: decoded spans, and the requests' paths."""

    port: int
    spans: list[Span] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(self, trace_id: str, done: Callable[[list[Span]], bool],
                       timeout: float = 30.0) -> list[Span]:
        """The trace's spans once ``done`` says they are all in (the batches come every
        OTEL_BSP_SCHEDULE_DELAY)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.of_trace(trace_id)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted(f"{s.service}:{s.name}" for s in spans)
                raise AssertionError(f"trace {trace_id} incomplete after {timeout}s: {names}")
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    """An OTLP/HTTP receiver: ``POST /v1/traces`` with a protobuf body (gzip or deflate
    as Content-Encoding says), answered as a collector answers (an empty response)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path != "/v1/traces" or \
                    self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            spans = decode(body)
            with state.lock:
                state.paths.append(self.path)
                state.spans.extend(spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Collector(port=server.socket.getsockname()[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Hooks:
    """A webhook receiver: every POST's path and headers."""

    port: int
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Hooks(port=server.socket.getsockname()[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def traced_stack(redis_url: str, databases: Databases, collector: Collector,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The receivers are module fixtures set up first: they outlive the stack, whose
    # processes flush their last spans as they stop.
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("traced"),
                       OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                       OTEL_BSP_SCHEDULE_DELAY="100", LOG_FORMAT="json", LOG_LEVEL="info",
                       WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_SECRET="s",
                       ENABLE_TEST_TASKS="true") as running:
        yield running


def _traceparent() -> tuple[str, str, str]:
    """(header, trace id, the caller's span id) of a sampled W3C trace of the test's own."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[Span], what: str, predicate: Callable[[Span], bool]) -> Span:
    found = [s for s in spans if predicate(s)]
    assert len(found) == 1, (what, [(s.service, s.name) for s in found],
                             sorted((s.service, s.name) for s in spans))
    return found[0]


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line still being written, or not ours
    return records


async def test_one_upload_is_one_trace_across_web_and_worker(
        traced_stack: Stack, collector: Collector, hooks: Hooks) -> None:
    header, trace_id, caller = _traceparent()
    async with httpx.AsyncClient(base_url=traced_stack.url, timeout=30) as http:
        token = await new_token(http)
        hook = await http.post("/api/webhooks", headers=auth(token),
                               json={"url": hooks.url("/done")})
        assert hook.status_code == 201, hook.text
        response = await http.post("/api/images", headers={**auth(token), "traceparent": header},
                                   files={"file": ("a.jpg", jpeg_bytes(640, 480), "image/jpeg")})
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        assert (await wait_final(http, token, job_id))["state"] == "completed"

    def complete(spans: list[Span]) -> bool:
        names = {s.name for s in spans}
        return {"job image.process", "job webhook.deliver", "POST",
                "socketio.emit job:completed"} <= names \
            and sum(s.name == "socketio.emit job:completed" for s in spans) >= 2

    spans = await collector.wait_for(trace_id, complete)
    by_id = {s.span_id: s for s in spans}

    # Continued, not replaced: the request's span is the child of the caller's.
    request = _one(spans, "request span", lambda s: s.kind == SERVER)
    assert (request.service, request.name, request.parent_id) == (
        "darkroom-web", "POST /api/images", caller)
    assert request.attributes["http.route"] == "/api/images"
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["url.path"] == "/api/images"
    assert request.attributes["http.response.status_code"] == 202
    assert request.status == Status.STATUS_CODE_UNSET
    # Every span of the upload hangs from it, in one tree, in both kinds of process.
    for span in spans:
        if span is not request:
            assert span.parent_id in by_id, (span.service, span.name, span.parent_id)
    assert {s.service for s in spans} == {"darkroom-web", "darkroom-worker"}

    def children(parent: Span) -> list[Span]:
        return [s for s in spans if s.parent_id == parent.span_id]

    def descends(span: Span, ancestor: Span) -> bool:
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            if span is ancestor:
                return True
        return False

    # The upload's transaction, its message's enqueue, job:queued relayed.
    web_writes = [s for s in children(request) if s.name.startswith("db.write ")]
    assert any(s.name == "db.write create_uploads" for s in web_writes), web_writes
    assert all(s.kind == CLIENT and s.attributes["db.system"] in ("sqlite", "postgresql")
               for s in web_writes)
    enqueue = _one(children(request), "the upload's enqueue", lambda s: s.kind == PRODUCER)
    assert enqueue.name.startswith("enqueue images") and enqueue.service == "darkroom-web"
    assert enqueue.attributes["darkroom.job.id"] == job_id
    queued = _one(spans, "job:queued emit", lambda s: s.name == "socketio.emit job:queued"
                  and s.attributes["darkroom.job.id"] == job_id)
    assert queued.parent_id == request.span_id and queued.service == "darkroom-web"

    # The worker's run: a child of the enqueue, over the start of its attempt and the stages.
    job = _one(spans, "image job span", lambda s: s.name == "job image.process")
    assert (job.service, job.kind, job.parent_id) == ("darkroom-worker", CONSUMER,
                                                      enqueue.span_id)
    assert job.attributes["darkroom.job.id"] == job_id
    assert job.attributes["darkroom.job.attempt"] == 1
    assert job.attributes["messaging.destination.name"].startswith("images")
    assert job.attributes["darkroom.outcome"] == "completed"
    assert any(s.name == "db.write begin_attempt" for s in children(job))
    stages = sorted(s.name for s in children(job) if s.name.startswith("stage "))
    assert stages == ["stage decoding", "stage metadata", "stage preview", "stage thumbnail"]
    # Events the worker published are relayed in the web process, in this trace.
    emits = [s for s in spans if s.name.startswith("socketio.emit ")
             and s.service == "darkroom-web" and descends(s, job)]
    assert {"socketio.emit job:active", "socketio.emit job:progress",
            "socketio.emit job:completed"} <= {s.name for s in emits}

    # The webhook delivery the completion made: sent within the job's span, run in the I/O
    # worker as a job of its own in the same trace, its POST a client span.
    delivery_enqueue = _one(children(job), "the delivery's enqueue",
                            lambda s: s.kind == PRODUCER)
    assert delivery_enqueue.service == "darkroom-worker"
    assert delivery_enqueue.name.startswith("enqueue webhooks")
    delivery = _one(spans, "delivery job span", lambda s: s.name == "job webhook.deliver")
    assert delivery.parent_id == delivery_enqueue.span_id and delivery.kind == CONSUMER
    post = _one(spans, "webhook POST", lambda s: s.name == "POST" and s.kind == CLIENT)
    assert descends(post, delivery)
    assert by_id[post.parent_id].name == "stage delivering"
    assert post.attributes["http.response.status_code"] == 204
    assert post.attributes["server.address"] == "127.0.0.1"
    # The receiver was told the trace too.
    (path, headers), = [p for p in hooks.posts if p[1].get("x-darkroom-event") == "job.completed"
                        and p[1].get("traceparent", "").split("-")[1:2] == [trace_id]]
    assert path == "/done" and headers["traceparent"].split("-")[2] == post.span_id

    # Log lines written inside the request's span carry its trace id (uvicorn's access line).
    access = [r for r in _records(traced_stack.logs / "web.log")
              if r.get("logger") == "uvicorn.access" and r.get("path") == "/api/images"]
    assert access and access[-1]["trace_id"] == trace_id
    assert access[-1]["span_id"] == request.span_id


async def test_a_failed_job_marks_its_span_and_its_log_lines(
        traced_stack: Stack, collector: Collector) -> None:
    header, trace_id, caller = _traceparent()
    async with httpx.AsyncClient(base_url=traced_stack.url, timeout=30) as http:
        token = await new_token(http)
        response = await http.post("/api/tasks", headers={**auth(token), "traceparent": header},
                                   json={"type": "test.flaky",
                                         "payload": {"fail_runs": 1, "error": "permanent"}})
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        assert (await wait_final(http, token, job_id))["state"] == "failed"

    spans = await collector.wait_for(trace_id, lambda spans: any(
        s.name == "job test.flaky" for s in spans) and any(
        s.name == "socketio.emit job:failed" for s in spans))
    request = _one(spans, "request span", lambda s: s.kind == SERVER)
    assert (request.name, request.parent_id) == ("POST /api/tasks", caller)
    job = _one(spans, "job span", lambda s: s.name == "job test.flaky")
    assert job.status == Status.STATUS_CODE_ERROR and "exception" in job.events
    assert job.attributes["darkroom.outcome"] == "failed"
    stage = _one(spans, "the stage it failed in", lambda s: s.name == "stage run 1")
    assert stage.parent_id == job.span_id and stage.status == Status.STATUS_CODE_ERROR
    # The dead letter is written within the job's span (DeadLetters.after_nack).
    assert any(s.name == "db.write end_with_deliveries" and s.parent_id == job.span_id
               for s in spans)
    # Dramatiq's own line about the failure was written inside the job's span.
    deadline = time.monotonic() + 10
    while True:
        lines = [r for r in _records(traced_stack.logs / "worker.log")
                 if r.get("trace_id") == trace_id]
        if lines or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert lines, "no worker line carries the trace id"
    assert all(r.get("job_id") == job_id for r in lines)
    assert {r["span_id"] for r in lines} <= {s.span_id for s in spans}


async def test_an_upload_without_traceparent_starts_a_trace_of_its_own(
        traced_stack: Stack, collector: Collector) -> None:
    async with httpx.AsyncClient(base_url=traced_stack.url, timeout=30) as http:
        token = await new_token(http)
        response = await upload(http, token, jpeg_bytes(64, 48))
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        assert (await wait_final(http, token, job_id))["state"] == "completed"
    deadline = time.monotonic() + 30
    while True:
        with collector.lock:
            jobs = [s for s in collector.spans if s.name == "job image.process"
                    and s.attributes.get("darkroom.job.id") == job_id]
        if jobs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(jobs) == 1
    # The request's span ends after its children and may come in a later batch.
    spans = await collector.wait_for(jobs[0].trace_id,
                                     lambda spans: any(s.kind == SERVER for s in spans))
    request = _one(spans, "request span", lambda s: s.kind == SERVER)
    assert request.parent_id == "" and request.name == "POST /api/images"
