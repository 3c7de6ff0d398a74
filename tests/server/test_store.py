"""Direct tests of ``server.data.store``, every public function, on real databases.

Backends (the ``db`` fixture):

- SQLite IN MEMORY (``sqlite:///:memory:``). ``SyncDatabase`` gets SQLAlchemy's
  ``SingletonThreadPool`` for it, so every session of this single-threaded module shares one
  connection and so one database. A session gives its connection back only after its
  transaction is committed or rolled back, so reading a write back in a new session still
  proves it was committed. No file, no process: these tests run with ``-m "not integration"``.
- PostgreSQL when TEST_DATABASE_URL is set (marked ``integration``): a database of our own,
  ``darkroom_test_<hex>``, made with ``tests.conftest.Databases`` and dropped afterwards.

One migrated schema per backend for the whole module. Tests keep out of each other's way
with fresh users, queue families and task types; the few functions that look across all
users (dead-letter counts, purges, sweeps, due schedules) are tested on emptied tables
(``empty``).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.core.jobs import AttemptsExhausted, ImageBusy, ImageDeleted, JobState, TransitionError
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import (
    Base,
    Batch,
    DeadLetter,
    Image,
    Job,
    JobEventRecord,
    Schedule,
    Token,
    User,
    Webhook,
    as_utc,
    new_id,
    utcnow,
)
from tests.conftest import Databases


def _backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append(pytest.param("postgresql", marks=pytest.mark.integration))
    return params


@pytest.fixture(scope="module", params=_backends())
def db(request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncDatabase]:
    """A migrated database of one backend, shared by the module."""
    made = Databases(request.param, tmp_path_factory) if request.param != "sqlite" else None
    database = SyncDatabase(made.new() if made else "sqlite:///:memory:")
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        if made is not None:
            made.drop_all()


@pytest.fixture
def empty(db: SyncDatabase) -> SyncDatabase:
    """``db`` with every table emptied, for functions that look across all users."""

    def wipe(s: Session) -> None:
        for table in Base.metadata.sorted_tables:
            s.execute(delete(table))

    db.write(wipe)
    return db


# -- helpers -------------------------------------------------------------------------------------

def _tick() -> None:
    """Let the clock pass a millisecond, so the next ``new_id`` sorts after the last one."""
    time.sleep(0.0011)


def _user(db: SyncDatabase) -> str:
    return db.write(store.create_user, token_hash=secrets.token_hex(32)).id


def _queue() -> str:
    """A queue family of one test's own."""
    return f"q{secrets.token_hex(4)}"


def _job(db: SyncDatabase, user_id: str, *, queue: str = "default", task_type: str = "t.echo",
         max_attempts: int = 3, **fields: Any) -> Job:
    _tick()
    return db.write(store.create_job, user_id=user_id, task_type=task_type, queue=queue,
                    payload=fields.pop("payload", {"n": 1}), max_attempts=max_attempts,
                    **fields).job


def _upload(db: SyncDatabase, user_id: str, *, sha256: str | None = None,
            queue: str = "images", **fields: Any) -> store.JobView:
    _tick()
    return db.write(store.create_image_job, image_id=new_id(), user_id=user_id,
                    filename="a.jpg", content_type="image/jpeg", size_bytes=3,
                    sha256=sha256 or secrets.token_hex(32), fmt="JPEG", width=4, height=3,
                    task_type="image.process", queue=queue, max_attempts=3, **fields)


def _get(db: SyncDatabase, job_id: str) -> Job:
    view = db.read(store.get_job, job_id=job_id, user_id=None)
    assert view is not None
    return view.job


def _image(db: SyncDatabase, image_id: str) -> Image | None:
    return db.read(store.get_image, image_id=image_id, user_id=None)


def _set(db: SyncDatabase, model: type[Any], row_id: str, **values: Any) -> None:
    """Change columns directly (backdating, mostly)."""
    db.write(lambda s: s.execute(update(model).where(model.id == row_id).values(**values)))


def _finish(db: SyncDatabase, job_id: str, state: JobState = JobState.COMPLETED,
            finished_at: datetime | None = None) -> None:
    """Run the job and end it in ``state``; optionally backdate its end."""
    db.write(store.begin_attempt, job_id=job_id)
    if state is JobState.FAILED:
        db.write(store.dead_letter, job_id=job_id, error={"type": "E", "message": "m"},
                 traceback=None)
    else:
        db.write(store.transition, job_id=job_id, state=state)
    if finished_at is not None:
        _set(db, Job, job_id, finished_at=finished_at)


def _ago(**delta: float) -> datetime:
    return utcnow() - timedelta(**delta)


def _count(db: SyncDatabase, model: type[Any], *where: Any) -> int:
    return int(db.read(lambda s: s.scalar(select(func.count()).select_from(model)
                                          .where(*where))) or 0)


def _names(db: SyncDatabase, job_id: str) -> list[tuple[int, str, str]]:
    return [(e.seq, e.name, e.state) for e in db.read(store.job_timeline, job_id=job_id)]


ERROR = {"type": "ValueError", "message": "bad pixels"}


# -- users and tokens ----------------------------------------------------------------------------

def test_users_and_their_tokens_resolve_by_hash(db: SyncDatabase) -> None:
    """create_user stores a user with one token; create_token adds another; both resolve."""
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    user = db.write(store.create_user, token_hash=first, label="cli")
    admin = db.write(store.create_user, token_hash=secrets.token_hex(32), is_admin=True)
    extra = db.write(store.create_token, user_id=user.id, token_hash=second, label="laptop")

    found = db.read(store.user_by_token_hash, token_hash=first)
    assert found is not None
    assert found[0].id == user.id and not found[0].is_admin
    assert found[1].label == "cli" and found[1].user_id == user.id
    again = db.read(store.user_by_token_hash, token_hash=second)
    assert again is not None and again[0].id == user.id
    assert again[1].id == extra.id != found[1].id and again[1].label == "laptop"
    assert db.read(lambda s: s.get(User, admin.id)).is_admin
    assert db.read(store.user_by_token_hash, token_hash=secrets.token_hex(32)) is None


def test_a_token_hash_belongs_to_one_user_only(db: SyncDatabase) -> None:
    """The unique index refuses a second user on the same hash; nothing of it is stored."""
    token_hash = secrets.token_hex(32)
    db.write(store.create_user, token_hash=token_hash)
    before = _count(db, User)
    with pytest.raises(IntegrityError):
        db.write(store.create_user, token_hash=token_hash)
    assert _count(db, User) == before
    assert _count(db, Token, Token.token_hash == token_hash) == 1


def test_ensure_user_creates_the_user_once(db: SyncDatabase) -> None:
    """The first call makes the user (token labelled ADMIN_TOKEN); later calls find it."""
    token_hash = secrets.token_hex(32)
    user, token = db.write(store.ensure_user, token_hash=token_hash)
    assert token.label == "ADMIN_TOKEN" and token.user_id == user.id
    user_again, token_again = db.write(store.ensure_user, token_hash=token_hash)
    assert (user_again.id, token_again.id) == (user.id, token.id)
    assert _count(db, Token, Token.token_hash == token_hash) == 1
    assert _count(db, User, User.id == user.id) == 1


def test_revoke_token_forgets_that_token_only(db: SyncDatabase) -> None:
    """Revoked: unknown from now on, the user's other tokens still work; twice is False."""
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    user = db.write(store.create_user, token_hash=first)
    db.write(store.create_token, user_id=user.id, token_hash=second)
    found = db.read(store.user_by_token_hash, token_hash=first)
    assert found is not None
    assert db.write(store.revoke_token, token_id=found[1].id) is True
    assert db.read(store.user_by_token_hash, token_hash=first) is None
    still = db.read(store.user_by_token_hash, token_hash=second)
    assert still is not None and still[0].id == user.id
    assert db.write(store.revoke_token, token_id=found[1].id) is False


def test_existing_token_ids_drops_revoked_and_unknown_ids(db: SyncDatabase) -> None:
    """Only ids of tokens that still exist come back; an empty question is answered empty."""
    user = db.write(store.create_user, token_hash=secrets.token_hex(32))
    kept = db.write(store.create_token, user_id=user.id, token_hash=secrets.token_hex(32))
    gone = db.write(store.create_token, user_id=user.id, token_hash=secrets.token_hex(32))
    db.write(store.revoke_token, token_id=gone.id)
    assert db.read(store.existing_token_ids, token_ids={kept.id, gone.id, new_id()}) == {
        kept.id}
    assert db.read(store.existing_token_ids, token_ids=set()) == set()


def test_set_admin_promotes_an_existing_user_only(db: SyncDatabase) -> None:
    """The flag is stored; an unknown id gives None."""
    user_id = _user(db)
    promoted = db.write(store.set_admin, user_id=user_id)
    assert promoted is not None and promoted.id == user_id
    assert db.read(lambda s: s.get(User, user_id)).is_admin is True
    assert db.write(store.set_admin, user_id=new_id()) is None


def test_user_is_admin_when_marked_or_holding_the_admin_token(db: SyncDatabase) -> None:
    """Marked admin, or a token of theirs hashes to ADMIN_TOKEN's hash as set now."""
    plain, marked, admin_hash = _user(db), _user(db), secrets.token_hex(32)
    db.write(store.set_admin, user_id=marked)
    held = db.write(store.create_user, token_hash=admin_hash, label="ADMIN_TOKEN").id

    def admin(user_id: str, token_hash: str | None = admin_hash) -> bool:
        return db.read(store.user_is_admin, user_id=user_id, admin_token_hash=token_hash)

    assert (admin(plain), admin(marked), admin(held)) == (False, True, True)
    assert admin(held, secrets.token_hex(32)) is False  # ADMIN_TOKEN rotated
    assert admin(held, None) is False  # ADMIN_TOKEN unset
    assert admin(new_id()) is False


# -- creating jobs and images --------------------------------------------------------------------

