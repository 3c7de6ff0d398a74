"""Logging for every process: one setup, text or JSON lines, and per-task context fields.

Context fields (``request_id``, ``user_id``, ``job_id``) live in a context variable, so
every line logged while a request, a Socket.IO handler or a job message is being
handled carries them without being passed around: asyncio tasks copy the context they
start from, and each Dramatiq worker thread has its own. Fields that are worked out per
line (the active span's ``trace_id``, when tracing is on) come from the sources added
with ``add_source``; there are none otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

FORMATS = ("text", "json")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "darkroom_log_context", default=_EMPTY)

# Called for each line; what they return joins the context fields (server.infra.tracing).
_sources: list[Callable[[], Mapping[str, str]]] = []

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}
# uvicorn.access logs '%s - "%s %s HTTP/%s" %d' with these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def bind(**fields: str | None) -> contextvars.Token[Mapping[str, str]]:
    """Add fields to the current context (None removes one); returns a token for reset()."""
    merged = {**_context.get()}
    for key, value in fields.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return _context.set(MappingProxyType(merged))


def reset(token: contextvars.Token[Mapping[str, str]]) -> None:
    """Put the context back as it was before the bind() that returned ``token``."""
    _context.reset(token)


def clear() -> None:
    """Drop every context field (a worker thread between two messages)."""
    _context.set(_EMPTY)


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """The fields in the context for the duration of a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


def context() -> dict[str, str]:
    """The current context fields."""
    return dict(_context.get())


def add_source(source: Callable[[], Mapping[str, str]]) -> None:
    """Add fields ``source()`` returns to every line logged from now on (once per source)."""
    if source not in _sources:
        _sources.append(source)


def _extras(record: logging.LogRecord, *, access_fields: bool = True) -> dict[str, Any]:
    """Context fields, then the record's own ``extra=`` fields (which win), then for an
    access line its request's method, path, status (when ``access_fields``)."""
    fields: dict[str, Any] = dict(_context.get())
    for source in _sources:
        fields.update(source())
    fields.update((k, v) for k, v in record.__dict__.items()
                  if k not in _STANDARD and not k.startswith("_"))
    if access_fields and record.name == "uvicorn.access" and isinstance(record.args, tuple) \
            and len(record.args) == len(_ACCESS_FIELDS):
        fields.update(zip(_ACCESS_FIELDS, record.args, strict=True))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context and extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value …`` (context and extra fields appended)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # (An access line's message already tells its method, path and status.)
        pairs = " ".join(f"{key}={_text_value(value)}"
                         for key, value in _extras(record, access_fields=False).items())
        base = super().formatMessage(record)
        return f"{base} {pairs}" if pairs else base


def level_number(level: str) -> int:
    """``info`` → 20; uvicorn's ``trace`` is 5; an unknown name means info."""
    if level.lower() == "trace":
        return 5
    value = logging.getLevelNamesMapping().get(level.upper())
    return value if value is not None else logging.INFO


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr now) in the chosen format.

    Replaces whatever handlers the root logger had (Dramatiq's CLI installs its own),
    so that every line of the process has one shape.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_number(level))
    # The audit trail is not noise to be turned down with LOG_LEVEL=warning.
    logging.getLogger("darkroom.audit").setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings become log lines of the same shape
    # uvicorn and Dramatiq log through their own named loggers: let them reach ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True
