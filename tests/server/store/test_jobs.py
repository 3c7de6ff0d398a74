"""Jobs: recording, reading and changing them (``store.jobs``, ``store.views``,
``store.timeline``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from server.core.jobs import AttemptsExhausted, ImageBusy, ImageDeleted, JobState, TransitionError
from server.core.live import SEQ_BLOCK as BLOCK
from server.core.live import PushedStep
from server.core.search import JobSearch
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Image, Job, as_utc, new_id, utcnow
from server.data.store.views import save
from tests.server.store.rows import (
    ERROR,
    ago,
    count_rows,
    count_statements,
    finish,
    new_job,
    new_upload,
    new_user,
    orm_flushes,
    set_columns,
    stored_image,
    stored_job,
    timeline_names,
)


def test_create_job_records_a_queued_job_and_its_first_event(db: SyncDatabase) -> None:
    """All given fields are stored; the job starts queued at seq 1, unsent, with a message id."""
    user_id = new_user(db)
    batch = db.write(store.create_batch, user_id=user_id, files=1)
    run_at = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    view = db.write(store.create_job, user_id=user_id, task_type="t.echo", queue="default.high",
                    payload={"text": "hi"}, max_attempts=4, priority="high", run_at=run_at,
                    stage="paused", batch_id=batch.id)
    assert view.image is None
    job = stored_job(db, view.job.id)
    assert (job.user_id, job.type, job.queue, job.priority) == (
        user_id, "t.echo", "default.high", "high")
    assert (job.state, job.stage, job.progress, job.attempt, job.max_attempts, job.seq) == (
        "queued", "paused", 0, 0, 4, 1)
    assert job.payload == {"text": "hi"} and job.batch_id == batch.id
    assert job.run_at is not None and as_utc(job.run_at) == run_at
    assert job.enqueued is False and uuid.UUID(str(job.message_id)).version == 4
    assert job.error is None and job.result is None and job.finished_at is None
    assert timeline_names(db, job.id) == [(1, "job:queued", "queued")]
    assert len(job.id) == 32


def test_create_task_job_ties_the_job_to_the_users_own_idle_image(db: SyncDatabase) -> None:
    """None for another user's image, ImageBusy while its job is unfinished; once that job
    ended, the new job becomes the image's current one and the image is queued again."""
    owner, other = new_user(db), new_user(db)
    upload = new_upload(db, owner)
    assert upload.image is not None
    image_id = upload.image.id
    fields = {"task_type": "image.reprocess", "queue": "images", "payload": {"image_id": image_id},
              "max_attempts": 2}

    assert db.write(store.create_task_job, user_id=other, image_id=image_id, **fields) is None
    assert count_rows(db, Job, Job.user_id == other) == 0
    with pytest.raises(ImageBusy):
        db.write(store.create_task_job, user_id=owner, image_id=image_id, **fields)

    finish(db, upload.job.id)
    assert stored_image(db, image_id).status == "ready"  # type: ignore[union-attr]
    view = db.write(store.create_task_job, user_id=owner, image_id=image_id, **fields)
    assert view is not None and view.image is not None and view.job.image_id == image_id
    image = stored_image(db, image_id)
    assert image is not None and image.job_id == view.job.id and image.status == "queued"

    plain = db.write(store.create_task_job, user_id=owner, **fields)
    assert plain is not None and plain.image is None and plain.job.image_id is None
    assert stored_job(db, plain.job.id).state == "queued"


def test_delete_job_removes_the_job_and_its_timeline(db: SyncDatabase) -> None:
    """Undoing a task job leaves no trace of it; other jobs keep their timelines."""
    user_id = new_user(db)
    job, other = new_job(db, user_id), new_job(db, user_id)
    db.write(store.delete_job, job_id=job.id)
    assert db.read(store.get_job, job_id=job.id, user_id=None) is None
    assert db.read(store.job_timeline, job_id=job.id) == []
    assert len(db.read(store.job_timeline, job_id=other.id)) == 1