def test_create_job_records_a_queued_job_and_its_first_event(db: SyncDatabase) -> None:
    """All given fields are stored; the job starts queued at seq 1, unsent, with a message id."""
    user_id = _user(db)
    batch = db.write(store.create_batch, user_id=user_id, files=1)
    run_at = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    view = db.write(store.create_job, user_id=user_id, task_type="t.echo", queue="default.high",
                    payload={"text": "hi"}, max_attempts=4, priority="high", run_at=run_at,
                    stage="paused", batch_id=batch.id)
    assert view.image is None
    job = _get(db, view.job.id)
    assert (job.user_id, job.type, job.queue, job.priority) == (
        user_id, "t.echo", "default.high", "high")
    assert (job.state, job.stage, job.progress, job.attempt, job.max_attempts, job.seq) == (
        "queued", "paused", 0, 0, 4, 1)
    assert job.payload == {"text": "hi"} and job.batch_id == batch.id
    assert job.run_at is not None and as_utc(job.run_at) == run_at
    assert job.enqueued is False and uuid.UUID(str(job.message_id)).version == 4
    assert job.error is None and job.result is None and job.finished_at is None
    assert _names(db, job.id) == [(1, "job:queued", "queued")]
    assert len(job.id) == 32


def test_create_task_job_ties_the_job_to_the_users_own_idle_image(db: SyncDatabase) -> None:
    """None for another user's image, ImageBusy while its job is unfinished; once that job
    ended, the new job becomes the image's current one and the image is queued again."""
    owner, other = _user(db), _user(db)
    upload = _upload(db, owner)
    assert upload.image is not None
    image_id = upload.image.id
    fields = {"task_type": "image.reprocess", "queue": "images", "payload": {"image_id": image_id},
              "max_attempts": 2}

    assert db.write(store.create_task_job, user_id=other, image_id=image_id, **fields) is None
    assert _count(db, Job, Job.user_id == other) == 0
    with pytest.raises(ImageBusy):
        db.write(store.create_task_job, user_id=owner, image_id=image_id, **fields)

    _finish(db, upload.job.id)
    assert _image(db, image_id).status == "ready"  # type: ignore[union-attr]
    view = db.write(store.create_task_job, user_id=owner, image_id=image_id, **fields)
    assert view is not None and view.image is not None and view.job.image_id == image_id
    image = _image(db, image_id)
    assert image is not None and image.job_id == view.job.id and image.status == "queued"

    plain = db.write(store.create_task_job, user_id=owner, **fields)
    assert plain is not None and plain.image is None and plain.job.image_id is None
    assert _get(db, plain.job.id).state == "queued"


def test_delete_job_removes_the_job_and_its_timeline(db: SyncDatabase) -> None:
    """Undoing a task job leaves no trace of it; other jobs keep their timelines."""
    user_id = _user(db)
    job, other = _job(db, user_id), _job(db, user_id)
    db.write(store.delete_job, job_id=job.id)
    assert db.read(store.get_job, job_id=job.id, user_id=None) is None
    assert db.read(store.job_timeline, job_id=job.id) == []
    assert len(db.read(store.job_timeline, job_id=other.id)) == 1


def test_delete_job_gives_the_image_back_its_previous_job(db: SyncDatabase) -> None:
    """Undoing a task job on an image (its message could not be sent) leaves the image as it
    was: its current job is the earlier one again, and so is its status."""
    user_id = _user(db)
    upload = _upload(db, user_id)
    assert upload.image is not None
    _finish(db, upload.job.id)
    view = db.write(store.create_task_job, user_id=user_id, image_id=upload.image.id,
                    task_type="image.reprocess", queue="images",
                    payload={"image_id": upload.image.id}, max_attempts=1)
    assert view is not None
    db.write(store.delete_job, job_id=view.job.id)
    image = _image(db, upload.image.id)
    assert image is not None
    assert (image.job_id, image.status) == (upload.job.id, "ready")
    only = _upload(db, user_id)  # an image left without any job names none
    assert only.image is not None
    db.write(store.delete_job, job_id=only.job.id)
    assert _image(db, only.image.id).job_id is None  # type: ignore[union-attr]


def test_create_image_job_stores_the_upload_and_its_job(db: SyncDatabase) -> None:
    """The image row carries the file's facts and names its job; the job's payload names it."""
    user_id = _user(db)
    sha = secrets.token_hex(32)
    batch = db.write(store.create_batch, user_id=user_id, files=1)
    view = _upload(db, user_id, sha256=sha, priority="low", queue="images.low",
                   batch_id=batch.id)
    assert view.image is not None
    image = _image(db, view.image.id)
    assert image is not None
    assert (image.user_id, image.status, image.filename, image.content_type, image.size_bytes,
            image.sha256, image.format, image.width, image.height) == (
        user_id, "queued", "a.jpg", "image/jpeg", 3, sha, "JPEG", 4, 3)
    assert image.job_id == view.job.id and not image.has_thumbnail and image.meta is None
    job = _get(db, view.job.id)
    assert job.payload == {"image_id": image.id} and job.image_id == image.id
    assert (job.type, job.queue, job.priority, job.batch_id) == (
        "image.process", "images.low", "low", batch.id)


def _upload_fields(user_id: str, sha256: str) -> dict[str, Any]:
    return {"image_id": new_id(), "user_id": user_id, "sha256": sha256, "filename": "b.png",
            "content_type": "image/png", "size_bytes": 5, "fmt": "PNG", "width": 2,
            "height": 2, "task_type": "image.process", "queue": "images", "max_attempts": 1}


def test_create_upload_returns_the_earlier_upload_of_the_same_bytes(db: SyncDatabase) -> None:
    """Same user and bytes: the earlier view, flagged, nothing new stored. Another user, or
    after the earlier one failed: a new upload."""
    user_id, other = _user(db), _user(db)
    sha = secrets.token_hex(32)
    first, duplicate = db.write(store.create_upload, **_upload_fields(user_id, sha))
    assert duplicate is False and first.image is not None

    again, duplicate = db.write(store.create_upload, **_upload_fields(user_id, sha))
    assert duplicate is True
    assert again.job.id == first.job.id and again.image is not None
    assert again.image.id == first.image.id
    assert _count(db, Image, Image.user_id == user_id) == 1

    theirs, duplicate = db.write(store.create_upload, **_upload_fields(other, sha))
    assert duplicate is False and theirs.job.id != first.job.id

    _finish(db, first.job.id, JobState.FAILED)
    retried, duplicate = db.write(store.create_upload, **_upload_fields(user_id, sha))
    assert duplicate is False and retried.job.id != first.job.id
    assert _count(db, Image, Image.user_id == user_id) == 2


def test_find_duplicate_picks_the_newest_usable_upload(db: SyncDatabase) -> None:
    """The newest non-failed image of those bytes; None when there is none, when the image
    has no job or its job is gone."""
    user_id = _user(db)
    sha = secrets.token_hex(32)
    assert db.read(store.find_duplicate, user_id=user_id, sha256=sha) is None
    older, newer = _upload(db, user_id, sha256=sha), _upload(db, user_id, sha256=sha)
    assert older.image is not None and newer.image is not None
    found = db.read(store.find_duplicate, user_id=user_id, sha256=sha)
    assert found is not None and found.image is not None
    assert (found.job.id, found.image.id) == (newer.job.id, newer.image.id)

    _finish(db, newer.job.id, JobState.CANCELLED)  # a cancelled image counts as failed
    found = db.read(store.find_duplicate, user_id=user_id, sha256=sha)
    assert found is not None and found.job.id == older.job.id

    db.write(store.record_image_output, image_id=older.image.id, job_id=None)
    assert db.read(store.find_duplicate, user_id=user_id, sha256=sha) is None
    dangling = _upload(db, user_id, sha256=sha)
    db.write(lambda s: s.execute(delete(Job).where(Job.id == dangling.job.id)))
    assert db.read(store.find_duplicate, user_id=user_id, sha256=sha) is None


def test_delete_upload_removes_image_job_and_timeline(db: SyncDatabase) -> None:
    """Undoing an upload leaves neither its image nor its job nor their events."""
    user_id = _user(db)
    view = _upload(db, user_id)
    assert view.image is not None
    db.write(store.delete_upload, image_id=view.image.id, job_id=view.job.id)
    assert _image(db, view.image.id) is None
    assert db.read(store.get_job, job_id=view.job.id, user_id=None) is None
    assert _count(db, JobEventRecord, JobEventRecord.job_id == view.job.id) == 0


def test_get_image_is_scoped_to_its_owner(db: SyncDatabase) -> None:
    """Found by its owner and by an admin (user_id None); not by anyone else."""
    owner, other = _user(db), _user(db)
    view = _upload(db, owner)
    assert view.image is not None
    mine = db.read(store.get_image, image_id=view.image.id, user_id=owner)
    assert mine is not None and mine.id == view.image.id
    assert db.read(store.get_image, image_id=view.image.id, user_id=None) is not None
    assert db.read(store.get_image, image_id=view.image.id, user_id=other) is None
    assert db.read(store.get_image, image_id=new_id(), user_id=None) is None


def test_list_images_pages_the_users_images_newest_first(db: SyncDatabase) -> None:
    """limit caps a page; ``before`` continues after the last id; others' images never show."""
    owner, other = _user(db), _user(db)
    ids = [view.image.id for view in (_upload(db, owner) for _ in range(5))
           if view.image is not None]
    _upload(db, other)
    newest_first = sorted(ids, reverse=True)
    page = db.read(store.list_images, user_id=owner, limit=2)
    assert [image.id for image in page] == newest_first[:2]
    page = db.read(store.list_images, user_id=owner, limit=2, before=page[-1].id)
    assert [image.id for image in page] == newest_first[2:4]
    page = db.read(store.list_images, user_id=owner, limit=10, before=page[-1].id)
    assert [image.id for image in page] == newest_first[4:]
    assert [i.id for i in db.read(store.list_images, user_id=owner, limit=10)] == newest_first


def test_delete_image_removes_the_row_for_its_owner_only(db: SyncDatabase) -> None:
    """Another user gets None and the image stays; the owner gets the row and it is gone.
    Its job stays, now without an image."""
    owner, other = _user(db), _user(db)
    view = _upload(db, owner)
    assert view.image is not None
    image_id = view.image.id
    assert db.write(store.delete_image, image_id=image_id, user_id=other) is None
    assert _image(db, image_id) is not None
    removed = db.write(store.delete_image, image_id=image_id, user_id=owner)
    assert removed is not None and removed.id == image_id
    assert _image(db, image_id) is None
    job = db.read(store.get_job, job_id=view.job.id, user_id=owner)
    assert job is not None and job.image is None
    assert db.write(store.delete_image, image_id=image_id, user_id=None) is None


