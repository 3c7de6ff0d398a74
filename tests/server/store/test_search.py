"""Job search (``store.search``): every filter of ``JobSearch`` on jobs and dead letters.

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from server.core.jobs import JobState
from server.core.search import JobSearch, short_id
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Image, Job
from tests.server.store.rows import new_job, new_queue, new_upload, new_user, set_columns, tick


def _ids(db: SyncDatabase, *, user_id: str | None = None, limit: int = 50,
         before: str | None = None, **filters: Any) -> list[str]:
    return [v.job.id for v in db.read(store.list_jobs, user_id=user_id, limit=limit,
                                      before=before, search=JobSearch(**filters))]


def _fail(db: SyncDatabase, job_id: str, error: dict[str, str]) -> None:
    db.write(store.begin_attempt, job_id=job_id)
    db.write(store.dead_letter, job_id=job_id, error=error, traceback="Traceback ...")


def test_by_id_prefix_and_short_id(db: SyncDatabase) -> None:
    """A whole id, its start (any length), or its short id (the last 8 characters the
    dashboard shows, or the first 6 or 7 of them)."""
    user_id = new_user(db)
    jobs = [new_job(db, user_id) for _ in range(3)]
    target = jobs[1]
    assert _ids(db, id=target.id) == [target.id]
    assert _ids(db, user_id=user_id, id=target.id[:12]) == [target.id]  # the time, to the ms
    assert target.id in _ids(db, user_id=user_id, id=target.id[:8])  # the same minute or so
    assert _ids(db, id=short_id(target.id)) == [target.id]
    assert _ids(db, id=short_id(target.id)[:6]) == [target.id]  # its start, as typed
    assert _ids(db, id=target.id[-10:]) == []  # longer than a short id: a prefix only
    assert _ids(db, id="f" * 32) == []


def test_by_type_queue_state_and_owner(db: SyncDatabase) -> None:
    """Exact type, owner and state; a queue name, or a base name for its whole family."""
    me, other = new_user(db), new_user(db)
    kind, queue = f"t.{secrets.token_hex(3)}", new_queue()
    normal = new_job(db, me, task_type=kind, queue=queue)
    high = new_job(db, me, task_type=kind, queue=f"{queue}.high")
    theirs = new_job(db, other, task_type=kind, queue=queue)
    db.write(store.begin_attempt, job_id=normal.id)
    assert _ids(db, type=kind) == [theirs.id, high.id, normal.id]
    assert _ids(db, type=kind, user=me) == [high.id, normal.id]
    assert _ids(db, user_id=me, type=kind) == [high.id, normal.id]  # a plain user's own
    assert _ids(db, queue=queue) == [theirs.id, high.id, normal.id]
    assert _ids(db, queue=f"{queue}.high") == [high.id]
    assert _ids(db, type=kind, state="active") == [normal.id]
    assert _ids(db, type=kind, state="queued", user=other) == [theirs.id]


def test_by_filename_and_content_hash(db: SyncDatabase) -> None:
    """Filename: any case, anywhere in the name, wildcards taken literally; the hash: whole
    or its start."""
    user_id = new_user(db)
    beach = new_upload(db, user_id)
    set_columns(db, Image, beach.image.id, filename="Beach_100%.JPG")
    other = new_upload(db, user_id)
    assert _ids(db, user_id=user_id, filename="beach") == [beach.job.id]
    assert _ids(db, user_id=user_id, filename="H_100%.j") == [beach.job.id]
    assert _ids(db, user_id=user_id, filename="0%.") == [beach.job.id]
    assert _ids(db, user_id=user_id, filename="h%1") == []  # % is no wildcard
    assert _ids(db, user_id=user_id, sha256=other.image.sha256) == [other.job.id]
    assert _ids(db, user_id=user_id, sha256=other.image.sha256[:8]) == [other.job.id]
    assert _ids(db, user_id=user_id, sha256="0" * 64) == []


def test_by_error_type_or_message(db: SyncDatabase) -> None:
    """Either the error's type or its message, any case; jobs without an error never match."""
    user_id = new_user(db)
    timeout = new_job(db, user_id)
    _fail(db, timeout.id, {"type": "TimeLimitExceeded", "message": "took over 300 s"})
    broken = new_job(db, user_id)
    _fail(db, broken.id, {"type": "ImageError", "message": "Truncated JPEG"})
    new_job(db, user_id)
    assert _ids(db, user_id=user_id, error="timelimit") == [timeout.id]
    assert _ids(db, user_id=user_id, error="truncated jpeg") == [broken.id]
    assert _ids(db, user_id=user_id, error="e") == [broken.id, timeout.id]
    assert _ids(db, user_id=user_id, error="type") == []  # the keys are not searched