def test_delete_job_gives_the_image_back_its_previous_job(db: SyncDatabase) -> None:
    """Undoing a task job on an image (its message could not be sent) leaves the image as it
    was: its current job is the earlier one again, and so is its status."""
    user_id = new_user(db)
    upload = new_upload(db, user_id)
    assert upload.image is not None
    finish(db, upload.job.id)
    view = db.write(store.create_task_job, user_id=user_id, image_id=upload.image.id,
                    task_type="image.reprocess", queue="images",
                    payload={"image_id": upload.image.id}, max_attempts=1)
    assert view is not None
    db.write(store.delete_job, job_id=view.job.id)
    image = stored_image(db, upload.image.id)
    assert image is not None
    assert (image.job_id, image.status) == (upload.job.id, "ready")
    only = new_upload(db, user_id)  # an image left without any job names none
    assert only.image is not None
    db.write(store.delete_job, job_id=only.job.id)
    assert stored_image(db, only.image.id).job_id is None  # type: ignore[union-attr]


def test_get_job_is_scoped_to_its_owner_and_carries_its_image(db: SyncDatabase) -> None:
    """The owner and admins see the job (with its image); others and unknown ids get None."""
    owner, other = new_user(db), new_user(db)
    view = new_upload(db, owner)
    assert view.image is not None
    found = db.read(store.get_job, job_id=view.job.id, user_id=owner)
    assert found is not None and found.image is not None and found.image.id == view.image.id
    assert db.read(store.get_job, job_id=view.job.id, user_id=None) is not None
    assert db.read(store.get_job, job_id=view.job.id, user_id=other) is None
    assert db.read(store.get_job, job_id=new_id(), user_id=None) is None
    with pytest.raises(AttributeError):
        found.job = view.job  # type: ignore[misc]  # JobView is frozen


def test_job_timeline_lists_the_jobs_own_changes_in_seq_order(db: SyncDatabase) -> None:
    """Every stored change appears once, named by the event that announced it."""
    user_id = new_user(db)
    job = new_job(db, user_id)
    other = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10)
    db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, stage="done",
             progress=100)
    # A change of an active job outranks every step its attempt may have pushed from Redis.
    assert timeline_names(db, job.id) == [(1, "job:queued", "queued"), (2, "job:active", "active"),
                                  (3 + BLOCK, "job:progress", "active"),
                                  (4 + 2 * BLOCK, "job:completed", "completed")]
    last = db.read(store.job_timeline, job_id=job.id)[-1]
    assert (last.stage, last.progress, last.error) == ("done", 100, None)
    assert timeline_names(db, other.id) == [(1, "job:queued", "queued")]
    assert db.read(store.job_timeline, job_id=new_id()) == []


def test_the_timeline_keeps_each_attempts_worker_and_traceback(db: SyncDatabase) -> None:
    """job:active names the worker that began the attempt; job:retrying and job:failed keep
    the traceback they ended with, though the job's own column holds only the last one."""
    job = new_job(db, new_user(db))
    db.write(store.begin_attempt, job_id=job.id, worker="host:1:w-0")
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING,
             error={"type": "E", "message": "one"}, traceback="tb one",
             stage_times=[("decoding", 0.5), ("thumbnail", 0.25)])
    db.write(store.begin_attempt, job_id=job.id, worker="w" * 300)
    # The next attempt starts clean: a job that then completes shows no stale traceback.
    assert (stored_job(db, job.id).error, stored_job(db, job.id).traceback) == (None, None)
    db.write(store.dead_letter, job_id=job.id, error={"type": "E", "message": "two"},
             traceback="tb two")
    rows = [(r.name, r.worker, r.traceback)
            for r in db.read(store.job_timeline, job_id=job.id)]
    assert rows == [("job:queued", None, None), ("job:active", "host:1:w-0", None),
                    ("job:retrying", None, "tb one"), ("job:active", "w" * 200, None),
                    ("job:failed", None, "tb two")]
    assert stored_job(db, job.id).traceback == "tb two"
    assert [r.stages for r in db.read(store.job_timeline, job_id=job.id)] == [
        None, None, [["decoding", 0.5], ["thumbnail", 0.25]], None, None]