def test_record_image_output_stores_stage_results(db: SyncDatabase) -> None:
    """Any given columns are stored; an unknown image gives None."""
    view = _upload(db, _user(db))
    assert view.image is not None
    got = db.write(store.record_image_output, image_id=view.image.id, has_thumbnail=True,
                   meta={"exif": {"Model": "X"}}, width=640, height=480)
    assert got is not None
    image = _image(db, view.image.id)
    assert image is not None
    assert (image.has_thumbnail, image.has_preview, image.meta, image.width, image.height) == (
        True, False, {"exif": {"Model": "X"}}, 640, 480)
    assert db.write(store.record_image_output, image_id=new_id(), has_preview=True) is None


# -- reading jobs --------------------------------------------------------------------------------

def test_get_job_is_scoped_to_its_owner_and_carries_its_image(db: SyncDatabase) -> None:
    """The owner and admins see the job (with its image); others and unknown ids get None."""
    owner, other = _user(db), _user(db)
    view = _upload(db, owner)
    assert view.image is not None
    found = db.read(store.get_job, job_id=view.job.id, user_id=owner)
    assert found is not None and found.image is not None and found.image.id == view.image.id
    assert db.read(store.get_job, job_id=view.job.id, user_id=None) is not None
    assert db.read(store.get_job, job_id=view.job.id, user_id=other) is None
    assert db.read(store.get_job, job_id=new_id(), user_id=None) is None
    with pytest.raises(AttributeError):
        found.job = view.job  # type: ignore[misc]  # JobView is frozen


def test_queue_position_orders_by_priority_then_arrival_within_the_family(
        db: SyncDatabase) -> None:
    """Eligible queued jobs of the family ahead of it: higher priorities first, then earlier
    ids. Delayed and non-queued jobs have no position and take none; other families and a
    job whose run_at has passed count as usual."""
    user_id, base = _user(db), _queue()
    first = _job(db, user_id, queue=base)
    second = _job(db, user_id, queue=base)
    low = _job(db, user_id, queue=f"{base}.low", priority="low")
    high = _job(db, user_id, queue=f"{base}.high", priority="high")
    delayed = _job(db, user_id, queue=base, run_at=utcnow() + timedelta(hours=1))
    due = _job(db, user_id, queue=base, run_at=_ago(minutes=1))
    running = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    _job(db, user_id, queue=_queue(), priority="high")  # another family

    def position(job: Job) -> int | None:
        stored = _get(db, job.id)
        return db.read(lambda s: store.queue_position(s, job=stored))

    assert [position(j) for j in (high, first, second, due, low)] == [0, 1, 2, 3, 4]
    assert position(delayed) is None and position(running) is None


def test_queue_position_takes_users_in_turn_within_a_priority(db: SyncDatabase) -> None:
    """Round-robin across users (server.infra.fair): another user's single job waits for one
    job of each user ahead of it in line, not for their whole backlog; the line lists
    jobs in that order too."""
    heavy, light, base = _user(db), _user(db), _queue()
    backlog = [_job(db, heavy, queue=base) for _ in range(4)]
    single = _job(db, light, queue=base)
    urgent = _job(db, light, queue=f"{base}.high", priority="high")

    def position(job: Job) -> int | None:
        stored = _get(db, job.id)
        return db.read(lambda s: store.queue_position(s, job=stored))

    assert position(urgent) == 0
    # Turn 1: heavy's first, then light's single; then heavy's other jobs.
    assert [position(j) for j in (backlog[0], single, *backlog[1:])] == [1, 2, 3, 4, 5]
    line = db.write(store.advance_line, queue=base, limit=3)
    assert [(view.job.id, n) for view, n in line] == [
        (urgent.id, 0), (backlog[0].id, 1), (single.id, 2)]


def test_get_job_positioned_adds_the_position(db: SyncDatabase) -> None:
    """A waiting job gets its position, a running one None; scoped like get_job."""
    owner, base = _user(db), _queue()
    ahead, mine = _job(db, owner, queue=base), _job(db, owner, queue=base)
    found = db.read(store.get_job_positioned, job_id=mine.id, user_id=owner)
    assert found is not None and found[0].job.id == mine.id and found[1] == 1
    db.write(store.begin_attempt, job_id=ahead.id)
    assert db.read(store.get_job_positioned, job_id=mine.id, user_id=owner)[1] == 0  # type: ignore[index]
    running = db.read(store.get_job_positioned, job_id=ahead.id, user_id=None)
    assert running is not None and running[1] is None
    assert db.read(store.get_job_positioned, job_id=mine.id, user_id=_user(db)) is None


def test_snapshot_jobs_lists_unfinished_and_recently_finished_oldest_first(
        db: SyncDatabase) -> None:
    """Unfinished jobs and those finished since the cutoff, oldest first with positions;
    older finished jobs and other users' jobs are left out; ``limit`` keeps the newest."""
    user_id, base = _user(db), _queue()
    old_done = _job(db, user_id, queue=base)
    _finish(db, old_done.id, finished_at=_ago(hours=1))
    recent_done = _job(db, user_id, queue=base)
    _finish(db, recent_done.id)
    running = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    waiting = [_job(db, user_id, queue=base) for _ in range(2)]
    _job(db, _user(db), queue=base)  # someone else's: users take turns, so it goes second

    got = db.read(store.snapshot_jobs, user_id=user_id, finished_since=_ago(minutes=10))
    assert [(view.job.id, position) for view, position in got] == [
        (recent_done.id, None), (running.id, None), (waiting[0].id, 0), (waiting[1].id, 2)]
    newest = db.read(store.snapshot_jobs, user_id=user_id, finished_since=_ago(minutes=10),
                     limit=2)
    assert [view.job.id for view, _ in newest] == [waiting[0].id, waiting[1].id]


def test_advance_line_lists_the_front_of_the_line_and_bumps_seq(db: SyncDatabase) -> None:
    """The first ``limit`` eligible waiting jobs of the family in start order, each with its
    position; only their seq grows (stored)."""
    user_id, base = _user(db), _queue()
    normal = _job(db, user_id, queue=base)
    low = _job(db, user_id, queue=f"{base}.low", priority="low")
    high = _job(db, user_id, queue=f"{base}.high", priority="high")
    later = _job(db, user_id, queue=base)
    _job(db, user_id, queue=base, run_at=utcnow() + timedelta(hours=1))  # delayed: no place
    running = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)

    line = db.write(store.advance_line, queue=f"{base}.low", limit=3)
    assert [(view.job.id, position) for view, position in line] == [
        (high.id, 0), (normal.id, 1), (later.id, 2)]
    assert [_get(db, j.id).seq for j in (high, normal, later, low)] == [2, 2, 2, 1]
    everyone = db.write(store.advance_line, queue=base, limit=10)
    assert [view.job.id for view, _ in everyone] == [high.id, normal.id, later.id, low.id]


def test_job_timeline_lists_the_jobs_own_changes_in_seq_order(db: SyncDatabase) -> None:
    """Every stored change appears once, named by the event that announced it."""
    user_id = _user(db)
    job = _job(db, user_id)
    other = _job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10)
    db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, stage="done",
             progress=100)
    assert _names(db, job.id) == [(1, "job:queued", "queued"), (2, "job:active", "active"),
                                  (3, "job:progress", "active"),
                                  (4, "job:completed", "completed")]
    last = db.read(store.job_timeline, job_id=job.id)[-1]
    assert (last.stage, last.progress, last.error) == ("done", 100, None)
    assert _names(db, other.id) == [(1, "job:queued", "queued")]
    assert db.read(store.job_timeline, job_id=new_id()) == []


def test_list_jobs_filters_and_pages_newest_first(db: SyncDatabase) -> None:
    """By owner (or everyone's for user_id None), state, ``delayed``, type and ``before``."""
    user_id, other = _user(db), _user(db)
    kind = f"t.{secrets.token_hex(3)}"
    plain = [_job(db, user_id, task_type=kind) for _ in range(3)]
    delayed = _job(db, user_id, task_type=kind, run_at=utcnow() + timedelta(hours=1))
    done = _job(db, user_id, task_type=kind)
    _finish(db, done.id)
    theirs = _job(db, other, task_type=kind)
    mine = sorted([j.id for j in (*plain, delayed, done)], reverse=True)

    def ids(**filters: Any) -> list[str]:
        return [view.job.id for view in db.read(store.list_jobs, **filters)]

    assert ids(user_id=user_id, limit=10) == mine
    assert ids(user_id=user_id, limit=2) == mine[:2]
    assert ids(user_id=user_id, limit=10, before=mine[1]) == mine[2:]
    assert ids(user_id=user_id, limit=10, state="completed") == [done.id]
    assert ids(user_id=user_id, limit=10, state="delayed") == [delayed.id]
    assert ids(user_id=user_id, limit=10, state="queued") == sorted(
        [j.id for j in (*plain, delayed)], reverse=True)
    assert ids(user_id=user_id, limit=10, task_type="t.other") == []
    assert ids(user_id=None, limit=10, task_type=kind) == [theirs.id, *mine]


# -- state changes -------------------------------------------------------------------------------

