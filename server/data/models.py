"""SQLAlchemy tables: users and their tokens, images, jobs and what hangs off them.

The schema is changed only through migrations (server/data/migrations, `darkroom migrate`).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Where an id's short form (its last 8 characters, 1-based as SQL counts) begins.
SHORT_ID_FROM = 25
# "host:pid:thread" of the worker thread that ran an attempt, cut to fit.
WORKER_CHARS = 200


# None is stored as SQL NULL, however the row is written (the ORM's flush, Core's INSERT
# and UPDATE in ``store``), never as the JSON text "null".
_OPT_JSON = JSON(none_as_null=True)


def new_id() -> str:
    """A 32-char id that sorts by creation time (ms) then randomly."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC here."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, as every time on the wire."""
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Made by `darkroom admin create-token`; ADMIN_TOKEN's user is an admin by matching it.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False,
                                           server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """A bearer token of a user; deleting the row revokes it."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    # Only a SHA-256 of the token is stored, so a leaked database leaks no tokens (they
    # are 256 random bits: a fast hash is enough, there is nothing to guess).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict[str, Any] | None] = mapped_column(_OPT_JSON, nullable=True, default=None)
    has_thumbnail: Mapped[bool] = mapped_column(Boolean, default=False)
    has_preview: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    # Searches (server.core.search) list newest first, a page at a time: an index led by
    # the filtered column and ending in the id serves a filter and the order at once.
    __table_args__ = (
        Index("ix_jobs_user_id_id", "user_id", "id"),
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_type_id", "type", "id"),
        Index("ix_jobs_queue_id", "queue", "id"),
        # The short id the dashboard shows: the id's random end (server.core.search).
        Index("ix_jobs_short_id", func.substr(text("id"), SHORT_ID_FROM)),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(_OPT_JSON, nullable=True, default=None)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(_OPT_JSON, nullable=True, default=None)
    image_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    batch_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # The job this one serves: a webhook delivery's is the job whose end it POSTs.
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # The Dramatiq message that may run this job; any other copy is skipped (see store).
    message_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Whether that message reached Redis; the sweeper re-sends those that did not.
    enqueued: Mapped[bool] = mapped_column(Boolean, default=False)
    # Grows by one with every stored change, so clients can drop stale events.
    seq: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeadLetter(Base):
    """A job that failed for good: the final error as it happened (Dramatiq's XQ copy is stale)."""

    __tablename__ = "dead_letters"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    error_type: Mapped[str] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Webhook(Base):
    """A URL a user wants every final state of their jobs POSTed to."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Batch(Base):
    """Several files uploaded together; progress is followed across their jobs."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    files: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Schedule(Base):
    """A task a user wants created on a cron schedule."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobEventRecord(Base):
    """One stored change of a job, as its event announced it: the job's timeline."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32))
    progress: Mapped[int] = mapped_column(Integer)
    error: Mapped[dict[str, Any] | None] = mapped_column(_OPT_JSON, nullable=True, default=None)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Who ran the attempt a job:active began ("host:pid:thread"), and the traceback of
    # the attempt a job:retrying or job:failed ended: each attempt's story stays.
    worker: Mapped[str | None] = mapped_column(String(WORKER_CHARS), nullable=True,
                                               default=None)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    # The end of an attempt: its stages as the worker timed them, [[stage, seconds], ...]
    # (the events show only those that lasted past PROGRESS_INTERVAL_MS).
    stages: Mapped[list[Any] | None] = mapped_column(_OPT_JSON, nullable=True, default=None)