def test_list_jobs_filters_and_pages_newest_first(db: SyncDatabase) -> None:
    """By owner (or everyone's for user_id None), state, ``delayed``, type and ``before``."""
    user_id, other = new_user(db), new_user(db)
    kind = f"t.{secrets.token_hex(3)}"
    plain = [new_job(db, user_id, task_type=kind) for _ in range(3)]
    delayed = new_job(db, user_id, task_type=kind, run_at=utcnow() + timedelta(hours=1))
    done = new_job(db, user_id, task_type=kind)
    finish(db, done.id)
    theirs = new_job(db, other, task_type=kind)
    mine = sorted([j.id for j in (*plain, delayed, done)], reverse=True)

    def ids(**filters: Any) -> list[str]:
        return [view.job.id for view in db.read(store.list_jobs, **filters)]

    assert ids(user_id=user_id, limit=10) == mine
    assert ids(user_id=user_id, limit=2) == mine[:2]
    assert ids(user_id=user_id, limit=10, before=mine[1]) == mine[2:]
    assert ids(user_id=user_id, limit=10, search=JobSearch(state="completed")) == [done.id]
    assert ids(user_id=user_id, limit=10, search=JobSearch(state="delayed")) == [delayed.id]
    assert ids(user_id=user_id, limit=10, search=JobSearch(state="queued")) == sorted(
        [j.id for j in (*plain, delayed)], reverse=True)
    assert ids(user_id=user_id, limit=10, search=JobSearch(type="t.other")) == []
    assert ids(user_id=None, limit=10, search=JobSearch(type=kind)) == [theirs.id, *mine]


def test_count_unfinished_counts_the_users_waiting_and_running_jobs_of_a_type(
        db: SyncDatabase) -> None:
    """Queued (delayed too), active and retrying count; ended jobs, other types and other
    users' jobs do not."""
    user_id, other = new_user(db), new_user(db)
    kind = f"t.{secrets.token_hex(3)}"
    assert db.read(store.count_unfinished, user_id=user_id, task_type=kind) == 0
    new_job(db, user_id, task_type=kind)
    new_job(db, user_id, task_type=kind, run_at=utcnow() + timedelta(hours=1))
    running = new_job(db, user_id, task_type=kind)
    db.write(store.begin_attempt, job_id=running.id)
    retrying = new_job(db, user_id, task_type=kind)
    db.write(store.begin_attempt, job_id=retrying.id)
    db.write(store.transition, job_id=retrying.id, state=JobState.RETRYING)
    for state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
        finish(db, new_job(db, user_id, task_type=kind).id, state)
    new_job(db, user_id, task_type="t.other")
    new_job(db, other, task_type=kind)
    assert db.read(store.count_unfinished, user_id=user_id, task_type=kind) == 4
    assert db.read(store.count_unfinished, user_id=other, task_type=kind) == 1


def test_an_attempts_end_keeps_the_steps_it_pushed_from_redis(db: SyncDatabase) -> None:
    """Steps pushed from Redis alone (``server.core.live``) reach the timeline with the
    attempt's next write, under their own seqs, below the write's own."""
    job = new_job(db, new_user(db))
    began = db.write(store.begin_attempt, job_id=job.id)
    assert began is not None and began.job.seq == 2
    first = [PushedStep(seq=3, stage="thumbnail", progress=40, at=utcnow())]
    # A step that must go to the database (its block used up, say) keeps those before it
    # and never goes below their progress.
    db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10, pushed=first)
    assert (stored_job(db, job.id).progress, stored_job(db, job.id).seq) == (40, 2 + 1 + BLOCK)
    then = [PushedStep(seq=4 + BLOCK, stage="preview", progress=65, at=utcnow())]
    db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, stage="done",
             progress=100, pushed=then)
    assert timeline_names(db, job.id) == [
        (1, "job:queued", "queued"), (2, "job:active", "active"), (3, "job:progress", "active"),
        (3 + BLOCK, "job:progress", "active"), (4 + BLOCK, "job:progress", "active"),
        (4 + 2 * BLOCK, "job:completed", "completed")]
    kept = db.read(store.job_timeline, job_id=job.id)[4]
    assert (kept.stage, kept.progress, kept.error, kept.worker) == ("preview", 65, None, None)