def test_transition_moves_the_job_through_a_retry_to_completion(db: SyncDatabase) -> None:
    """Each change is stored with a higher seq and an event; started_at is kept across
    attempts, an error is cleared when it runs again, finished_at set when it ends; the
    image's status follows."""
    view = _upload(db, _user(db))
    assert view.image is not None
    job_id, image_id = view.job.id, view.image.id
    active = db.write(store.transition, job_id=job_id, state=JobState.ACTIVE, stage="decoding",
                      progress=10, attempt=1)
    assert active is not None and active.image is not None and active.image.status == "processing"
    job = _get(db, job_id)
    assert (job.state, job.stage, job.progress, job.attempt, job.seq) == (
        "active", "decoding", 10, 1, 2)
    assert job.started_at is not None and job.finished_at is None
    started = as_utc(job.started_at)

    retry_at = (utcnow() + timedelta(seconds=30)).replace(microsecond=0)
    db.write(store.transition, job_id=job_id, state=JobState.RETRYING, error=ERROR,
             traceback="Traceback ...", run_at=retry_at)
    job = _get(db, job_id)
    assert (job.state, job.error, job.traceback, job.seq) == (
        "retrying", ERROR, "Traceback ...", 3)
    assert job.run_at is not None and as_utc(job.run_at) == retry_at
    assert _image(db, image_id).status == "processing"  # type: ignore[union-attr]

    db.write(store.transition, job_id=job_id, state=JobState.ACTIVE, attempt=2)
    job = _get(db, job_id)
    assert job.error is None and job.attempt == 2
    assert job.started_at is not None and as_utc(job.started_at) == started

    db.write(store.transition, job_id=job_id, state=JobState.COMPLETED, stage="done",
             progress=100, result={"thumbnail": True})
    job = _get(db, job_id)
    assert (job.state, job.result, job.seq) == ("completed", {"thumbnail": True}, 5)
    assert job.finished_at is not None
    assert _image(db, image_id).status == "ready"  # type: ignore[union-attr]
    assert [name for _, name, _ in _names(db, job_id)] == [
        "job:queued", "job:active", "job:retrying", "job:active", "job:completed"]


@pytest.mark.parametrize(("path", "refused"), [
    ((), JobState.COMPLETED),
    ((JobState.ACTIVE, JobState.COMPLETED), JobState.ACTIVE),
    ((JobState.CANCELLED,), JobState.QUEUED),
    ((JobState.ACTIVE, JobState.FAILED), JobState.CANCELLED),
])
def test_transition_refuses_what_the_state_machine_forbids(
        db: SyncDatabase, path: tuple[JobState, ...], refused: JobState) -> None:
    """TransitionError, and nothing of the refused change is stored."""
    job = _job(db, _user(db))
    for state in path:
        db.write(store.transition, job_id=job.id, state=state)
    before = _get(db, job.id)
    with pytest.raises(TransitionError):
        db.write(store.transition, job_id=job.id, state=refused, progress=99)
    after = _get(db, job.id)
    assert (after.state, after.seq, after.progress) == (before.state, before.seq,
                                                        before.progress)
    assert len(_names(db, job.id)) == len(path) + 1


def test_transition_of_an_unknown_job_is_none(db: SyncDatabase) -> None:
    """A job that no longer exists: None, no error."""
    assert db.write(store.transition, job_id=new_id(), state=JobState.ACTIVE) is None


def test_transition_refuses_a_report_on_a_past_attempt(db: SyncDatabase) -> None:
    """of_attempt must be the current attempt; a stale one raises and changes nothing."""
    job = _job(db, _user(db))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    db.write(store.begin_attempt, job_id=job.id)
    with pytest.raises(TransitionError, match="attempt 1 is over"):
        db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, of_attempt=1)
    assert _get(db, job.id).state == "active"
    done = db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, of_attempt=2)
    assert done is not None and _get(db, job.id).state == "completed"


def test_transition_with_resend_gives_the_job_a_new_unsent_message(db: SyncDatabase) -> None:
    """resend: a new message id, marked unsent, so the sweeper sends it."""
    job = _job(db, _user(db))
    db.write(store.mark_enqueued, job_id=job.id, message_id=str(job.message_id))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING, resend=True)
    after = _get(db, job.id)
    assert after.message_id != job.message_id and uuid.UUID(str(after.message_id))
    assert after.enqueued is False
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    assert _get(db, job.id).message_id == after.message_id  # no resend: the same message


def test_transition_back_to_queued_starts_afresh(db: SyncDatabase) -> None:
    """failed → queued (a dead-letter retry) clears the run: attempts, progress, stage,
    error, traceback, result and times."""
    job = _job(db, _user(db), run_at=_ago(minutes=5))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.report_progress, job_id=job.id, stage="preview", progress=65)
    db.write(store.transition, job_id=job.id, state=JobState.FAILED, error=ERROR,
             traceback="tb", result={"partial": True})
    db.write(store.transition, job_id=job.id, state=JobState.QUEUED)
    after = _get(db, job.id)
    assert (after.state, after.attempt, after.progress, after.stage) == ("queued", 0, 0,
                                                                          "stored")
    assert (after.error, after.traceback, after.result) == (None, None, None)
    assert (after.started_at, after.finished_at, after.run_at) == (None, None, None)
    assert after.seq == 5


@pytest.mark.parametrize(("path", "status"), [
    ((), "queued"),
    ((JobState.ACTIVE,), "processing"),
    ((JobState.ACTIVE, JobState.RETRYING), "processing"),
    ((JobState.ACTIVE, JobState.COMPLETED), "ready"),
    ((JobState.ACTIVE, JobState.FAILED), "failed"),
    ((JobState.CANCELLED,), "failed"),
    ((JobState.FAILED, JobState.QUEUED), "queued"),
])
def test_the_image_status_follows_its_job(db: SyncDatabase, path: tuple[JobState, ...],
                                         status: str) -> None:
    """Each job state maps to the image status the contract names."""
    view = _upload(db, _user(db))
    assert view.image is not None
    for state in path:
        db.write(store.transition, job_id=view.job.id, state=state)
    assert _image(db, view.image.id).status == status  # type: ignore[union-attr]


def test_cancel_job_cancels_for_its_owner_and_admins_only(db: SyncDatabase) -> None:
    """Another user gets None and nothing changes; the owner's cancel stores the state,
    the error and a failed image without renditions; a finished job raises."""
    owner, other = _user(db), _user(db)
    view = _upload(db, owner)
    assert view.image is not None
    db.write(store.record_image_output, image_id=view.image.id, has_thumbnail=True,
             has_preview=True)
    assert db.write(store.cancel_job, job_id=view.job.id, user_id=other) is None
    assert _get(db, view.job.id).state == "queued"

    cancelled = db.write(store.cancel_job, job_id=view.job.id, user_id=owner)
    assert cancelled is not None and cancelled.job.state == "cancelled"
    job = _get(db, view.job.id)
    assert (job.state, job.stage) == ("cancelled", "cancelled")
    assert job.error == {"type": "Cancelled", "message": "cancelled on request"}
    assert job.finished_at is not None
    image = _image(db, view.image.id)
    assert image is not None
    assert (image.status, image.has_thumbnail, image.has_preview) == ("failed", False, False)
    with pytest.raises(TransitionError):
        db.write(store.cancel_job, job_id=view.job.id, user_id=owner)

    plain = _job(db, owner)
    db.write(store.begin_attempt, job_id=plain.id)
    by_admin = db.write(store.cancel_job, job_id=plain.id, user_id=None)
    assert by_admin is not None and by_admin.image is None
    assert _get(db, plain.id).state == "cancelled"
    assert db.write(store.cancel_job, job_id=new_id(), user_id=None) is None


def test_begin_attempt_starts_the_next_attempt(db: SyncDatabase) -> None:
    """Active, attempt + 1, progress and stage reset; the job's own message (or none named)
    may run it."""
    job = _job(db, _user(db))
    view = db.write(store.begin_attempt, job_id=job.id, message_id=job.message_id)
    assert view is not None
    after = _get(db, job.id)
    assert (after.state, after.attempt, after.stage, after.progress) == ("active", 1, "stored", 0)
    db.write(store.report_progress, job_id=job.id, stage="preview", progress=65)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    db.write(store.begin_attempt, job_id=job.id)
    after = _get(db, job.id)
    assert (after.state, after.attempt, after.stage, after.progress) == ("active", 2, "stored", 0)
    assert db.write(store.begin_attempt, job_id=new_id()) is None


def test_begin_attempt_skips_a_superseded_message(db: SyncDatabase) -> None:
    """A copy of an older message raises TransitionError and leaves the job waiting; a job
    without a message id takes any."""
    job = _job(db, _user(db))
    with pytest.raises(TransitionError, match="superseded"):
        db.write(store.begin_attempt, job_id=job.id, message_id=store.new_message_id())
    assert _get(db, job.id).state == "queued"
    _set(db, Job, job.id, message_id=None)
    assert db.write(store.begin_attempt, job_id=job.id, message_id=store.new_message_id())


def test_begin_attempt_refuses_an_ended_job(db: SyncDatabase) -> None:
    """A cancelled (or completed) job may not run: TransitionError."""
    job = _job(db, _user(db))
    db.write(store.cancel_job, job_id=job.id, user_id=None)
    with pytest.raises(TransitionError):
        db.write(store.begin_attempt, job_id=job.id)
    assert _get(db, job.id).attempt == 0


def test_begin_attempt_counts_every_delivery_against_max_attempts(db: SyncDatabase) -> None:
    """Once all attempts are used: AttemptsExhausted, saying so when the last run was lost
    (the job is still active: its worker died)."""
    job = _job(db, _user(db), max_attempts=2)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.begin_attempt, job_id=job.id)  # redelivered after a worker died
    assert _get(db, job.id).attempt == 2
    with pytest.raises(AttemptsExhausted, match=r"after 2 attempts \(its worker stopped"):
        db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    with pytest.raises(AttemptsExhausted) as exc:
        db.write(store.begin_attempt, job_id=job.id)
    assert "worker" not in str(exc.value)
    assert _get(db, job.id).attempt == 2


def test_report_progress_records_steps_of_an_active_job(db: SyncDatabase) -> None:
    """Stage and progress stored with a seq and a job:progress event; progress never goes
    back; outputs land on the job's image (or the one named) in the same write."""
    view = _upload(db, _user(db))
    assert view.image is not None
    db.write(store.begin_attempt, job_id=view.job.id)
    step = db.write(store.report_progress, job_id=view.job.id, stage="thumbnail", progress=40,
                    outputs={"width": 10, "height": 8})
    assert step is not None and step.job.progress == 40
    job = _get(db, view.job.id)
    assert (job.stage, job.progress, job.seq) == ("thumbnail", 40, 3)
    image = _image(db, view.image.id)
    assert image is not None and (image.width, image.height) == (10, 8)

    db.write(store.report_progress, job_id=view.job.id, stage="preview", progress=20,
             image_id=view.image.id, outputs={"has_thumbnail": True})
    job = _get(db, view.job.id)
    assert (job.stage, job.progress) == ("preview", 40)
    assert _image(db, view.image.id).has_thumbnail is True  # type: ignore[union-attr]
    assert _names(db, view.job.id)[-2:] == [(3, "job:progress", "active"),
                                           (4, "job:progress", "active")]


