"""Making and reading rows for the store's tests, through the store itself where it can."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from server.core.jobs import JobState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Image, Job, new_id, utcnow

ERROR = {"type": "ValueError", "message": "bad pixels"}


def tick() -> None:
    """Let the clock pass a millisecond, so the next ``new_id`` sorts after the last one."""
    time.sleep(0.0011)


def new_user(db: SyncDatabase) -> str:
    return db.write(store.create_user, token_hash=secrets.token_hex(32)).id


def new_queue() -> str:
    """A queue family of one test's own."""
    return f"q{secrets.token_hex(4)}"


def new_job(db: SyncDatabase, user_id: str, *, queue: str = "default",
            task_type: str = "t.echo", max_attempts: int = 3, **fields: Any) -> Job:
    tick()
    return db.write(store.create_job, user_id=user_id, task_type=task_type, queue=queue,
                    payload=fields.pop("payload", {"n": 1}), max_attempts=max_attempts,
                    **fields).job


def new_upload(db: SyncDatabase, user_id: str, *, sha256: str | None = None,
               queue: str = "images", **fields: Any) -> store.JobView:
    tick()
    return db.write(store.create_image_job, image_id=new_id(), user_id=user_id,
                    filename="a.jpg", content_type="image/jpeg", size_bytes=3,
                    sha256=sha256 or secrets.token_hex(32), fmt="JPEG", width=4, height=3,
                    task_type="image.process", queue=queue, max_attempts=3, **fields)


def stored_job(db: SyncDatabase, job_id: str) -> Job:
    view = db.read(store.get_job, job_id=job_id, user_id=None)
    assert view is not None
    return view.job


def stored_image(db: SyncDatabase, image_id: str) -> Image | None:
    return db.read(store.get_image, image_id=image_id, user_id=None)


def set_columns(db: SyncDatabase, model: type[Any], row_id: str, **values: Any) -> None:
    """Change columns directly (backdating, mostly)."""
    db.write(lambda s: s.execute(update(model).where(model.id == row_id).values(**values)))


def finish(db: SyncDatabase, job_id: str, state: JobState = JobState.COMPLETED,
           finished_at: datetime | None = None) -> None:
    """Run the job and end it in ``state``; optionally backdate its end."""
    db.write(store.begin_attempt, job_id=job_id)
    if state is JobState.FAILED:
        db.write(store.dead_letter, job_id=job_id, error={"type": "E", "message": "m"},
                 traceback=None)
    else:
        db.write(store.transition, job_id=job_id, state=state)
    if finished_at is not None:
        set_columns(db, Job, job_id, finished_at=finished_at)


def ago(**delta: float) -> datetime:
    return utcnow() - timedelta(**delta)


def count_rows(db: SyncDatabase, model: type[Any], *where: Any) -> int:
    return int(db.read(lambda s: s.scalar(select(func.count()).select_from(model)
                                          .where(*where))) or 0)


def timeline_names(db: SyncDatabase, job_id: str) -> list[tuple[int, str, str]]:
    return [(e.seq, e.name, e.state) for e in db.read(store.job_timeline, job_id=job_id)]


@contextlib.contextmanager
def count_statements(db: SyncDatabase) -> Iterator[list[str]]:
    """The SQL statements the database runs while the block lasts."""
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


@contextlib.contextmanager
def orm_flushes() -> Iterator[list[str]]:
    """The kinds of rows the ORM's flush writes while the block lasts (any session): the
    writes ``store`` makes through Core (``views.save``, ``insert_rows``) add none."""
    flushed: list[str] = []

    def note(session: Session, *_args: Any) -> None:
        flushed.extend(type(row).__name__ for row in [*session.new, *session.dirty]
                       if session.is_modified(row) or row in session.new)

    event.listen(Session, "before_flush", note)
    try:
        yield flushed
    finally:
        event.remove(Session, "before_flush", note)