def test_transition_moves_the_job_through_a_retry_to_completion(db: SyncDatabase) -> None:
    """Each change is stored with a higher seq and an event; started_at is kept across
    attempts, an error is cleared when it runs again, finished_at set when it ends; the
    image's status follows."""
    view = new_upload(db, new_user(db))
    assert view.image is not None
    job_id, image_id = view.job.id, view.image.id
    active = db.write(store.transition, job_id=job_id, state=JobState.ACTIVE, stage="decoding",
                      progress=10, attempt=1)
    assert active is not None and active.image is not None and active.image.status == "processing"
    job = stored_job(db, job_id)
    assert (job.state, job.stage, job.progress, job.attempt, job.seq) == (
        "active", "decoding", 10, 1, 2)
    assert job.started_at is not None and job.finished_at is None
    started = as_utc(job.started_at)

    retry_at = (utcnow() + timedelta(seconds=30)).replace(microsecond=0)
    db.write(store.transition, job_id=job_id, state=JobState.RETRYING, error=ERROR,
             traceback="Traceback ...", run_at=retry_at)
    job = stored_job(db, job_id)
    assert (job.state, job.error, job.traceback, job.seq) == (
        "retrying", ERROR, "Traceback ...", 3 + BLOCK)
    assert job.run_at is not None and as_utc(job.run_at) == retry_at
    assert stored_image(db, image_id).status == "processing"  # type: ignore[union-attr]

    db.write(store.transition, job_id=job_id, state=JobState.ACTIVE, attempt=2)
    job = stored_job(db, job_id)
    assert job.error is None and job.attempt == 2
    assert job.started_at is not None and as_utc(job.started_at) == started

    db.write(store.transition, job_id=job_id, state=JobState.COMPLETED, stage="done",
             progress=100, result={"thumbnail": True})
    job = stored_job(db, job_id)
    assert (job.state, job.result, job.seq) == ("completed", {"thumbnail": True}, 5 + 2 * BLOCK)
    assert job.finished_at is not None
    assert stored_image(db, image_id).status == "ready"  # type: ignore[union-attr]
    assert [name for _, name, _ in timeline_names(db, job_id)] == [
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
    job = new_job(db, new_user(db))
    for state in path:
        db.write(store.transition, job_id=job.id, state=state)
    before = stored_job(db, job.id)
    with pytest.raises(TransitionError):
        db.write(store.transition, job_id=job.id, state=refused, progress=99)
    after = stored_job(db, job.id)
    assert (after.state, after.seq, after.progress) == (before.state, before.seq,
                                                        before.progress)
    assert len(timeline_names(db, job.id)) == len(path) + 1


def test_transition_of_an_unknown_job_is_none(db: SyncDatabase) -> None:
    """A job that no longer exists: None, no error."""
    assert db.write(store.transition, job_id=new_id(), state=JobState.ACTIVE) is None


def test_transition_refuses_a_report_on_a_past_attempt(db: SyncDatabase) -> None:
    """of_attempt must be the current attempt; a stale one raises and changes nothing."""
    job = new_job(db, new_user(db))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    db.write(store.begin_attempt, job_id=job.id)
    with pytest.raises(TransitionError, match="attempt 1 is over"):
        db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, of_attempt=1)
    assert stored_job(db, job.id).state == "active"
    done = db.write(store.transition, job_id=job.id, state=JobState.COMPLETED, of_attempt=2)
    assert done is not None and stored_job(db, job.id).state == "completed"


def test_transition_with_resend_gives_the_job_a_new_unsent_message(db: SyncDatabase) -> None:
    """resend: a new message id, marked unsent, so the sweeper sends it."""
    job = new_job(db, new_user(db))
    db.write(store.mark_enqueued, job_id=job.id, message_id=str(job.message_id))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING, resend=True)
    after = stored_job(db, job.id)
    assert after.message_id != job.message_id and uuid.UUID(str(after.message_id))
    assert after.enqueued is False
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    assert stored_job(db, job.id).message_id == after.message_id  # no resend: the same message


def test_transition_back_to_queued_starts_afresh(db: SyncDatabase) -> None:
    """failed → queued (a dead-letter retry) clears the run: attempts, progress, stage,
    error, traceback, result and times."""
    job = new_job(db, new_user(db), run_at=ago(minutes=5))
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.report_progress, job_id=job.id, stage="preview", progress=65)
    db.write(store.transition, job_id=job.id, state=JobState.FAILED, error=ERROR,
             traceback="tb", result={"partial": True})
    db.write(store.transition, job_id=job.id, state=JobState.QUEUED)
    after = stored_job(db, job.id)
    assert (after.state, after.attempt, after.progress, after.stage) == ("queued", 0, 0,
                                                                          "stored")
    assert (after.error, after.traceback, after.result) == (None, None, None)
    assert (after.started_at, after.finished_at, after.run_at) == (None, None, None)
    assert after.seq == 5 + 2 * BLOCK


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
    view = new_upload(db, new_user(db))
    assert view.image is not None
    for state in path:
        db.write(store.transition, job_id=view.job.id, state=state)
    assert stored_image(db, view.image.id).status == status  # type: ignore[union-attr]