def test_report_progress_ignores_jobs_that_are_not_running(db: SyncDatabase) -> None:
    """Queued, cancelled or unknown: None, and nothing stored."""
    job = _job(db, _user(db))
    assert db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10) is None
    db.write(store.cancel_job, job_id=job.id, user_id=None)
    assert db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10) is None
    after = _get(db, job.id)
    assert (after.progress, after.seq) == (0, 2)
    assert db.write(store.report_progress, job_id=new_id(), stage="x", progress=1) is None


def test_report_progress_raises_when_the_image_is_gone(db: SyncDatabase) -> None:
    """Outputs for a deleted image: ImageDeleted, and the step is not stored either."""
    view = _upload(db, _user(db))
    assert view.image is not None
    db.write(store.begin_attempt, job_id=view.job.id)
    db.write(store.delete_image, image_id=view.image.id, user_id=None)
    with pytest.raises(ImageDeleted):
        db.write(store.report_progress, job_id=view.job.id, stage="preview", progress=65,
                 outputs={"has_thumbnail": True})
    assert _get(db, view.job.id).progress == 0
    plain = _job(db, _user(db))
    db.write(store.begin_attempt, job_id=plain.id)
    with pytest.raises(ImageDeleted):  # no image at all
        db.write(store.report_progress, job_id=plain.id, stage="x", progress=5,
                 outputs={"width": 1})
    ok = db.write(store.report_progress, job_id=plain.id, stage="x", progress=5)
    assert ok is not None and ok.job.progress == 5


# -- dead letters --------------------------------------------------------------------------------

def _dead(db: SyncDatabase, user_id: str, *, task_type: str = "t.echo",
          error: dict[str, Any] | None = None) -> Job:
    job = _job(db, user_id, task_type=task_type)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, error=error or ERROR, traceback="tb")
    return job


def test_dead_letter_fails_the_job_and_records_the_final_error(db: SyncDatabase) -> None:
    """The job is failed with the error; its entry holds the error, traceback, attempts and
    payload; ``attempts`` overrides the job's count."""
    user_id = _user(db)
    job = _job(db, user_id, payload={"k": "v"})
    db.write(store.begin_attempt, job_id=job.id)
    view = db.write(store.dead_letter, job_id=job.id, error=ERROR, traceback="tb1", attempts=3)
    assert view is not None and view.job.state == "failed"
    after = _get(db, job.id)
    assert (after.state, after.stage, after.error, after.traceback, after.attempt) == (
        "failed", "failed", ERROR, "tb1", 3)
    entry = db.read(lambda s: s.get(DeadLetter, job.id))
    assert entry is not None
    assert (entry.user_id, entry.type, entry.payload, entry.error_type, entry.error_message,
            entry.traceback, entry.attempts) == (
        user_id, "t.echo", {"k": "v"}, "ValueError", "bad pixels", "tb1", 3)
    assert entry.failed_at is not None


def test_dead_letter_again_updates_the_one_entry(db: SyncDatabase) -> None:
    """A job failed, queued again and failed anew keeps one entry, with the newest error."""
    job = _dead(db, _user(db))
    db.write(store.transition, job_id=job.id, state=JobState.QUEUED)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, error={"type": "OSError", "message": "disk"},
             traceback=None)
    entries = db.read(lambda s: list(s.scalars(select(DeadLetter)
                                               .where(DeadLetter.job_id == job.id))))
    assert [(e.error_type, e.error_message, e.traceback, e.attempts) for e in entries] == [
        ("OSError", "disk", None, 1)]


def test_dead_letter_of_an_unknown_or_stale_job_records_nothing(db: SyncDatabase) -> None:
    """Unknown job: None. A report on a past attempt: TransitionError. No entry either way."""
    missing = new_id()
    assert db.write(store.dead_letter, job_id=missing, error=ERROR, traceback=None) is None
    assert db.read(lambda s: s.get(DeadLetter, missing)) is None
    job = _job(db, _user(db))
    db.write(store.begin_attempt, job_id=job.id)
    with pytest.raises(TransitionError):
        db.write(store.dead_letter, job_id=job.id, error=ERROR, traceback=None, of_attempt=7)
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is None
    assert _get(db, job.id).state == "active"


def test_list_dead_letters_pages_and_filters(db: SyncDatabase) -> None:
    """Newest job first with its view; ``before`` pages; type and error text (either field,
    any case) filter."""
    user_id = _user(db)
    kind, other_kind = f"t.{secrets.token_hex(3)}", f"t.{secrets.token_hex(3)}"
    jobs = [_dead(db, user_id, task_type=kind) for _ in range(3)]
    odd = _dead(db, user_id, task_type=other_kind,
                error={"type": "Timeout" + kind, "message": "Took TOO long"})
    mine = sorted([j.id for j in jobs], reverse=True)

    def ids(**filters: Any) -> list[str]:
        return [entry.job_id for entry, _ in db.read(store.list_dead_letters, **filters)]

    assert ids(limit=10, task_type=kind) == mine
    assert ids(limit=2, task_type=kind) == mine[:2]
    assert ids(limit=10, task_type=kind, before=mine[0]) == mine[1:]
    assert ids(limit=10, error="too LONG") == [odd.id]
    assert ids(limit=10, error=("timeout" + kind).upper()) == [odd.id]
    assert ids(limit=10, task_type=kind, error="took") == []
    entry, view = db.read(store.list_dead_letters, limit=1, task_type=other_kind)[0]
    assert entry.job_id == view.job.id == odd.id and view.job.state == "failed"


def test_dead_letter_count_ids_delete_and_clear(empty: SyncDatabase) -> None:
    """Counted and listed (by job id) across all users; deleted one by one (False when gone)
    or all at once (how many)."""
    db = empty
    assert (db.read(store.dead_letter_count), db.read(store.dead_letter_ids)) == (0, [])
    jobs = [_dead(db, _user(db)) for _ in range(3)]
    ids = sorted(j.id for j in jobs)
    assert db.read(store.dead_letter_count) == 3
    assert db.read(store.dead_letter_ids) == ids
    assert db.write(store.delete_dead_letter, job_id=ids[0]) is True
    assert db.write(store.delete_dead_letter, job_id=ids[0]) is False
    assert db.read(store.dead_letter_ids) == ids[1:]
    assert _get(db, ids[0]).state == "failed"  # the job itself stays
    assert db.write(store.clear_dead_letters) == 2
    assert (db.read(store.dead_letter_count), db.write(store.clear_dead_letters)) == (0, 0)


def test_requeue_failed_queues_a_dead_letter_again(db: SyncDatabase) -> None:
    """Fresh attempts under the same id and a new unsent message; the entry goes; ``undo``
    holds what dead_letter needs to put it back."""
    user_id = _user(db)
    job = _dead(db, user_id)
    undo, view = db.write(store.requeue_failed, job_id=job.id, user_id=user_id)
    assert undo == {"error": ERROR, "traceback": "tb", "attempts": 1}
    assert view.job.id == job.id
    after = _get(db, job.id)
    assert (after.state, after.attempt, after.error) == ("queued", 0, None)
    assert after.message_id != job.message_id and after.enqueued is False
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is None

    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.dead_letter, job_id=job.id, **undo)
    entry = db.read(lambda s: s.get(DeadLetter, job.id))
    assert entry is not None
    assert (entry.error_type, entry.traceback, entry.attempts) == ("ValueError", "tb", 1)


def test_requeue_failed_refuses_others_and_jobs_not_dead_lettered(db: SyncDatabase) -> None:
    """Another user's job, an unknown job, or one not in the dead-letter queue: None and
    nothing changes."""
    owner = _user(db)
    job = _dead(db, owner)
    assert db.write(store.requeue_failed, job_id=job.id, user_id=_user(db)) is None
    assert db.read(lambda s: s.get(DeadLetter, job.id)) is not None
    assert db.write(store.requeue_failed, job_id=new_id()) is None
    db.write(store.delete_dead_letter, job_id=job.id)
    assert db.write(store.requeue_failed, job_id=job.id) is None
    assert _get(db, job.id).state == "failed"


def test_requeue_failed_outside_the_dead_letter_queue(db: SyncDatabase) -> None:
    """dead_letters_only=False: a failed job without an entry is requeued; ``undo`` comes
    from the job (or a generic error when it has none). A job that did not fail raises."""
    user_id = _user(db)
    job = _dead(db, user_id)
    db.write(store.delete_dead_letter, job_id=job.id)
    undo, _ = db.write(store.requeue_failed, job_id=job.id, dead_letters_only=False)
    assert undo == {"error": ERROR, "traceback": "tb", "attempts": 1}
    assert _get(db, job.id).state == "queued"

    bare = _job(db, user_id)
    db.write(store.transition, job_id=bare.id, state=JobState.FAILED)
    undo, _ = db.write(store.requeue_failed, job_id=bare.id, dead_letters_only=False)
    assert undo == {"error": {"type": "Failed", "message": "failed"}, "traceback": None,
                    "attempts": 0}

    done = _job(db, user_id)
    _finish(db, done.id)
    with pytest.raises(TransitionError):
        db.write(store.requeue_failed, job_id=done.id, dead_letters_only=False)
    assert _get(db, done.id).state == "completed"


# -- webhooks ------------------------------------------------------------------------------------

def test_webhooks_are_per_user_and_capped(db: SyncDatabase) -> None:
    """Listed in creation order per user; the 21st is refused (None); only the owner deletes."""
    owner, other = _user(db), _user(db)

    def many(s: Session) -> list[Webhook | None]:
        return [store.create_webhook(s, user_id=owner, url=f"https://h.example/{i}")
                for i in range(store.MAX_WEBHOOKS_PER_USER)]

    made = db.write(many)
    assert all(made)
    assert db.write(store.create_webhook, user_id=owner, url="https://h.example/x") is None
    theirs = db.write(store.create_webhook, user_id=other, url="https://o.example/")
    assert theirs is not None
    listed = db.read(store.list_webhooks, user_id=owner)
    assert [h.id for h in listed] == sorted(h.id for h in made if h)
    assert {h.url for h in listed} == {f"https://h.example/{i}" for i in range(20)}

    first = listed[0].id
    assert db.write(store.delete_webhook, user_id=other, webhook_id=first) is False
    assert db.write(store.delete_webhook, user_id=owner, webhook_id=first) is True
    assert db.write(store.delete_webhook, user_id=owner, webhook_id=first) is False
    assert len(db.read(store.list_webhooks, user_id=owner)) == 19
    assert db.write(store.create_webhook, user_id=owner, url="https://h.example/x") is not None
    assert [h.id for h in db.read(store.list_webhooks, user_id=other)] == [theirs.id]


