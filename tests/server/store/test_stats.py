"""Counting jobs: queue figures and what a metrics scrape reads (``store.stats``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from server.core.jobs import JobState
from server.core.queue_figures import COUNTED_STATES, QueueFigures
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, as_utc, utcnow
from server.services.presenter import queue_stats
from tests.server.store.rows import ago, finish, new_job, new_queue, new_user, set_columns


def test_queue_stats_counts_a_family(db: SyncDatabase) -> None:
    """Counts per state with delayed apart, the oldest eligible waiting job's age and the
    completions per minute over the last five minutes; other families are left out."""
    user_id, base = new_user(db), new_queue()
    blank = db.read(store.queue_stats, base=base)
    assert blank == QueueFigures(counts=dict.fromkeys(COUNTED_STATES, 0),
                                 oldest_waiting_s=None, throughput_per_min=0.0)
    assert queue_stats(blank) == {"counts": dict.fromkeys(COUNTED_STATES, 0),
                                  "oldest_waiting_s": None, "throughput_per_min": 0.0}

    oldest = new_job(db, user_id, queue=f"{base}.high", priority="high")
    set_columns(db, Job, oldest.id, created_at=ago(seconds=120))
    new_job(db, user_id, queue=base)
    new_job(db, user_id, queue=f"{base}.low", run_at=utcnow() + timedelta(hours=1))
    new_job(db, user_id, queue=base, run_at=ago(seconds=30))  # due: waiting, not delayed
    for _ in range(3):
        done = new_job(db, user_id, queue=base)
        finish(db, done.id)
    long_done = new_job(db, user_id, queue=base)
    finish(db, long_done.id, finished_at=ago(minutes=10))
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    retrying = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=retrying.id)
    db.write(store.transition, job_id=retrying.id, state=JobState.RETRYING)
    finish(db, new_job(db, user_id, queue=base).id, JobState.FAILED)
    db.write(store.cancel_job, job_id=new_job(db, user_id, queue=base).id, user_id=None)
    new_job(db, user_id, queue=new_queue())  # another family

    stats = db.read(store.queue_stats, base=base)
    assert stats.counts == {"queued": 3, "delayed": 1, "active": 1, "retrying": 1,
                            "completed": 4, "failed": 1, "cancelled": 1}
    assert stats.oldest_waiting_s is not None and 119 <= stats.oldest_waiting_s < 150
    assert stats.throughput_per_min == 0.6
    assert queue_stats(stats) == {"counts": stats.counts,
                                  "oldest_waiting_s": stats.oldest_waiting_s,
                                  "throughput_per_min": 0.6}


def test_job_counts_by_type_covers_every_state_of_each_type(db: SyncDatabase) -> None:
    """Counts per (type, state) with delayed apart; the types asked for and the types found
    get every state, zeros included."""
    user_id = new_user(db)
    kind, unused = f"t.{secrets.token_hex(3)}", f"t.{secrets.token_hex(3)}"
    new_job(db, user_id, task_type=kind)
    new_job(db, user_id, task_type=kind, run_at=utcnow() + timedelta(hours=1))
    finish(db, new_job(db, user_id, task_type=kind).id)
    counts = db.read(store.job_counts_by_type, types=[unused])
    assert {state: counts[(kind, state)] for state in COUNTED_STATES} == {
        "queued": 1, "delayed": 1, "active": 0, "retrying": 0, "completed": 1, "failed": 0,
        "cancelled": 0}
    assert {state: counts[(unused, state)] for state in COUNTED_STATES} == dict.fromkeys(
        COUNTED_STATES, 0)
    assert (kind, "queued") in db.read(store.job_counts_by_type)


def test_unfinished_job_counts_and_oldest_waiting_read_the_backlog(empty: SyncDatabase) -> None:
    """Per queue, type and state (delayed apart), unfinished jobs only; the oldest job due
    to run per queue, by run_at, else its creation."""
    db = empty
    user_id, now = new_user(db), utcnow()
    waiting = new_job(db, user_id, queue="images")
    set_columns(db, Job, waiting.id, created_at=now - timedelta(minutes=3))
    due = new_job(db, user_id, queue="images", run_at=now - timedelta(minutes=7))
    new_job(db, user_id, queue="images", run_at=now + timedelta(hours=1))  # delayed
    new_job(db, user_id, queue="images.high", priority="high", task_type="t.other")
    running = new_job(db, user_id, queue="images")
    db.write(store.begin_attempt, job_id=running.id)
    finish(db, new_job(db, user_id, queue="images").id)  # history: not counted here

    counts = {(q, t, s): n for q, t, s, n in db.read(store.unfinished_job_counts, now=now)}
    assert counts == {("images", "t.echo", "queued"): 2, ("images", "t.echo", "delayed"): 1,
                      ("images", "t.echo", "active"): 1,
                      ("images.high", "t.other", "queued"): 1}
    oldest = db.read(store.oldest_waiting, now=now)
    assert set(oldest) == {"images", "images.high"}
    assert abs((oldest["images"] - as_utc(due.run_at)).total_seconds()) < 1  # type: ignore[arg-type]


def test_finished_job_counts_reads_the_history_and_the_dead_letters(
        empty: SyncDatabase) -> None:
    """Per queue, type and final state, with the completions since ``since``; and how many
    dead letters there are."""
    db = empty
    user_id = new_user(db)
    recent, old = new_job(db, user_id), new_job(db, user_id)
    finish(db, recent.id)
    finish(db, old.id, finished_at=ago(hours=1))
    finish(db, new_job(db, user_id).id, JobState.FAILED)
    finish(db, new_job(db, user_id, queue="email", task_type="t.mail").id, JobState.CANCELLED)
    new_job(db, user_id)  # unfinished: not history

    rows, dead = db.read(store.finished_job_counts, since=ago(minutes=5))
    assert sorted(rows) == [("default", "t.echo", "completed", 2, 1),
                            ("default", "t.echo", "failed", 1, 0),
                            ("email", "t.mail", "cancelled", 1, 0)]
    assert dead == 1