def test_cancel_job_cancels_for_its_owner_and_admins_only(db: SyncDatabase) -> None:
    """Another user gets None and nothing changes; the owner's cancel stores the state,
    the error and a failed image without renditions; a finished job raises."""
    owner, other = new_user(db), new_user(db)
    view = new_upload(db, owner)
    assert view.image is not None
    db.write(store.record_image_output, image_id=view.image.id, has_thumbnail=True,
             has_preview=True)
    assert db.write(store.cancel_job, job_id=view.job.id, user_id=other) is None
    assert stored_job(db, view.job.id).state == "queued"

    cancelled = db.write(store.cancel_job, job_id=view.job.id, user_id=owner)
    assert cancelled is not None and cancelled.job.state == "cancelled"
    job = stored_job(db, view.job.id)
    assert (job.state, job.stage) == ("cancelled", "cancelled")
    assert job.error == {"type": "Cancelled", "message": "cancelled on request"}
    assert job.finished_at is not None
    image = stored_image(db, view.image.id)
    assert image is not None
    assert (image.status, image.has_thumbnail, image.has_preview) == ("failed", False, False)
    with pytest.raises(TransitionError):
        db.write(store.cancel_job, job_id=view.job.id, user_id=owner)

    plain = new_job(db, owner)
    db.write(store.begin_attempt, job_id=plain.id)
    by_admin = db.write(store.cancel_job, job_id=plain.id, user_id=None)
    assert by_admin is not None and by_admin.image is None
    assert stored_job(db, plain.id).state == "cancelled"
    assert db.write(store.cancel_job, job_id=new_id(), user_id=None) is None


def test_begin_attempt_starts_the_next_attempt(db: SyncDatabase) -> None:
    """Active, attempt + 1, progress and stage reset; the job's own message (or none named)
    may run it."""
    job = new_job(db, new_user(db))
    view = db.write(store.begin_attempt, job_id=job.id, message_id=job.message_id)
    assert view is not None
    after = stored_job(db, job.id)
    assert (after.state, after.attempt, after.stage, after.progress) == ("active", 1, "stored", 0)
    db.write(store.report_progress, job_id=job.id, stage="preview", progress=65)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    db.write(store.begin_attempt, job_id=job.id)
    after = stored_job(db, job.id)
    assert (after.state, after.attempt, after.stage, after.progress) == ("active", 2, "stored", 0)
    assert db.write(store.begin_attempt, job_id=new_id()) is None


def test_begin_attempt_skips_a_superseded_message(db: SyncDatabase) -> None:
    """A copy of an older message raises TransitionError and leaves the job waiting; a job
    without a message id takes any."""
    job = new_job(db, new_user(db))
    with pytest.raises(TransitionError, match="superseded"):
        db.write(store.begin_attempt, job_id=job.id, message_id=store.new_message_id())
    assert stored_job(db, job.id).state == "queued"
    set_columns(db, Job, job.id, message_id=None)
    assert db.write(store.begin_attempt, job_id=job.id, message_id=store.new_message_id())


def test_begin_attempt_refuses_an_ended_job(db: SyncDatabase) -> None:
    """A cancelled (or completed) job may not run: TransitionError."""
    job = new_job(db, new_user(db))
    db.write(store.cancel_job, job_id=job.id, user_id=None)
    with pytest.raises(TransitionError):
        db.write(store.begin_attempt, job_id=job.id)
    assert stored_job(db, job.id).attempt == 0


def test_begin_attempt_counts_every_delivery_against_max_attempts(db: SyncDatabase) -> None:
    """Once all attempts are used: AttemptsExhausted, saying so when the last run was lost
    (the job is still active: its worker died)."""
    job = new_job(db, new_user(db), max_attempts=2)
    db.write(store.begin_attempt, job_id=job.id)
    db.write(store.begin_attempt, job_id=job.id)  # redelivered after a worker died
    assert stored_job(db, job.id).attempt == 2
    with pytest.raises(AttemptsExhausted, match=r"after 2 attempts \(its worker stopped"):
        db.write(store.begin_attempt, job_id=job.id)
    db.write(store.transition, job_id=job.id, state=JobState.RETRYING)
    with pytest.raises(AttemptsExhausted) as exc:
        db.write(store.begin_attempt, job_id=job.id)
    assert "worker" not in str(exc.value)
    assert stored_job(db, job.id).attempt == 2