def test_create_webhook_deliveries_queues_one_job_per_url(db: SyncDatabase) -> None:
    """One queued webhook.deliver job per registered URL, carrying event and body; none for
    a delivery job itself, none for a user without webhooks."""
    user_id = _user(db)
    urls = ["https://a.example/", "https://b.example/"]
    for url in urls:
        db.write(store.create_webhook, user_id=user_id, url=url)
    job = _job(db, user_id)
    body = {"job": {"id": job.id}}
    made = db.write(lambda s: store.create_webhook_deliveries(
        s, job=job, event="job:completed", body=body))
    assert len(made) == 2
    stored = [_get(db, view.job.id) for view in made]
    assert sorted(d.payload["url"] for d in stored) == urls
    for delivery in stored:
        assert (delivery.type, delivery.queue, delivery.state, delivery.max_attempts,
                delivery.user_id) == (store.WEBHOOK_TASK, store.WEBHOOK_QUEUE, "queued", 5,
                                      user_id)
        assert delivery.payload["event"] == "job:completed" and delivery.payload["body"] == body
    assert db.write(lambda s: store.create_webhook_deliveries(
        s, job=stored[0], event="job:failed", body={})) == []
    lonely = _job(db, _user(db))
    assert db.write(lambda s: store.create_webhook_deliveries(
        s, job=lonely, event="job:completed", body={})) == []


def _hook(view: store.JobView) -> tuple[str, dict[str, Any]]:
    return f"job:{view.job.state}", {"id": view.job.id, "state": view.job.state}


def _deliveries(db: SyncDatabase, user_id: str) -> list[Job]:
    return [v.job for v in db.read(store.list_jobs, user_id=user_id, limit=100,
                                   task_type=store.WEBHOOK_TASK)]


def test_end_with_deliveries_queues_deliveries_when_the_change_ends_the_job(
        db: SyncDatabase) -> None:
    """A final change (transition, dead_letter, cancel_job) and its deliveries are stored
    together; the body is made from the ended job."""
    user_id = _user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    db.write(store.create_webhook, user_id=user_id, url="https://b.example/")
    job = _job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=_hook,
                          job_id=job.id, state=JobState.COMPLETED)
    assert view is not None and view.job.state == "completed" and len(made) == 2
    assert _get(db, job.id).state == "completed"
    stored = _deliveries(db, user_id)
    assert sorted(d.id for d in stored) == sorted(v.job.id for v in made)
    assert {d.payload["event"] for d in stored} == {"job:completed"}
    assert {d.payload["body"]["id"] for d in stored} == {job.id}
    # The type's own attempts (they were RETRY_MAX_ATTEMPTS, the caller's, before).
    assert {d.max_attempts for d in stored} == {store.WEBHOOK_MAX_ATTEMPTS}

    failing = _job(db, user_id)
    db.write(store.begin_attempt, job_id=failing.id)
    _, made = db.write(store.end_with_deliveries, change=store.dead_letter, webhook=_hook,
                       job_id=failing.id, error=ERROR, traceback=None)
    assert len(made) == 2 and {_get(db, v.job.id).payload["event"] for v in made} == {
        "job:failed"}
    cancelled = _job(db, user_id)
    _, made = db.write(store.end_with_deliveries, change=store.cancel_job, webhook=_hook,
                       job_id=cancelled.id, user_id=user_id)
    assert len(made) == 2 and _get(db, cancelled.id).state == "cancelled"
    assert len(_deliveries(db, user_id)) == 6


def test_end_with_deliveries_drops_none_however_many_are_unfinished(db: SyncDatabase) -> None:
    """Every final state is POSTed: an owner with many deliveries unfinished (waiting out
    a backoff, say) still gets one per URL for each job that ends."""
    user_id = _user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    for _ in range(4):
        _job(db, user_id, queue=store.WEBHOOK_QUEUE, task_type=store.WEBHOOK_TASK)
    job = _job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    _, made = db.write(store.end_with_deliveries, change=store.transition, webhook=_hook,
                       job_id=job.id, state=JobState.COMPLETED)
    assert len(made) == 1
    assert made[0].job.payload["body"]["id"] == job.id


def test_end_with_deliveries_queues_nothing_for_a_change_that_does_not_end_the_job(
        db: SyncDatabase) -> None:
    """Non-final change or unknown job: no deliveries, and the webhook body is never made."""
    user_id = _user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    job = _job(db, user_id)

    def never(view: store.JobView) -> tuple[str, dict[str, Any]]:
        raise AssertionError("no body for a job that did not end")

    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=never,
                          job_id=job.id, state=JobState.ACTIVE)
    assert view is not None and view.job.state == "active" and made == []
    assert _get(db, job.id).state == "active"
    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=never,
                          job_id=new_id(), state=JobState.COMPLETED)
    assert (view, made) == (None, [])
    assert _deliveries(db, user_id) == []


def test_end_with_deliveries_is_one_transaction(db: SyncDatabase) -> None:
    """If making the deliveries fails, the job does not end either."""
    user_id = _user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    job = _job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)

    def broken(view: store.JobView) -> tuple[str, dict[str, Any]]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write(store.end_with_deliveries, change=store.transition, webhook=broken,
                 job_id=job.id, state=JobState.COMPLETED)
    assert _get(db, job.id).state == "active"
    assert _deliveries(db, user_id) == []


# -- batches -------------------------------------------------------------------------------------

def test_batch_summary_counts_its_jobs(db: SyncDatabase) -> None:
    """total/done/failed (failed or cancelled), progress the mean with ended jobs at 100;
    scoped to the owner unless user_id is None."""
    owner = _user(db)
    batch = db.write(store.create_batch, user_id=owner, files=5)
    views = [_upload(db, owner, batch_id=batch.id) for _ in range(5)]
    done, failed, cancelled, running, waiting = (v.job.id for v in views)
    _finish(db, done)
    _finish(db, failed, JobState.FAILED)
    db.write(store.cancel_job, job_id=cancelled, user_id=None)
    db.write(store.begin_attempt, job_id=running)
    db.write(store.report_progress, job_id=running, stage="preview", progress=65)

    summary = db.read(store.batch_summary, batch_id=batch.id, user_id=owner)
    assert summary is not None
    assert {k: summary[k] for k in ("id", "total", "files", "done", "failed", "progress")} == {
        "id": batch.id, "total": 5, "files": 5, "done": 1, "failed": 2,
        "progress": round((100 * 3 + 65 + 0) / 5)}
    assert str(summary["created_at"]).endswith("Z")
    assert db.read(store.batch_summary, batch_id=batch.id, user_id=None) is not None
    assert db.read(store.batch_summary, batch_id=batch.id, user_id=_user(db)) is None
    assert db.read(store.batch_summary, batch_id=new_id(), user_id=None) is None
    assert _get(db, waiting).progress == 0

    jobs = db.read(store.batch_jobs, batch_id=batch.id)
    assert [v.job.id for v in jobs] == sorted(v.job.id for v in views)
    assert all(v.image is not None and v.image.job_id == v.job.id for v in jobs)


def test_an_empty_batch_is_complete(db: SyncDatabase) -> None:
    """No jobs (all undone): total 0, progress 100; batch_jobs is empty."""
    owner = _user(db)
    batch = db.write(store.create_batch, user_id=owner, files=2)
    stored = db.read(lambda s: s.get(Batch, batch.id))
    assert stored is not None and (stored.user_id, stored.files) == (owner, 2)
    summary = db.read(store.batch_summary, batch_id=batch.id, user_id=owner)
    assert summary is not None
    assert (summary["total"], summary["done"], summary["failed"], summary["progress"]) == (
        0, 0, 0, 100)
    assert db.read(store.batch_jobs, batch_id=batch.id) == []


# -- schedules -----------------------------------------------------------------------------------

def _schedule_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_type": "t.echo", "payload": {"text": "tick"}, "cron": "*/5 * * * *",
        "timezone": "UTC", "priority": "normal", "max_attempts": 2,
        "next_run_at": utcnow() + timedelta(minutes=5)}
    fields.update(overrides)
    return fields


def test_schedules_are_stored_per_user_and_capped(db: SyncDatabase) -> None:
    """Every field stored; listed per user in creation order; the 101st is refused; only
    the owner deletes."""
    owner, other = _user(db), _user(db)
    first = db.write(store.create_schedule, user_id=owner,
                     **_schedule_fields(priority="high", cron="0 * * * *"))
    assert first is not None
    stored = db.read(store.list_schedules, user_id=owner)
    assert [(s.id, s.type, s.payload, s.cron, s.timezone, s.priority, s.max_attempts)
            for s in stored] == [(first.id, "t.echo", {"text": "tick"}, "0 * * * *", "UTC",
                                  "high", 2)]

    def fill(s: Session) -> list[Schedule | None]:
        return [store.create_schedule(s, user_id=owner, **_schedule_fields())
                for _ in range(store.MAX_SCHEDULES_PER_USER - 1)]

    assert all(db.write(fill))
    assert db.write(store.create_schedule, user_id=owner, **_schedule_fields()) is None
    assert db.write(store.create_schedule, user_id=other, **_schedule_fields()) is not None
    assert len(db.read(store.list_schedules, user_id=owner)) == 100

    assert db.write(store.delete_schedule, user_id=other, schedule_id=first.id) is False
    assert db.write(store.delete_schedule, user_id=owner, schedule_id=first.id) is True
    assert db.write(store.delete_schedule, user_id=owner, schedule_id=first.id) is False
    assert first.id not in {s.id for s in db.read(store.list_schedules, user_id=owner)}
    assert len(db.read(store.list_schedules, user_id=other)) == 1


