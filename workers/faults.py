"""Which failures are worth another attempt, and how a failure is described to clients."""

from __future__ import annotations

import os
import socket
import threading
import traceback
from typing import Any

import redis
import sqlalchemy.exc
from dramatiq.middleware import SkipMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded


class JobCancelled(SkipMessage):
    """The job was cancelled (its row already says so): stop now, never retry.

    A SkipMessage, so Dramatiq acks the message instead of parking it in its own
    dead-letter set: a cancelled job is not a failure.
    """


class TransientError(Exception):
    """A task's own signal that the failure is temporary and worth another attempt."""


class DatabaseUnavailable(Exception):
    """A job's state could not be written: the database is away. Nothing was changed."""


class PermanentFailure(Exception):
    """A failure another attempt cannot fix; the original error is its ``__cause__``."""


# Storage I/O, database busy or unreachable, Redis unreachable, a time limit: all can pass.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TransientError,
    redis.ConnectionError,
    redis.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    TimeLimitExceeded,
)


def is_transient(exc: BaseException, permanent: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether ``exc`` is worth retrying; ``permanent`` lists types that never are."""
    return isinstance(exc, TRANSIENT) and not isinstance(exc, permanent)


def root_cause(exc: BaseException) -> BaseException:
    """The error a PermanentFailure wraps, else the error itself."""
    if isinstance(exc, PermanentFailure) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def describe(exc: BaseException) -> dict[str, Any]:
    """The ``error`` field of a Job: the original exception's type, a human message, and
    whether it is worth running again (``retryable``: the cause was transient).

    Filesystem errors are told without their paths: those are the server's business.
    """
    cause = root_cause(exc)
    if isinstance(cause, OSError) and (cause.filename or cause.filename2):
        message = f"storage error: {cause.strerror or type(cause).__name__}"
    else:
        message = str(cause) or type(cause).__name__
    return {"type": type(cause).__name__, "message": message,
            "retryable": is_transient(cause)}


# Enough of a traceback to debug from the job's page, small enough for a DB row.
TRACEBACK_LIMIT = 30


def trace_of(exc: BaseException) -> str:
    """The exception's traceback as text (its innermost TRACEBACK_LIMIT frames)."""
    return "".join(traceback.format_exception(exc, limit=-TRACEBACK_LIMIT))


def worker_name() -> str:
    """``host:pid:thread``: the worker thread that runs an attempt, as its timeline shows."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def image_deleted_error(*, before: bool = False) -> dict[str, str]:
    """The error a job cancelled because its image was deleted ends with."""
    when = "before" if before else "while"
    return {"type": "Cancelled", "message": f"the image was deleted {when} it was processed"}