def test_report_progress_records_steps_of_an_active_job(db: SyncDatabase) -> None:
    """Stage and progress stored with a seq and a job:progress event; progress never goes
    back; outputs land on the job's image (or the one named) in the same write."""
    view = new_upload(db, new_user(db))
    assert view.image is not None
    db.write(store.begin_attempt, job_id=view.job.id)
    step = db.write(store.report_progress, job_id=view.job.id, stage="thumbnail", progress=40,
                    outputs={"width": 10, "height": 8})
    assert step is not None and step.job.progress == 40
    job = stored_job(db, view.job.id)
    assert (job.stage, job.progress, job.seq) == ("thumbnail", 40, 3 + BLOCK)
    image = stored_image(db, view.image.id)
    assert image is not None and (image.width, image.height) == (10, 8)

    db.write(store.report_progress, job_id=view.job.id, stage="preview", progress=20,
             image_id=view.image.id, outputs={"has_thumbnail": True})
    job = stored_job(db, view.job.id)
    assert (job.stage, job.progress) == ("preview", 40)
    assert stored_image(db, view.image.id).has_thumbnail is True  # type: ignore[union-attr]
    assert timeline_names(db, view.job.id)[-2:] == [(3 + BLOCK, "job:progress", "active"),
                                           (4 + 2 * BLOCK, "job:progress", "active")]


def test_report_progress_ignores_jobs_that_are_not_running(db: SyncDatabase) -> None:
    """Queued, cancelled or unknown: None, and nothing stored."""
    job = new_job(db, new_user(db))
    assert db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10) is None
    db.write(store.cancel_job, job_id=job.id, user_id=None)
    assert db.write(store.report_progress, job_id=job.id, stage="decoding", progress=10) is None
    after = stored_job(db, job.id)
    assert (after.progress, after.seq) == (0, 2)
    assert db.write(store.report_progress, job_id=new_id(), stage="x", progress=1) is None


def test_completion_stores_the_last_stage_outputs_in_the_same_write(db: SyncDatabase) -> None:
    """``transition`` with ``image_outputs`` stores them on the image with the new state;
    for a deleted image it raises ImageDeleted and stores nothing, state included."""
    view = new_upload(db, new_user(db))
    assert view.image is not None
    db.write(store.begin_attempt, job_id=view.job.id)
    done = db.write(store.transition, job_id=view.job.id, state=JobState.COMPLETED,
                    stage="done", progress=100, image_id=view.image.id,
                    image_outputs={"has_preview": True, "width": 640, "height": 480})
    assert done is not None and done.image is not None
    assert (done.image.has_preview, done.image.width, done.image.height) == (True, 640, 480)
    image = stored_image(db, view.image.id)
    assert image is not None and (image.has_preview, image.width) == (True, 640)
    assert stored_job(db, view.job.id).state == JobState.COMPLETED.value

    gone = new_upload(db, new_user(db))
    assert gone.image is not None
    db.write(store.begin_attempt, job_id=gone.job.id)
    db.write(store.delete_image, image_id=gone.image.id, user_id=None)
    with pytest.raises(ImageDeleted):
        db.write(store.transition, job_id=gone.job.id, state=JobState.COMPLETED,
                 image_outputs={"has_preview": True})
    assert stored_job(db, gone.job.id).state == JobState.ACTIVE.value


