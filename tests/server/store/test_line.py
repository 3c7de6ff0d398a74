"""Queue positions and the front of the line (``store.line``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from datetime import timedelta

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, utcnow
from tests.server.store.rows import (
    ago,
    count_statements,
    finish,
    new_job,
    new_queue,
    new_upload,
    new_user,
    stored_job,
)


def test_queue_position_orders_by_priority_then_arrival_within_the_family(
        db: SyncDatabase) -> None:
    """Eligible queued jobs of the family ahead of it: higher priorities first, then earlier
    ids. Delayed and non-queued jobs have no position and take none; other families and a
    job whose run_at has passed count as usual."""
    user_id, base = new_user(db), new_queue()
    first = new_job(db, user_id, queue=base)
    second = new_job(db, user_id, queue=base)
    low = new_job(db, user_id, queue=f"{base}.low", priority="low")
    high = new_job(db, user_id, queue=f"{base}.high", priority="high")
    delayed = new_job(db, user_id, queue=base, run_at=utcnow() + timedelta(hours=1))
    due = new_job(db, user_id, queue=base, run_at=ago(minutes=1))
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    new_job(db, user_id, queue=new_queue(), priority="high")  # another family

    def position(job: Job) -> int | None:
        stored = stored_job(db, job.id)
        return db.read(lambda s: store.queue_position(s, job=stored))

    assert [position(j) for j in (high, first, second, due, low)] == [0, 1, 2, 3, 4]
    assert position(delayed) is None and position(running) is None


def test_queue_position_takes_users_in_turn_within_a_priority(db: SyncDatabase) -> None:
    """Round-robin across users (server.infra.fair): another user's single job waits for one
    job of each user ahead of it in line, not for their whole backlog; the line lists
    jobs in that order too."""
    heavy, light, base = new_user(db), new_user(db), new_queue()
    backlog = [new_job(db, heavy, queue=base) for _ in range(4)]
    single = new_job(db, light, queue=base)
    urgent = new_job(db, light, queue=f"{base}.high", priority="high")

    def position(job: Job) -> int | None:
        stored = stored_job(db, job.id)
        return db.read(lambda s: store.queue_position(s, job=stored))

    assert position(urgent) == 0
    # Turn 1: heavy's first, then light's single; then heavy's other jobs.
    assert [position(j) for j in (backlog[0], single, *backlog[1:])] == [1, 2, 3, 4, 5]
    line = advance(db, base, 3)
    assert [(view.job.id, n) for view, n in line] == [
        (urgent.id, 0), (backlog[0].id, 1), (single.id, 2)]


def test_queue_positions_of_several_jobs_read_the_line_once_and_agree_with_each_alone(
        db: SyncDatabase) -> None:
    """A group of uploads recorded together gets its positions from one reading of each
    family's line: the same as each job's own ``queue_position``, for several jobs of one
    user (old and new), another user's, another family's, and jobs with none."""
    heavy, light, base, other = new_user(db), new_user(db), new_queue(), new_queue()
    jobs = [new_job(db, heavy, queue=base) for _ in range(3)]
    jobs += [new_job(db, light, queue=base), new_job(db, light, queue=f"{base}.high",
                                                      priority="high")]
    jobs += [new_job(db, heavy, queue=other), new_job(db, heavy, queue=base)]
    delayed = new_job(db, light, queue=base, run_at=utcnow() + timedelta(hours=1))
    running = new_job(db, light, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    stored = [stored_job(db, job.id) for job in [*jobs, delayed, running]]
    alone = [db.read(lambda s, j=job: store.queue_position(s, job=j)) for job in stored]
    with count_statements(db) as statements:
        together = db.read(lambda s: store.queue_positions(s, jobs=stored))
    assert together == alone == [1, 3, 4, 2, 0, 0, 5, None, None]
    # One grouped count per family (2), then the own line of each user with several
    # jobs, per family and priority they wait in (heavy: 2, light: 2): not a query per
    # job.
    assert len([sql for sql in statements if sql.lstrip().startswith("SELECT")]) == 6
    assert db.read(lambda s: store.queue_positions(s, jobs=[])) == []


def test_get_job_positioned_adds_the_position(db: SyncDatabase) -> None:
    """A waiting job gets its position, a running one None; scoped like get_job."""
    owner, base = new_user(db), new_queue()
    ahead, mine = new_job(db, owner, queue=base), new_job(db, owner, queue=base)
    found = db.read(store.get_job_positioned, job_id=mine.id, user_id=owner)
    assert found is not None and found[0].job.id == mine.id and found[1] == 1
    db.write(store.begin_attempt, job_id=ahead.id)
    assert db.read(store.get_job_positioned, job_id=mine.id, user_id=owner)[1] == 0  # type: ignore[index]
    running = db.read(store.get_job_positioned, job_id=ahead.id, user_id=None)
    assert running is not None and running[1] is None
    assert db.read(store.get_job_positioned, job_id=mine.id, user_id=new_user(db)) is None


def test_snapshot_jobs_lists_unfinished_and_recently_finished_oldest_first(
        db: SyncDatabase) -> None:
    """Unfinished jobs and those finished since the cutoff, oldest first with positions;
    older finished jobs and other users' jobs are left out; ``limit`` keeps the newest."""
    user_id, base = new_user(db), new_queue()
    old_done = new_job(db, user_id, queue=base)
    finish(db, old_done.id, finished_at=ago(hours=1))
    recent_done = new_job(db, user_id, queue=base)
    finish(db, recent_done.id)
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    waiting = [new_job(db, user_id, queue=base) for _ in range(2)]
    new_job(db, new_user(db), queue=base)  # someone else's: users take turns, so it goes second

    got = db.read(store.snapshot_jobs, user_id=user_id, finished_since=ago(minutes=10))
    assert [(view.job.id, position) for view, position in got] == [
        (recent_done.id, None), (running.id, None), (waiting[0].id, 0), (waiting[1].id, 2)]
    newest = db.read(store.snapshot_jobs, user_id=user_id, finished_since=ago(minutes=10),
                     limit=2)
    assert [view.job.id for view, _ in newest] == [waiting[0].id, waiting[1].id]


