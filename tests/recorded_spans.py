"""Spans made in the test process, kept by the SDK's own in-memory exporter.

``server.infra.tracing`` is switched on for one test by giving it a real TracerProvider
(not installed as OpenTelemetry's global one, which a process can set only once): every
span the code under test makes goes through the real SDK to ``InMemorySpanExporter``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.infra import tracing


class Recorded:
    """The spans ended so far, and the provider that made them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test"}),
                                       shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]


def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    """Tracing on in this process for one test (a fixture's body: ``yield from`` it)."""
    made = Recorded()
    monkeypatch.setattr(tracing, "_provider", made.provider)
    yield made
    made.provider.shutdown()
