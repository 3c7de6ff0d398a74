"""The messages between processes on the Redis bus, tagged by their event name (pure).

A job's message carries its <Job> as the presenter built it (a plain dict: the relay
passes it on untouched). ``published_at`` is the publish time (epoch seconds), absent
from publishers that predate it. ``trace`` is the publisher's trace context as W3C
headers (``traceparent``, ``tracestate``), present only when the publisher traces.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class Message(Struct, frozen=True, kw_only=True, tag_field="name", omit_defaults=True):
    """One bus message; ``name`` is the Socket.IO event it becomes."""

    published_at: float | None = None
    trace: dict[str, str] | None = None


class JobMessage(Message, frozen=True, kw_only=True):
    """A job's transition or progress step, for its owner (CONTRACT ``job:*``)."""

    user_id: str
    job: dict[str, Any]


# One class per event name: a tagged union needs one tag per type.
class JobQueued(JobMessage, frozen=True, tag="job:queued"):
    """The job is waiting in its queue."""


class JobActive(JobMessage, frozen=True, tag="job:active"):
    """A worker is running the job."""


class JobProgress(JobMessage, frozen=True, tag="job:progress"):
    """The job moved on a stage."""


class JobRetrying(JobMessage, frozen=True, tag="job:retrying"):
    """An attempt failed; the next one is scheduled."""


class JobCompleted(JobMessage, frozen=True, tag="job:completed"):
    """The job finished with a result."""


class JobFailed(JobMessage, frozen=True, tag="job:failed"):
    """The job's last attempt failed."""


class JobCancelled(JobMessage, frozen=True, tag="job:cancelled"):
    """The job was stopped on request."""


class BatchProgress(Message, frozen=True, kw_only=True, tag="batch:progress"):
    """Where a batch upload stands (CONTRACT ``batch:progress``)."""

    user_id: str
    batch: dict[str, Any]


class DeadLettersRemoved(Message, frozen=True, kw_only=True, tag="dlq:removed"):
    """News for the admins' dashboard: dead letters were deleted."""

    admin: dict[str, Any]


class SessionRevoked(Message, frozen=True, kw_only=True, tag="session:revoked"):
    """A bearer token was revoked: every web process closes the sockets it opened."""

    token_id: str


JOB_MESSAGES: tuple[type[JobMessage], ...] = (
    JobQueued, JobActive, JobProgress, JobRetrying, JobCompleted, JobFailed, JobCancelled)

BusMessage = (JobQueued | JobActive | JobProgress | JobRetrying | JobCompleted | JobFailed
              | JobCancelled | BatchProgress | DeadLettersRemoved | SessionRevoked)