def test_a_schedules_next_run_keeps_its_instant_whatever_the_time_zone(
        empty: SyncDatabase) -> None:
    """A next run given in the schedule's own time zone (as cron.next_run returns it) is the
    same instant when read back, and falls due at that instant, on every backend."""
    db = empty
    paris = datetime(2030, 1, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 08:00 UTC
    schedule = db.write(store.create_schedule, user_id=_user(db),
                        **_schedule_fields(timezone="Europe/Paris", next_run_at=paris))
    assert schedule is not None
    stored = db.read(store.list_schedules, user_id=schedule.user_id)[0]
    assert as_utc(stored.next_run_at) == paris
    due = [s.id for s in db.read(store.due_schedules,
                                 now=datetime(2030, 1, 1, 8, 30, tzinfo=UTC))]
    assert due == [schedule.id]
    later = datetime(2030, 1, 2, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=stored.next_run_at,
                    next_run_at=later, queue="default") is not None
    moved = db.read(store.list_schedules, user_id=schedule.user_id)[0]
    assert as_utc(moved.next_run_at) == later


def test_due_schedules_lists_the_due_ones_earliest_first(empty: SyncDatabase) -> None:
    """Those whose next run is at or before ``now``, earliest first, at most ``limit``."""
    db = empty
    user_id, now = _user(db), utcnow().replace(microsecond=0)
    made = {}
    for minutes in (-3, -10, 0, 5, -1):
        schedule = db.write(store.create_schedule, user_id=user_id,
                            **_schedule_fields(next_run_at=now + timedelta(minutes=minutes)))
        assert schedule is not None
        made[minutes] = schedule.id
    assert [s.id for s in db.read(store.due_schedules, now=now)] == [
        made[-10], made[-3], made[-1], made[0]]
    assert [s.id for s in db.read(store.due_schedules, now=now, limit=2)] == [
        made[-10], made[-3]]
    assert db.read(store.due_schedules, now=now - timedelta(hours=1)) == []


def test_fire_schedule_makes_the_job_and_moves_on_once(db: SyncDatabase) -> None:
    """One queued job with the schedule's type, payload, priority and attempts; the next
    run is stored; firing the same due time again makes nothing."""
    user_id = _user(db)
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    following = due + timedelta(minutes=5)
    schedule = db.write(store.create_schedule, user_id=user_id,
                        **_schedule_fields(priority="low", next_run_at=due))
    assert schedule is not None
    view = db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following, queue="default.low")
    assert view is not None
    job = _get(db, view.job.id)
    assert (job.user_id, job.type, job.queue, job.priority, job.max_attempts, job.payload,
            job.state) == (user_id, "t.echo", "default.low", "low", 2, {"text": "tick"},
                           "queued")
    moved = db.read(store.list_schedules, user_id=user_id)[0]
    assert as_utc(moved.next_run_at) == following
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following + timedelta(minutes=5), queue="default.low") is None
    assert as_utc(db.read(store.list_schedules, user_id=user_id)[0].next_run_at) == following
    assert _count(db, Job, Job.user_id == user_id) == 1
    assert db.write(store.fire_schedule, schedule_id=new_id(), due=due,
                    next_run_at=following, queue="default") is None


def test_fire_schedule_of_a_gone_type_moves_on_without_a_job(db: SyncDatabase) -> None:
    """queue None (the type is gone): None, no job, but the schedule moves on."""
    user_id = _user(db)
    due = utcnow().replace(microsecond=0)
    schedule = db.write(store.create_schedule, user_id=user_id,
                        **_schedule_fields(next_run_at=due))
    assert schedule is not None
    following = due + timedelta(hours=1)
    assert db.write(store.fire_schedule, schedule_id=schedule.id, due=due,
                    next_run_at=following, queue=None) is None
    assert as_utc(db.read(store.list_schedules, user_id=user_id)[0].next_run_at) == following
    assert _count(db, Job, Job.user_id == user_id) == 0


def test_fire_schedule_on_an_image(db: SyncDatabase) -> None:
    """The image named in the payload: busy → no job (moved on); idle → a job on it;
    deleted → the schedule is deleted too."""
    user_id = _user(db)
    upload = _upload(db, user_id)
    assert upload.image is not None
    image_id = upload.image.id
    due = utcnow().replace(microsecond=0)
    schedule = db.write(store.create_schedule, user_id=user_id, **_schedule_fields(
        task_type="image.reprocess", payload={"image_id": image_id}, next_run_at=due))
    assert schedule is not None

    def fire(at: datetime) -> store.JobView | None:
        return db.write(store.fire_schedule, schedule_id=schedule.id, due=at,
                        next_run_at=at + timedelta(minutes=1), queue="images",
                        image_field="image_id")

    assert fire(due) is None  # the upload's job is still waiting
    assert _count(db, Job, Job.user_id == user_id) == 1
    _finish(db, upload.job.id)
    view = fire(due + timedelta(minutes=1))
    assert view is not None and view.job.image_id == image_id
    assert _image(db, image_id).job_id == view.job.id  # type: ignore[union-attr]
    _finish(db, view.job.id)
    db.write(store.delete_image, image_id=image_id, user_id=None)
    assert fire(due + timedelta(minutes=2)) is None
    assert db.read(store.list_schedules, user_id=user_id) == []


# -- retention -----------------------------------------------------------------------------------

def test_purge_finished_deletes_what_ended_before_the_cutoff(empty: SyncDatabase) -> None:
    """Images whose current job ended before the cutoff go with all their jobs; other old
    ended jobs go; kept: dead letters, unfinished and recent work, batches with jobs;
    timelines of deleted jobs go too."""
    db = empty
    user_id = _user(db)
    old, cutoff = _ago(hours=2), _ago(hours=1)

    gone = _upload(db, user_id)  # image whose current job ended long ago...
    assert gone.image is not None
    _finish(db, gone.job.id, finished_at=old)
    latest = db.write(store.create_task_job, user_id=user_id, image_id=gone.image.id,
                      task_type="image.reprocess", queue="images", payload={},
                      max_attempts=1)
    assert latest is not None
    _finish(db, latest.job.id, finished_at=old)  # ...now its current job, also old
    fresh = _upload(db, user_id)  # ended recently
    _finish(db, fresh.job.id)
    dead = _upload(db, user_id)  # failed long ago, in the dead-letter queue
    _finish(db, dead.job.id, JobState.FAILED, finished_at=old)
    busy = _upload(db, user_id)  # an old job of it ended, its current one runs
    assert busy.image is not None
    _finish(db, busy.job.id, finished_at=old)
    rerun = db.write(store.create_task_job, user_id=user_id, image_id=busy.image.id,
                     task_type="image.reprocess", queue="images", payload={}, max_attempts=1)
    assert rerun is not None
    db.write(store.begin_attempt, job_id=rerun.job.id)
    old_plain, new_plain, waiting = _job(db, user_id), _job(db, user_id), _job(db, user_id)
    _finish(db, old_plain.id, JobState.CANCELLED, finished_at=old)
    _finish(db, new_plain.id)
    _set(db, Job, waiting.id, created_at=old, updated_at=old)
    empty_old = db.write(store.create_batch, user_id=user_id, files=1)
    used_old = db.write(store.create_batch, user_id=user_id, files=1)
    empty_new = db.write(store.create_batch, user_id=user_id, files=1)
    in_batch = _job(db, user_id, batch_id=used_old.id)
    for batch in (empty_old, used_old):
        _set(db, Batch, batch.id, created_at=old)

    purged = db.write(store.purge_finished, finished_before=cutoff)

    assert purged == [gone.image.id]
    assert _image(db, gone.image.id) is None
    alive = set(db.read(lambda s: list(s.scalars(select(Job.id)))))
    assert alive == {fresh.job.id, dead.job.id, rerun.job.id, new_plain.id, waiting.id,
                     in_batch.id}
    assert {i.id for i in db.read(lambda s: list(s.scalars(select(Image))))} == {
        v.image.id for v in (fresh, dead, busy) if v.image}
    assert set(db.read(lambda s: list(s.scalars(select(JobEventRecord.job_id))))) == alive
    assert set(db.read(lambda s: list(s.scalars(select(Batch.id))))) == {
        used_old.id, empty_new.id}
    assert db.read(store.dead_letter_ids) == [dead.job.id]
    assert db.write(store.purge_finished, finished_before=cutoff) == []


def test_existing_image_ids_answers_in_chunks(db: SyncDatabase) -> None:
    """Which ids still have a row, however many are asked about (more than one chunk)."""
    views = [_upload(db, _user(db)) for _ in range(2)]
    real = [v.image.id for v in views if v.image]
    asked = [new_id() for _ in range(1100)]
    asked[3], asked[1050] = real
    assert db.read(store.existing_image_ids, image_ids=asked) == set(real)
    assert db.read(store.existing_image_ids, image_ids=[]) == set()


# -- queues --------------------------------------------------------------------------------------

def test_queue_stats_counts_a_family(db: SyncDatabase) -> None:
    """Counts per state with delayed apart, the oldest eligible waiting job's age and the
    completions per minute over the last five minutes; other families are left out."""
    user_id, base = _user(db), _queue()
    blank = db.read(store.queue_stats, base=base)
    assert blank == {"counts": dict.fromkeys(store._COUNTED_STATES, 0),
                     "oldest_waiting_s": None, "throughput_per_min": 0.0}

    oldest = _job(db, user_id, queue=f"{base}.high", priority="high")
    _set(db, Job, oldest.id, created_at=_ago(seconds=120))
    _job(db, user_id, queue=base)
    _job(db, user_id, queue=f"{base}.low", run_at=utcnow() + timedelta(hours=1))
    _job(db, user_id, queue=base, run_at=_ago(seconds=30))  # due: waiting, not delayed
    for _ in range(3):
        done = _job(db, user_id, queue=base)
        _finish(db, done.id)
    long_done = _job(db, user_id, queue=base)
    _finish(db, long_done.id, finished_at=_ago(minutes=10))
    running = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    retrying = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=retrying.id)
    db.write(store.transition, job_id=retrying.id, state=JobState.RETRYING)
    _finish(db, _job(db, user_id, queue=base).id, JobState.FAILED)
    db.write(store.cancel_job, job_id=_job(db, user_id, queue=base).id, user_id=None)
    _job(db, user_id, queue=_queue())  # another family

    stats = db.read(store.queue_stats, base=base)
    assert stats["counts"] == {"queued": 3, "delayed": 1, "active": 1, "retrying": 1,
                               "completed": 4, "failed": 1, "cancelled": 1}
    assert 119 <= stats["oldest_waiting_s"] < 150
    assert stats["throughput_per_min"] == 0.6


