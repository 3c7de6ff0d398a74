"""OpenTelemetry tracing: on when an OTLP endpoint is set, otherwise off and free.

``configure`` (once per process, by its entry point) installs a TracerProvider that sends
spans in batches to the OTLP/HTTP endpoint the standard ``OTEL_EXPORTER_OTLP_*``
variables name (the exporter reads them itself), as the service ``OTEL_SERVICE_NAME`` or
else the process's own name (``darkroom-web``, ``darkroom-worker``). Without an
endpoint nothing is installed and this module imports nothing of OpenTelemetry: every
helper here then answers at once (no span, no carrier), so the callers' hot paths cost a
flag check.

A trace crosses processes as W3C Trace Context headers (``traceparent``, ``tracestate``):
in an HTTP request, in a Dramatiq message's ``MESSAGE_OPTION``, in a bus message's
``trace``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from server.infra import logs
from server.infra.settings import Settings

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

# The Dramatiq message option carrying the sender's trace context (a dict of W3C headers);
# it travels with every copy of the message (retries, delays, the fair lists).
MESSAGE_OPTION = "darkroom_trace"

SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]

# A process stopping waits this long at most for its last spans to be sent: a collector
# that is down must not hold up a deploy (the exporter retries a batch for up to its own
# timeout, OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default, and each batch left after it).
SHUTDOWN_WAIT_S = 5.0

_provider: TracerProvider | None = None


def configure(settings: Settings, service: str) -> bool:
    """Install the tracer provider for this process if ``settings.tracing``; True if on.

    ``service``: the process's service name, unless OTEL_SERVICE_NAME gives one.
    """
    global _provider
    if _provider is not None or not settings.tracing:
        return _provider is not None
    # Imported here: a process without tracing never loads the SDK or the exporter.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Not the SDK's own exit hook, which would wait unbounded: ours (shutdown) is bounded.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service}),
        shutdown_on_exit=False)
    # The batch processor and exporter read OTEL_BSP_* and OTEL_EXPORTER_OTLP_* themselves.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    # The processes call shutdown as they stop; this is for one that exits otherwise.
    atexit.register(shutdown)
    logs.add_source(_log_fields)
    log.info("tracing on: spans go to OTLP/HTTP as %s", settings.otel_service_name or service)
    return True


def enabled() -> bool:
    """Whether this process exports spans."""
    return _provider is not None


def shutdown() -> None:
    """Send the spans still batched, then stop exporting (process exit); waits at most
    SHUTDOWN_WAIT_S."""
    global _provider
    provider, _provider = _provider, None
    if provider is None:
        return
    # In a daemon thread: what has not gone by then is dropped as the process exits.
    stopping = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_WAIT_S)
    if stopping.is_alive():
        log.warning("tracing: the last spans were not sent within %g s", SHUTDOWN_WAIT_S)


def tracer(name: str) -> Tracer | None:
    """A tracer for module ``name``, or None when tracing is off."""
    if _provider is None:
        return None
    return _provider.get_tracer(name)


def _kind(name: SpanKindName) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


@functools.cache
def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def extract(carrier: Mapping[str, str]) -> Context:
    """The context W3C headers carry (an empty one if they carry none, or are malformed)."""
    context: Context = _propagator().extract(carrier)
    return context


def carrier() -> dict[str, str] | None:
    """The current span's W3C headers, or None when tracing is off or no span is active."""
    if _provider is None:
        return None
    headers: dict[str, str] = {}
    _propagator().inject(headers)
    return headers or None


def in_trace() -> bool:
    """Whether a span of this process (or one continued here) is active."""
    if _provider is None:
        return False
    from opentelemetry import trace

    return trace.get_current_span().get_span_context().is_valid


def start_span(name: str, *, kind: SpanKindName = "internal",
               attributes: Mapping[str, str | int] | None = None,
               parent: Mapping[str, str] | None = None) -> Span | None:
    """A started span (not made current), child of the W3C ``parent`` headers when given,
    else of the current span; None when tracing is off. End it with ``end``."""
    if _provider is None:
        return None
    context = extract(parent) if parent is not None else None
    span: Span = _provider.get_tracer(__name__).start_span(
        name, context=context, kind=_kind(kind), attributes=attributes)
    return span


def activate(span: Span) -> Token[Context]:
    """Make ``span`` the current one; returns the token ``deactivate`` takes."""
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(span))


def deactivate(token: Token[Context]) -> None:
    """Undo ``activate`` (tokens are undone latest first)."""
    from opentelemetry import context

    context.detach(token)


def fail(span: Span | None, error: BaseException | str) -> None:
    """Mark ``span`` failed: error status, and the exception recorded when there is one."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    else:
        span.set_status(Status(StatusCode.ERROR, error))


def end(span: Span | None, error: BaseException | None = None) -> None:
    """End ``span``, failed if ``error`` is given."""
    if span is None:
        return
    if error is not None:
        fail(span, error)
    span.end()


@contextlib.contextmanager
def span(name: str, *, kind: SpanKindName = "internal",
         attributes: Mapping[str, str | int] | None = None,
         parent: Mapping[str, str] | None = None) -> Iterator[Span | None]:
    """A current span for the ``with`` block (None when tracing is off); an exception
    leaving the block fails it and goes on."""
    started = start_span(name, kind=kind, attributes=attributes, parent=parent)
    if started is None:
        yield None
        return
    token = activate(started)
    try:
        yield started
    except BaseException as exc:
        fail(started, exc)
        raise
    finally:
        deactivate(token)
        started.end()


def _log_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the active span, for every log line (logs.add_source)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": trace.format_trace_id(context.trace_id),
            "span_id": trace.format_span_id(context.span_id)}