def test_by_creation_time(db: SyncDatabase) -> None:
    """``from`` inclusive, ``to`` exclusive, to the millisecond of the id."""
    user_id = new_user(db)
    first, second, third = (new_job(db, user_id) for _ in range(3))
    # The id's millisecond (created_at is read a moment before the id is made, and may
    # be a millisecond earlier).
    at = datetime.fromtimestamp(int(second.id[:12], 16) / 1000, UTC)
    assert _ids(db, user_id=user_id, created_from=at) == [third.id, second.id]
    assert _ids(db, user_id=user_id, created_to=at) == [first.id]
    assert _ids(db, user_id=user_id, created_from=at, created_to=at + timedelta(
        milliseconds=1)) == [second.id]


def test_filters_combine_and_pages_follow_the_cursor(db: SyncDatabase) -> None:
    user_id = new_user(db)
    kind = f"t.{secrets.token_hex(3)}"
    jobs = [new_job(db, user_id, task_type=kind) for _ in range(5)]
    failed = jobs[1]
    _fail(db, failed.id, {"type": "E", "message": "m"})
    newest = sorted((j.id for j in jobs), reverse=True)
    assert _ids(db, type=kind, limit=2) == newest[:2]
    assert _ids(db, type=kind, limit=2, before=newest[1]) == newest[2:4]
    assert _ids(db, type=kind, state="failed", error="m") == [failed.id]
    assert _ids(db, type=kind, state="queued", error="m") == []


def test_dead_letters_search_retry_ids_and_clear_by_the_same_filters(db: SyncDatabase) -> None:
    """The dead-letter queue takes the same filters (its own copy of the error); the ids to
    retry and the entries cleared are those that match, the rest stay."""
    user_id, other = new_user(db), new_user(db)
    kind = f"t.{secrets.token_hex(3)}"
    mine = new_job(db, user_id, task_type=kind)
    _fail(db, mine.id, {"type": "Timeout", "message": "slow"})
    theirs = new_job(db, other, task_type=kind)
    _fail(db, theirs.id, {"type": "ImageError", "message": "broken"})
    search = JobSearch(type=kind, error="timeout")
    rows = db.read(store.list_dead_letters, limit=10, search=search)
    assert [(entry.job_id, view.job.id) for entry, view in rows] == [(mine.id, mine.id)]
    assert db.read(store.dead_letter_ids, search=JobSearch(type=kind, user=other)) == [
        theirs.id]
    assert db.write(store.clear_dead_letters, search=search) == [mine.id]
    assert db.read(store.dead_letter_ids, search=JobSearch(type=kind)) == [theirs.id]
    assert db.read(store.get_job, job_id=mine.id, user_id=None).job.state == (
        JobState.FAILED.value)  # the job itself stays


def test_a_page_reads_its_images_in_one_query(db: SyncDatabase) -> None:
    """Each job comes with its image (``views_of``), a task job without one with None."""
    user_id = new_user(db)
    upload = new_upload(db, user_id)
    tick()
    task = new_job(db, user_id)
    views = db.read(store.list_jobs, user_id=user_id, limit=10)
    assert [(v.job.id, v.image.id if v.image else None) for v in views] == [
        (task.id, None), (upload.job.id, upload.image.id)]
    assert isinstance(views[0].job, Job)