def test_job_counts_by_type_covers_every_state_of_each_type(db: SyncDatabase) -> None:
    """Counts per (type, state) with delayed apart; the types asked for and the types found
    get every state, zeros included."""
    user_id = _user(db)
    kind, unused = f"t.{secrets.token_hex(3)}", f"t.{secrets.token_hex(3)}"
    _job(db, user_id, task_type=kind)
    _job(db, user_id, task_type=kind, run_at=utcnow() + timedelta(hours=1))
    _finish(db, _job(db, user_id, task_type=kind).id)
    counts = db.read(store.job_counts_by_type, types=[unused])
    assert {state: counts[(kind, state)] for state in store._COUNTED_STATES} == {
        "queued": 1, "delayed": 1, "active": 0, "retrying": 0, "completed": 1, "failed": 0,
        "cancelled": 0}
    assert {state: counts[(unused, state)] for state in store._COUNTED_STATES} == dict.fromkeys(
        store._COUNTED_STATES, 0)
    assert (kind, "queued") in db.read(store.job_counts_by_type)


def test_mark_paused_shows_the_familys_waiting_jobs_as_paused_and_back(
        db: SyncDatabase) -> None:
    """Pausing marks the family's waiting jobs paused (seq and timeline grow); resuming
    puts back only those; running jobs and other families are untouched."""
    user_id, base = _user(db), _queue()
    waiting = [_job(db, user_id, queue=base), _job(db, user_id, queue=f"{base}.high")]
    running = _job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    elsewhere = _job(db, user_id, queue=_queue())

    paused = db.write(store.mark_paused, base=base, paused=True)
    assert sorted(v.job.id for v in paused) == sorted(j.id for j in waiting)
    for job in waiting:
        stored = _get(db, job.id)
        assert (stored.stage, stored.seq, stored.state) == ("paused", 2, "queued")
        assert _names(db, job.id)[-1] == (2, "job:queued", "queued")
    assert _get(db, running.id).stage == "stored"
    assert _get(db, elsewhere.id).stage == "stored"
    assert db.write(store.mark_paused, base=base, paused=True) == []

    resumed = db.write(store.mark_paused, base=base, paused=False)
    assert sorted(v.job.id for v in resumed) == sorted(j.id for j in waiting)
    assert [(_get(db, j.id).stage, _get(db, j.id).seq) for j in waiting] == [
        ("stored", 3), ("stored", 3)]


def test_show_paused_marks_one_waiting_job(db: SyncDatabase) -> None:
    """A waiting job becomes paused (seq + 1); already paused, running or unknown: None."""
    user_id = _user(db)
    job = _job(db, user_id)
    shown = db.write(store.show_paused, job_id=job.id)
    assert shown is not None and shown.job.stage == "paused"
    assert (_get(db, job.id).stage, _get(db, job.id).seq) == ("paused", 2)
    assert db.write(store.show_paused, job_id=job.id) is None
    assert _get(db, job.id).seq == 2
    running = _job(db, user_id)
    db.write(store.begin_attempt, job_id=running.id)
    assert db.write(store.show_paused, job_id=running.id) is None
    assert db.write(store.show_paused, job_id=new_id()) is None


def test_clean_finished_deletes_the_familys_old_ended_jobs(db: SyncDatabase) -> None:
    """Counted and deleted: ended before the cutoff in this family. Kept: recent, unfinished,
    dead-lettered, an image's current job, other families."""
    user_id, base = _user(db), _queue()
    old = _ago(hours=2)
    doomed = [_job(db, user_id, queue=base), _job(db, user_id, queue=f"{base}.low")]
    for job in doomed:
        _finish(db, job.id, finished_at=old)
    recent = _job(db, user_id, queue=base)
    _finish(db, recent.id)
    waiting = _job(db, user_id, queue=base)
    dead = _job(db, user_id, queue=base)
    _finish(db, dead.id, JobState.FAILED, finished_at=old)
    current = _upload(db, user_id, queue=base)
    _finish(db, current.job.id, finished_at=old)
    elsewhere = _job(db, user_id, queue=_queue())
    _finish(db, elsewhere.id, finished_at=old)

    assert db.write(store.clean_finished, base=base, finished_before=_ago(hours=1)) == 2
    for job in doomed:
        assert db.read(store.get_job, job_id=job.id, user_id=None) is None
        assert db.read(store.job_timeline, job_id=job.id) == []
    for job_id in (recent.id, waiting.id, dead.id, current.job.id, elsewhere.id):
        assert db.read(store.get_job, job_id=job_id, user_id=None) is not None
    assert db.write(store.clean_finished, base=base, finished_before=_ago(hours=1)) == 0


# -- message bookkeeping -------------------------------------------------------------------------

def test_new_message_id_is_a_fresh_uuid4() -> None:
    """A different version-4 UUID string every time."""
    ids = {store.new_message_id() for _ in range(50)}
    assert len(ids) == 50 and all(uuid.UUID(i).version == 4 for i in ids)


def test_mark_enqueued_marks_only_the_current_message(db: SyncDatabase) -> None:
    """Sent: the job's current message id marks it; an older one does not; unknown is a no-op."""
    job = _job(db, _user(db))
    db.write(store.mark_enqueued, job_id=job.id, message_id=store.new_message_id())
    assert _get(db, job.id).enqueued is False
    db.write(store.mark_enqueued, job_id=job.id, message_id=str(job.message_id))
    assert _get(db, job.id).enqueued is True
    db.write(store.mark_enqueued, job_id=new_id(), message_id=str(job.message_id))


def test_mark_enqueued_many_marks_those_whose_message_is_current(db: SyncDatabase) -> None:
    """Each job is marked only if the id sent is its current message id."""
    user_id = _user(db)
    sent, stale, untouched = _job(db, user_id), _job(db, user_id), _job(db, user_id)
    db.write(store.mark_enqueued_many, sent={sent.id: str(sent.message_id),
                                             stale.id: store.new_message_id(),
                                             new_id(): store.new_message_id()})
    assert [_get(db, j.id).enqueued for j in (sent, stale, untouched)] == [True, False, False]


def test_unsent_jobs_lists_waiting_jobs_whose_message_never_left(empty: SyncDatabase) -> None:
    """Queued or retrying, not enqueued, unchanged since the cutoff; by id, at most limit."""
    db = empty
    user_id, old = _user(db), _ago(minutes=5)
    queued, retrying, sent, recent, running = (_job(db, user_id) for _ in range(5))
    db.write(store.begin_attempt, job_id=retrying.id)
    db.write(store.transition, job_id=retrying.id, state=JobState.RETRYING)
    db.write(store.mark_enqueued, job_id=sent.id, message_id=str(sent.message_id))
    db.write(store.begin_attempt, job_id=running.id)
    for job in (queued, retrying, sent, running):
        _set(db, Job, job.id, updated_at=old)

    cutoff = _ago(minutes=1)
    assert [j.id for j in db.read(store.unsent_jobs, changed_before=cutoff)] == [
        queued.id, retrying.id]
    assert [j.id for j in db.read(store.unsent_jobs, changed_before=cutoff, limit=1)] == [
        queued.id]
    assert recent.id not in {j.id for j in db.read(store.unsent_jobs, changed_before=cutoff)}


def test_silent_active_jobs_lists_running_jobs_unchanged_since_the_cutoff(
        empty: SyncDatabase) -> None:
    """Active and unchanged since the cutoff; by id, at most limit."""
    db = empty
    user_id = _user(db)
    silent = [_job(db, user_id) for _ in range(2)]
    talking, waiting = _job(db, user_id), _job(db, user_id)
    for job in (*silent, talking):
        db.write(store.begin_attempt, job_id=job.id)
    for job in (*silent, waiting):
        _set(db, Job, job.id, updated_at=_ago(minutes=10))
    cutoff = _ago(minutes=1)
    assert [j.id for j in db.read(store.silent_active_jobs, changed_before=cutoff)] == [
        j.id for j in silent]
    assert [j.id for j in db.read(store.silent_active_jobs, changed_before=cutoff,
                                  limit=1)] == [silent[0].id]


def test_renew_message_gives_a_stuck_job_a_new_message(db: SyncDatabase) -> None:
    """Waiting and unsent, or active: a new unsent message id (stored). Sent, recently
    changed, ended or unknown: None and unchanged."""
    user_id = _user(db)
    unsent, sent, running, recent, done = (_job(db, user_id) for _ in range(5))
    db.write(store.mark_enqueued, job_id=sent.id, message_id=str(sent.message_id))
    db.write(store.begin_attempt, job_id=running.id)
    db.write(store.mark_enqueued, job_id=running.id, message_id=str(running.message_id))
    _finish(db, done.id)
    for job in (unsent, sent, running, done):
        _set(db, Job, job.id, updated_at=_ago(minutes=10))
    cutoff = _ago(minutes=1)

    for job in (unsent, running):
        renewed = db.write(store.renew_message, job_id=job.id, changed_before=cutoff)
        assert renewed is not None and renewed.message_id != job.message_id
        stored = _get(db, job.id)
        assert stored.message_id == renewed.message_id and stored.enqueued is False
    for job in (sent, recent, done):
        assert db.write(store.renew_message, job_id=job.id, changed_before=cutoff) is None
        assert _get(db, job.id).message_id == job.message_id
    assert db.write(store.renew_message, job_id=new_id(), changed_before=cutoff) is None


def test_snapshot_window_is_ten_minutes_back() -> None:
    """Jobs finished in the last ten minutes still go into a snapshot."""
    before = utcnow()
    window = store.snapshot_window()
    assert before - timedelta(minutes=10, seconds=1) < window <= utcnow() - timedelta(minutes=10)