def test_line_front_holds_only_eligible_waiting_jobs_of_the_family(
        db: SyncDatabase) -> None:
    """A running or delayed job is nobody waiting; a waiting one of any priority is."""
    user_id, base = new_user(db), new_queue()
    assert db.read(store.line_front, queue=base, limit=10) == []
    new_job(db, user_id, queue=base, run_at=utcnow() + timedelta(hours=1))
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)
    new_job(db, user_id, queue=new_queue())  # another family
    assert db.read(store.line_front, queue=f"{base}.high", limit=10) == []
    low = new_job(db, user_id, queue=f"{base}.low", priority="low")
    assert db.read(store.line_front, queue=f"{base}.high", limit=10) == [low.id]


def test_advance_line_skips_a_job_that_left_the_line_since_the_read(db: SyncDatabase) -> None:
    """The front is read first and written after: a job begun in between is not told a
    position (nor its seq moved), and the rest close up behind it."""
    user_id, base = new_user(db), new_queue()
    first, second, third = (new_job(db, user_id, queue=base) for _ in range(3))
    front = db.read(store.line_front, queue=base, limit=3)
    assert front == [first.id, second.id, third.id]
    db.write(store.begin_attempt, job_id=first.id)
    line = db.write(store.advance_line, ids=front)
    assert [(view.job.id, n) for view, n in line] == [(second.id, 0), (third.id, 1)]
    assert stored_job(db, first.id).seq == 2  # its job:active only
    assert db.write(store.advance_line, ids=[]) == []


def advance(db: SyncDatabase, queue: str, limit: int) -> list[tuple[store.JobView, int]]:
    """A refresh of positions as a worker makes it: the front read, then written."""
    return db.write(store.advance_line, ids=db.read(store.line_front, queue=queue, limit=limit))


def test_advance_line_lists_the_front_of_the_line_and_bumps_seq(db: SyncDatabase) -> None:
    """The first ``limit`` eligible waiting jobs of the family in start order, each with its
    position; only their seq grows (stored)."""
    user_id, base = new_user(db), new_queue()
    normal = new_job(db, user_id, queue=base)
    low = new_job(db, user_id, queue=f"{base}.low", priority="low")
    high = new_job(db, user_id, queue=f"{base}.high", priority="high")
    later = new_job(db, user_id, queue=base)
    new_job(db, user_id, queue=base, run_at=utcnow() + timedelta(hours=1))  # delayed: no place
    running = new_job(db, user_id, queue=base)
    db.write(store.begin_attempt, job_id=running.id)

    with count_statements(db) as statements:
        line = advance(db, f"{base}.low", 3)
    assert [(view.job.id, position) for view, position in line] == [
        (high.id, 0), (normal.id, 1), (later.id, 2)]
    # The three seqs in one statement, run for each (``views.save``).
    assert [sql.split()[0] for sql in statements].count("UPDATE") == 1
    assert [stored_job(db, j.id).seq for j in (high, normal, later, low)] == [2, 2, 2, 1]
    everyone = advance(db, base, 10)
    assert [view.job.id for view, _ in everyone] == [high.id, normal.id, later.id, low.id]


def test_advance_line_reaches_into_each_users_backlog_as_deep_as_their_turns(
        db: SyncDatabase) -> None:
    """Several users and priorities: each user's jobs come in their turns, as deep into
    their own backlog as the front reaches, a user's jobs of a priority the front does not
    reach stay out; each view comes with its image."""
    heavy, light, other, base = new_user(db), new_user(db), new_user(db), new_queue()
    heavy_jobs = [new_upload(db, heavy, queue=base).job for _ in range(4)]
    heavy_low = new_upload(db, heavy, queue=f"{base}.low", priority="low").job
    light_high = new_upload(db, light, queue=f"{base}.high", priority="high").job
    light_job = new_upload(db, light, queue=base).job
    other_low = new_job(db, other, queue=f"{base}.low", priority="low")

    line = advance(db, base, 5)
    assert [(view.job.id, n) for view, n in line] == [
        (light_high.id, 0), (heavy_jobs[0].id, 1), (light_job.id, 2), (heavy_jobs[1].id, 3),
        (heavy_jobs[2].id, 4)]
    assert all(view.image is not None and view.image.id == view.job.image_id
               for view, _ in line)
    everyone = advance(db, base, 20)
    assert [view.job.id for view, _ in everyone][5:] == [heavy_jobs[3].id, heavy_low.id,
                                                         other_low.id]
    assert everyone[-1][0].image is None  # a task job: no image
    assert [stored_job(db, j.id).seq for j in (heavy_jobs[2], heavy_jobs[3])] == [3, 2]