def test_an_attempts_start_and_end_read_the_job_with_its_image_once(db: SyncDatabase) -> None:
    """A worker's two writes of an image job read the job and its image once each (each
    read more was a query and, through the ORM, a few tenths of a millisecond of a
    worker's CPU); on SQLite both come in one statement. Each row changed is one
    statement."""
    once = (["jobs+images"] if db.engine.dialect.name == "sqlite" else ["jobs", "images"])
    view = new_upload(db, new_user(db))
    assert view.image is not None
    with count_statements(db) as statements, orm_flushes() as flushed:
        began = db.write(store.begin_attempt, job_id=view.job.id, message_id=view.job.message_id)
    assert began is not None and began.image is not None
    assert began.image.status == "processing"
    assert _reads(statements) == once
    # One statement per row written, none read back, none by the ORM's flush
    # (``views.save``, ``timeline.record``).
    assert flushed == []
    assert _writes(statements) == ["INSERT INTO job_events", "UPDATE images", "UPDATE jobs"]
    # A progress step written, not pushed, goes through Core too.
    with orm_flushes() as flushed:
        step = db.write(store.report_progress, job_id=view.job.id, stage="thumbnail",
                        progress=30)
    assert flushed == [] and step is not None
    assert stored_job(db, view.job.id).stage == "thumbnail"
    steps = [PushedStep(seq=step.job.seq + n, stage="preview", progress=40 + 10 * n,
                        at=utcnow()) for n in (1, 2)]
    with count_statements(db) as statements, orm_flushes() as flushed:
        done, _ = db.write(store.end_with_deliveries, change=store.transition,
                           webhook=lambda v: ("job.completed", {}), job_id=view.job.id,
                           state=JobState.COMPLETED, stage="done", progress=100,
                           image_id=view.image.id, image_outputs={"has_preview": True},
                           pushed=steps)
    assert done is not None and done.image is not None and done.image.has_preview
    assert _reads(statements) == [*once, "webhooks"]
    assert flushed == []
    # The image's outputs and its new status in one UPDATE; the pushed steps in one INSERT.
    assert _writes(statements) == ["INSERT INTO job_events", "INSERT INTO job_events",
                                   "UPDATE images", "UPDATE jobs"]
    image = stored_image(db, view.image.id)
    assert image is not None and (image.has_preview, image.status) == (True, "ready")
    assert [name for _, name, _ in timeline_names(db, view.job.id)][-3:] == [
        "job:progress", "job:progress", "job:completed"]


def _writes(statements: list[str]) -> list[str]:
    """Each INSERT and UPDATE, as "UPDATE table", sorted."""
    return sorted(" ".join(statement.split()[:3 if statement.startswith("INSERT") else 2])
                  for statement in statements
                  if statement.lstrip().upper().startswith(("INSERT", "UPDATE")))


def test_save_writes_a_rows_changes_at_once_and_leaves_it_clean(db: SyncDatabase) -> None:
    """``views.save``: the changed columns of a stored row in one UPDATE, then the row is
    clean (the commit writes nothing more); an unchanged row costs no statement."""
    view = new_upload(db, new_user(db))
    assert view.image is not None

    def change(s: Session) -> tuple[list[str], bool]:
        job = s.get(Job, view.job.id)
        image = s.get(Image, view.image.id)
        assert job is not None and image is not None
        job.stage, job.progress, job.error = "thumbnail", 40, {"type": "X"}
        with count_statements(db) as statements:
            save(s, job, image, None)
        return statements, job in s.dirty

    statements, dirty = db.write(change)
    assert [sql.split()[0] for sql in statements] == ["UPDATE"] and not dirty
    assert "stage" in statements[0] and "status" not in statements[0]
    job = stored_job(db, view.job.id)
    assert (job.stage, job.progress, job.error) == ("thumbnail", 40, {"type": "X"})


def _reads(statements: list[str]) -> list[str]:
    """The tables each SELECT reads, as "a+b"."""
    return ["+".join(table for table in ("jobs", "images", "webhooks")
                     if f" {table}" in statement.split("WHERE")[0])
            for statement in statements if statement.lstrip().upper().startswith("SELECT")]


def test_report_progress_raises_when_the_image_is_gone(db: SyncDatabase) -> None:
    """Outputs for a deleted image: ImageDeleted, and the step is not stored either."""
    view = new_upload(db, new_user(db))
    assert view.image is not None
    db.write(store.begin_attempt, job_id=view.job.id)
    db.write(store.delete_image, image_id=view.image.id, user_id=None)
    with pytest.raises(ImageDeleted):
        db.write(store.report_progress, job_id=view.job.id, stage="preview", progress=65,
                 outputs={"has_thumbnail": True})
    assert stored_job(db, view.job.id).progress == 0
    plain = new_job(db, new_user(db))
    db.write(store.begin_attempt, job_id=plain.id)
    with pytest.raises(ImageDeleted):  # no image at all
        db.write(store.report_progress, job_id=plain.id, stage="x", progress=5,
                 outputs={"width": 1})
    ok = db.write(store.report_progress, job_id=plain.id, stage="x", progress=5)
    assert ok is not None and ok.job.progress == 5
