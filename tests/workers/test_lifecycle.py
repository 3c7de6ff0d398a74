"""``workers.middleware.lifecycle.JobLifecycle`` run by Dramatiq itself: a real ``dramatiq.Worker``
on the
deployment's ``RedisBroker`` (``build_broker``, a namespace of each test's own), with the
middleware installed as ``workers.app`` installs it (``JobLifecycle`` and ``DeadLetters``
before ``Retries``), a real ``Reporter`` writing to a real database and publishing on the
Redis bus, real ``Leases`` and ``QueueGate``.

Each test sends a stored job's message as the web process does and follows it through the
database row, the events on the bus (by name, seq and attempt, in order), the job's lease
key and the in-memory lease book. Proven here:
- a job runs once under its lease and completes; the lease is given back;
- a transient failure is announced as ``job:retrying`` with its next run, and the retry
  runs as the next attempt; a retry whose message Redis refuses is left, unsent under a new
  message id, for the sweeper; exhausted retries end in the dead-letter queue;
- a paused queue holds the job without using an attempt, and it runs once resumed;
- a job whose lease another process holds is not run twice, and that lease is untouched;
- superseded, cancelled and deleted jobs are skipped; attempts used up by lost workers
  end as ``WorkerLost`` dead letters; a cancellation during the run stands;
- every path gives the lease back exactly when it took it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.worker
import psycopg
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import update
from sqlalchemy.engine import make_url

from server.core import keys, live
from server.core.events import JobEvent, decode_event
from server.core.jobs import JobState
from server.core.live import SEQ_BLOCK
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, utcnow
from server.data.store import JobView
from server.infra import metrics
from server.infra.broker import build_broker, enqueue_job, install, redis_client, send_job
from server.infra.bus import SyncBus
from server.infra.embedded_redis import EmbeddedRedis
from server.infra.fair import FairDispatch
from server.infra.settings import Settings
from server.services import live_views
from server.services.presenter import Presenter
from tests.conftest import Databases
from workers import handoff
from workers.faults import JobCancelled, PermanentFailure, TransientError
from workers.middleware import leases as leases_module
from workers.middleware import lifecycle, pause, timings
from workers.middleware.dead_letters import DeadLetters
from workers.middleware.leases import Leases
from workers.middleware.lifecycle import JobLifecycle, job_id_of, release_lease
from workers.middleware.pause import QueueGate
from workers.middleware.timings import JobTimings
from workers.progress import RedisLineRefresh, Reporter

pytestmark = pytest.mark.integration

TASK = "test.behave"
QUEUE = "work"
# Long enough that no scheduling delay on a loaded machine lets a running job's lease
# lapse (the harness refreshes none); it is also how long a leased-elsewhere copy waits.
LEASE_TTL_MS = 3000
DEADLINE_S = 20.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Tap:
    """Every event published on the deployment's bus, decoded, in publish order."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(keys.events_channel(prefix))
        self.events: list[JobEvent] = []
        confirmed = self.pubsub.get_message(timeout=5)
        assert confirmed is not None and confirmed["type"] == "subscribe"

    def _pump(self) -> None:
        while (message := self.pubsub.get_message(timeout=0.02)) is not None:
            if message["type"] == "message":
                event = decode_event(message["data"])
                if isinstance(event, JobEvent):
                    self.events.append(event)

    def of(self, job_id: str) -> list[tuple[str, int, str, int]]:
        """(event, seq, state, attempt) of one job's events so far."""
        self._pump()
        return [(e.name, e.seq, e.job["state"], e.job["attempt"]) for e in self.events
                if e.job["id"] == job_id]

    def moves(self, job_id: str) -> list[tuple[str, str, int]]:
        """(event, state, attempt) of one job's events but ``job:queued``: when other jobs
        of its queue start, waiting ones get fresh queue positions (as throttled)."""
        return [(name, state, attempt) for name, _, state, attempt in self.of(job_id)
                if name != "job:queued"]

    def last(self, job_id: str) -> dict[str, Any]:
        self._pump()
        return [e.job for e in self.events if e.job["id"] == job_id][-1]

    def wait_for(self, job_id: str, name: str) -> list[tuple[str, int, str, int]]:
        """The job's events once one named ``name`` has arrived (those after it come later:
        one worker thread publishes a job's events in order)."""
        wait_until(lambda: any(event == name for event, *_ in self.of(job_id)),
                   f"{name} of job {job_id}; got {self.of(job_id)}")
        return self.of(job_id)

    def close(self) -> None:
        self.pubsub.close()


@dataclass
class Harness:
    """One deployment's worker side: broker with our middleware, database, Redis, bus tap."""

    prefix: str
    db: SyncDatabase
    client: redis.Redis
    broker: RedisBroker
    leases: Leases
    lifecycle: JobLifecycle
    tap: Tap
    # What each run of the test actor saw: (job id, attempt, held the lease itself).
    runs: list[tuple[str, int, bool]] = field(default_factory=list)
    on_run: dict[str, Callable[[Job], Any]] = field(default_factory=dict)
    # Called (by job id) as the actor starts, before it reads anything.
    before_run: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def new_job(self, mode: str, *, max_attempts: int = 3, user_id: str = "u1") -> Job:
        view = self.db.write(store.create_job, user_id=user_id, task_type=TASK, queue=QUEUE,
                             payload={"mode": mode}, max_attempts=max_attempts)
        return view.job

    def send(self, job: Job) -> None:
        """As the web process sends a stored job (``dispatch.send``)."""
        send_job(self.broker, job)

    def row(self, job_id: str) -> Job:
        view = self.db.read(store.get_job, job_id=job_id, user_id=None)
        assert view is not None, f"job {job_id} is gone"
        return view.job

    def lease(self, job_id: str) -> bytes | None:
        value: bytes | None = self.client.get(keys.job_lease(self.prefix, job_id))
        return value

    def holds_lease(self, job_id: str) -> bool:
        """Whether a run in this process holds the job's lease in Redis."""
        value = self.lease(job_id)
        return value is not None and value.decode().startswith(self.leases.owner + ":")

    def wait_released(self, *job_ids: str) -> None:
        """Until this process holds no lease, in memory or in Redis, for those jobs."""
        wait_until(lambda: not self.leases.held() and all(self.lease(j) is None for j in job_ids),
                   f"leases of {job_ids} released")

    def queue_is_empty(self) -> bool:
        """No message of ours waiting, delayed or unacknowledged in Redis."""
        namespace = self.broker.namespace
        names = [keys.dramatiq_messages(namespace, q) for q in (QUEUE, f"{QUEUE}.DQ")]
        return not any(self.client.hlen(name) for name in names)

    @contextlib.contextmanager
    def worker(self, threads: int = 1) -> Iterator[dramatiq.Worker]:
        """A Dramatiq worker (one thread unless told: messages run one at a time) for the
        block."""
        self.broker.emit_after("process_boot")
        running = dramatiq.Worker(self.broker, worker_timeout=100, worker_threads=threads)
        running.start()
        try:
            yield running
        finally:
            running.stop()


def _behave(harness: Harness, job_id: str) -> dict[str, Any] | None:
    """The test actor: does what the job's payload ``mode`` says."""
    if job_id in harness.before_run:
        harness.before_run[job_id]()
    job = harness.row(job_id)
    held = harness.holds_lease(job_id)
    harness.runs.append((job_id, job.attempt, held))
    mode = job.payload["mode"]
    if mode in harness.on_run:
        harness.on_run[mode](job)
    if mode == "ok":
        return {"answer": 42}
    if mode == "hang":  # on_run hangs the first attempt
        return {"answer": job.attempt}
    if mode == "timed":  # stages timed but too quick to be reported (folded)
        for stage, seconds in (("one", 0.02), ("two", 0.01)):
            timings.stage_entered(stage)
            time.sleep(seconds)
        if job.attempt < 2:
            raise TransientError("try again")
        return {"answer": 7}
    if mode == "flaky" and job.attempt < 2:
        raise TransientError("try again")
    if mode == "flaky":
        return {"answer": job.attempt}
    if mode in ("always_transient", "refuse_retry"):
        raise TransientError("still down")
    if mode == "permanent":
        raise PermanentFailure("bad input") from ValueError("bad input")
    if mode == "steps":  # on_run reports the steps
        return {"answer": 3}
    if mode == "cancel_midway":  # cancelled through the API while running, then finishes
        harness.db.write(store.cancel_job, job_id=job_id, user_id=None)
        return {"answer": 1}
    if mode == "cancel_and_stop":  # cancelled, and the task notices at a stage boundary
        harness.db.write(store.cancel_job, job_id=job_id, user_id=None)
        raise JobCancelled("the job was cancelled")
    raise AssertionError(f"unknown mode {mode}")


def build_harness(redis_url: str, database_url: str) -> Harness:
    prefix = f"life-{secrets.token_hex(4)}"
    settings = Settings(redis_url=redis_url, database_url=database_url, redis_prefix=prefix)
    db = SyncDatabase(database_url)
    db.migrate()
    client = redis_client(redis_url)
    broker = build_broker(settings)
    reporter = Reporter(db, SyncBus(client, prefix), Presenter("life-secret", 3600),
                        send=partial(send_job, broker), line=RedisLineRefresh(client, prefix))
    leases = Leases(client, prefix, ttl_ms=LEASE_TTL_MS)
    middleware = JobLifecycle(reporter, leases, is_paused=QueueGate(client, prefix),
                              remove_renditions=lambda _image_id: None)
    install(broker, middleware, DeadLetters(reporter, leases),
            JobTimings(client, prefix),  # after JobLifecycle, as workers/app.py has it
            FairDispatch(broker.fair, offer_every_s=1.0))
    harness = Harness(prefix, db, client, broker, leases, middleware, Tap(client, prefix))
    dramatiq.actor(partial(_behave, harness), broker=broker, actor_name=TASK, queue_name=QUEUE,
                   min_backoff=10, max_backoff=40, throws=(PermanentFailure,))
    return harness


class Outage:
    """Takes a test's own database away from every new connection, and brings it back:
    SQLite by moving its directory, PostgreSQL by refusing connections to it."""

    def __init__(self, databases: Databases, url: str, db: SyncDatabase) -> None:
        self.databases, self.url, self.db = databases, url, db
        self.down = False
        # The test and the actor's thread may both end it: one does, the other waits.
        self._lock = threading.Lock()

    def _postgres(self, *statements: str) -> None:
        with psycopg.connect(self.databases._admin_dsn(), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def start(self) -> None:
        name = make_url(self.url).database
        assert name is not None
        if self.databases.backend == "sqlite":
            folder = os.path.dirname(name)
            os.rename(folder, f"{folder}-away")
        else:
            self._postgres(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        self.db.engine.dispose()  # pooled connections would outlive the outage
        self.down = True

    def end(self) -> None:
        with self._lock:
            if not self.down:
                return
            name = make_url(self.url).database
            assert name is not None
            if self.databases.backend == "sqlite":
                folder = os.path.dirname(name)
                os.rename(f"{folder}-away", folder)
            else:
                self._postgres(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            self.down = False


@pytest.fixture
def make_harness(databases: Databases) -> Iterator[Callable[[str], Harness]]:
    made: list[Harness] = []

    def make(redis_url: str) -> Harness:
        harness = build_harness(redis_url, databases.new())
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.tap.close()
        harness.broker.close()
        harness.client.close()
        harness.db.dispose()


@pytest.fixture
def harness(redis_url: str, make_harness: Callable[[str], Harness]) -> Harness:
    return make_harness(redis_url)


@pytest.fixture
def outage(harness: Harness, databases: Databases) -> Iterator[Outage]:
    made = Outage(databases, str(harness.db.engine.url.render_as_string(hide_password=False)),
                  harness.db)
    yield made
    made.end()


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


# -- runs that end ---------------------------------------------------------------------------------

def test_a_job_runs_once_under_its_lease_and_completes(harness: Harness) -> None:
    """``job:active`` (attempt 1) then ``job:completed`` with the actor's result, progress
    100 and stage done; the actor ran once holding the lease, which is given back; the
    message is acknowledged and the row and its timeline agree with the events."""
    job = harness.new_job("ok")
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, "job:completed")
        harness.wait_released(job.id)
        wait_until(harness.queue_is_empty, "the message acknowledged")
    assert events == [("job:active", 2, "active", 1),
                      ("job:completed", 3 + SEQ_BLOCK, "completed", 1)]
    assert harness.runs == [(job.id, 1, True)]
    done = harness.tap.last(job.id)
    assert (done["progress"], done["stage"], done["result"], done["error"]) == (
        100, "done", {"answer": 42}, None)
    stored = harness.row(job.id)
    assert (stored.state, stored.attempt, stored.result) == ("completed", 1, {"answer": 42})
    assert stored.started_at is not None and stored.finished_at is not None
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [(r.seq, r.name) for r in timeline] == [
        (1, "job:queued"), (2, "job:active"), (3 + SEQ_BLOCK, "job:completed")]


def test_the_actor_is_handed_the_row_its_attempt_began_with(harness: Harness) -> None:
    """The actor takes the job (and its image) as ``begin_attempt`` wrote it, in its own
    thread, instead of reading the row again: once, and only for that job."""
    job = harness.new_job("flaky")
    handed: list[tuple[str, int, int] | None] = []

    def take(row: Job) -> None:
        view = handoff.take(row.id)
        handed.append(None if view is None else (view.job.id, view.job.attempt, view.job.seq))
        assert handoff.take(row.id) is None  # taken once

    harness.on_run["flaky"] = take
    with harness.worker():
        harness.send(job)
        harness.tap.wait_for(job.id, "job:completed")
    active = [seq for name, seq, _, _ in harness.tap.of(job.id) if name == "job:active"]
    assert handed == [(job.id, 1, active[0]), (job.id, 2, active[1])]
    assert handoff.take(job.id) is None  # nothing is left in this (another) thread


def test_a_transient_failure_is_retried_as_the_next_attempt(harness: Harness) -> None:
    """The failed attempt is announced as ``job:retrying`` with its error and the time
    Retries scheduled the next run; the retry runs as attempt 2 (same message id, so the
    sweeper leaves it alone) and completes."""
    job = harness.new_job("flaky")
    started = time.time()
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, "job:completed")
        harness.wait_released(job.id)
    assert events == [("job:active", 2, "active", 1),
                      ("job:retrying", 3 + SEQ_BLOCK, "retrying", 1),
                      ("job:active", 4 + SEQ_BLOCK, "active", 2),
                      ("job:completed", 5 + 2 * SEQ_BLOCK, "completed", 2)]
    assert [attempt for _, attempt, _ in harness.runs] == [1, 2]
    assert all(held for *_, held in harness.runs), "each run held the lease"
    retrying = next(e.job for e in harness.tap.events if e.name == "job:retrying")
    assert retrying["error"] == {"type": "TransientError", "message": "try again",
                                 "retryable": True}
    assert retrying["run_at"] is not None
    assert started <= at(retrying["run_at"]).timestamp() <= time.time()
    stored = harness.row(job.id)
    assert (stored.state, stored.result, stored.message_id) == (
        "completed", {"answer": 2}, job.message_id)
    assert harness.lifecycle._next_run == {}, "each noted next run is taken once"


def test_each_attempts_end_keeps_its_stages_as_timed(harness: Harness) -> None:
    """Stages too quick to be reported still reach the timeline: the retry and the
    completion each store the stages of their attempt as the worker timed them."""
    job = harness.new_job("timed")
    with harness.worker():
        harness.send(job)
        harness.tap.wait_for(job.id, "job:completed")
        harness.wait_released(job.id)
    ends = [r for r in harness.db.read(store.job_timeline, job_id=job.id)
            if r.name in ("job:retrying", "job:completed")]
    assert [r.name for r in ends] == ["job:retrying", "job:completed"]
    for end in ends:
        assert [stage for stage, _ in end.stages] == ["one", "two"]
        one, two = (seconds for _, seconds in end.stages)
        assert one >= 0.02 and two >= 0.01


def test_a_runs_wait_counts_from_when_its_job_went_back_in_the_queue(harness: Harness) -> None:
    """The wait-time metric: a job made a day ago and sent as a dead letter's retry is
    (``QUEUED_OPTION``) waited from the retry; sent without it, from when it was made."""
    def waits() -> tuple[float, float]:
        """(runs counted, runs within 60 s) of the wait histogram, as the shared metrics hold it."""
        grouped = metrics.group_samples(harness.client.hgetall(
            keys.metrics_samples(harness.prefix)))
        [series] = [s for s in metrics.histogram_series(metrics.WAIT_DURATION, grouped)
                    if dict(s.labels).get("type") == TASK]
        within = dict(series.buckets)
        return within["+Inf"], within["60"]

    day_ago = utcnow() - timedelta(days=1)
    retried, plain = harness.new_job("ok"), harness.new_job("ok")
    harness.db.write(lambda s: s.execute(update(Job).where(Job.id.in_([retried.id, plain.id]))
                                         .values(created_at=day_ago)))
    with harness.worker():
        send_job(harness.broker, harness.row(retried.id),
                 queued_ms=int(time.time() * 1000))
        harness.tap.wait_for(retried.id, "job:completed")
        assert waits() == (1, 1)
        harness.send(harness.row(plain.id))
        harness.tap.wait_for(plain.id, "job:completed")
        assert waits() == (2, 1)  # a day


def test_exhausted_retries_end_in_the_dead_letter_queue(harness: Harness) -> None:
    """The last attempt's failure is left to ``DeadLetters`` (no ``job:retrying`` for it):
    the job fails with that error, is in the dead-letter queue, and its lease is given back
    even though JobLifecycle does not release a failed message's lease itself."""
    job = harness.new_job("always_transient", max_attempts=2)
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, "job:failed")
        harness.wait_released(job.id)
    assert events == [("job:active", 2, "active", 1),
                      ("job:retrying", 3 + SEQ_BLOCK, "retrying", 1),
                      ("job:active", 4 + SEQ_BLOCK, "active", 2),
                      ("job:failed", 5 + 2 * SEQ_BLOCK, "failed", 2)]
    [(entry, view)] = harness.db.read(store.list_dead_letters, limit=10)
    assert (entry.job_id, entry.error_type, entry.attempts) == (job.id, "TransientError", 2)
    assert view.job.error == {"type": "TransientError", "message": "still down",
                              "retryable": True}
    assert harness.lifecycle._next_run == {}


def test_a_permanent_failure_is_not_retried(harness: Harness) -> None:
    """A failure another run cannot fix ends the job at once, with the original error."""
    job = harness.new_job("permanent", max_attempts=3)
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, "job:failed")
        harness.wait_released(job.id)
    assert events == [("job:active", 2, "active", 1), ("job:failed", 3 + SEQ_BLOCK, "failed", 1)]
    assert harness.row(job.id).error == {"type": "ValueError", "message": "bad input",
                                         "retryable": False}
    assert len(harness.runs) == 1


# -- messages that must not run (yet) --------------------------------------------------------------

def skipped(caplog: pytest.LogCaptureFixture) -> int:
    """How many messages Dramatiq's worker skipped (middleware raised SkipMessage)."""
    return sum(1 for r in caplog.records if "was skipped" in r.getMessage())


def test_a_paused_queue_holds_the_job_without_using_an_attempt(
        harness: Harness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """While its queue is paused a job's message stays in its owner's waiting list
    (server.infra.fair); one already in the broker's queue (sent before the pause) is put back
    (delayed) again and again, and its owner is told once that the job is paused. Neither
    uses an attempt or takes a lease. Resumed, each runs as attempt 1."""
    monkeypatch.setattr(pause, "PAUSED_RECHECK_MS", 50)
    caplog.set_level(logging.INFO)
    paused = keys.paused_queues(harness.prefix)
    harness.client.sadd(paused, QUEUE)
    job = harness.new_job("ok")
    waiting = harness.new_job("ok")
    with harness.worker():
        harness.send(waiting)
        # Straight to the broker's queue, as a message moved there before the pause.
        assert job.message_id is not None
        enqueue_job(harness.broker, job_id=job.id, message_id=job.message_id,
                    actor_name=TASK, queue_name=QUEUE, max_attempts=3)
        wait_until(lambda: skipped(caplog) >= 3, "the paused job skipped three times")
        held = harness.row(job.id)
        assert (held.state, held.stage, held.attempt) == ("queued", "paused", 0)
        assert harness.runs == [] and harness.lease(job.id) is None
        assert harness.broker.fair.waiting(QUEUE) == 1, "the other waits in its owner's list"
        assert harness.row(waiting.id).attempt == 0
        harness.client.srem(paused, QUEUE)
        events = harness.tap.wait_for(job.id, "job:completed")
        harness.tap.wait_for(waiting.id, "job:completed")
        harness.wait_released(job.id)
    assert events[0] == ("job:queued", 2, "queued", 0)
    # (Further job:queued events only move its place in line as the other job starts.)
    assert [(name, state, attempt) for name, _, state, attempt in events
            if name != "job:queued"] == [("job:active", "active", 1),
                                         ("job:completed", "completed", 1)]
    assert harness.tap.last(job.id)["stage"] == "done"
    assert next(e.job["stage"] for e in harness.tap.events) == "paused"
    assert sorted(harness.runs) == sorted([(job.id, 1, True), (waiting.id, 1, True)])
    assert harness.broker.fair.waiting(QUEUE) == 0


def test_a_job_leased_by_another_process_is_not_run_twice(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A redelivered message whose job another live process runs is put back for when that
    lease would have expired; it does not start, and does not release the other's lease.
    Once the other process is done (lease released) the message runs."""
    caplog.set_level(logging.INFO)
    elsewhere = Leases(harness.client, harness.prefix, ttl_ms=60_000)
    job = harness.new_job("ok")
    other = elsewhere.acquire(job.id)
    assert other is not None
    with harness.worker():
        harness.send(job)
        wait_until(lambda: skipped(caplog) >= 2, "the leased job skipped twice")
        assert harness.lease(job.id) == other.encode(), "the other's lease stands"
        assert harness.runs == [] and harness.tap.of(job.id) == []
        assert harness.row(job.id).attempt == 0
        elsewhere.release(job.id, other)
        events = harness.tap.wait_for(job.id, "job:completed")
        harness.wait_released(job.id)
    assert events == [("job:active", 2, "active", 1),
                      ("job:completed", 3 + SEQ_BLOCK, "completed", 1)]
    assert harness.runs == [(job.id, 1, True)]


def test_superseded_cancelled_and_deleted_jobs_are_skipped(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A stale copy (the sweeper sent a newer message), a cancelled job and a deleted one:
    each message is skipped without running, changing or announcing anything, and each
    lease taken for the check is given back. A good job sent after them still runs."""
    caplog.set_level(logging.INFO)
    stale, cancelled, after = harness.new_job("ok"), harness.new_job("ok"), harness.new_job("ok")
    harness.db.write(store.renew_message, job_id=stale.id,
                     changed_before=datetime.fromisoformat("2999-01-01T00:00:00+00:00"))
    assert harness.row(stale.id).message_id != stale.message_id
    harness.db.write(store.cancel_job, job_id=cancelled.id, user_id=None)
    with harness.worker():
        harness.send(stale)  # the old message id
        harness.send(cancelled)
        enqueue_job(harness.broker, job_id="no-such-job", message_id="m-gone", actor_name=TASK,
                    queue_name=QUEUE, max_attempts=1)
        harness.send(after)
        harness.tap.wait_for(after.id, "job:completed")
        wait_until(lambda: skipped(caplog) >= 3, "three skips")
        harness.wait_released(stale.id, cancelled.id, "no-such-job", after.id)
    assert harness.runs == [(after.id, 1, True)]
    assert harness.tap.moves(stale.id) == [] and harness.tap.moves(cancelled.id) == []
    assert (harness.row(stale.id).state, harness.row(stale.id).attempt) == ("queued", 0)
    assert (harness.row(cancelled.id).state, harness.row(cancelled.id).attempt) == (
        "cancelled", 0)
    reasons = " ".join(r.getMessage() for r in caplog.records
               if r.name == "workers.middleware.lifecycle")
    assert "the job no longer exists" in reasons
    assert f"message {stale.message_id} was superseded" in reasons
    assert "cannot go from cancelled to active" in reasons


def test_attempts_used_up_by_lost_workers_end_as_a_dead_letter(harness: Harness) -> None:
    """A job still active after as many deliveries as it has attempts (its worker died
    each time) is not run again: it fails as ``WorkerLost`` (retryable), lands in the
    dead-letter queue, and the lease taken for the check is given back."""
    job = harness.new_job("ok", max_attempts=2)
    for _ in range(2):  # two deliveries whose worker process never came back
        harness.db.write(store.begin_attempt, job_id=job.id)
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, "job:failed")
        harness.wait_released(job.id)
    assert events == [("job:failed", 4 + 2 * SEQ_BLOCK, "failed", 2)]
    assert harness.runs == []
    error = harness.row(job.id).error
    assert error == {"type": "WorkerLost", "retryable": True,
                     "message": "gave up after 2 attempts (its worker stopped unexpectedly)"}
    [(entry, _)] = harness.db.read(store.list_dead_letters, limit=10)
    assert (entry.job_id, entry.error_type, entry.traceback) == (job.id, "WorkerLost", None)


def test_a_cancellation_during_the_run_stands(harness: Harness) -> None:
    """Cancelled while running: a run that still finishes cannot complete the job, and one
    that stops (JobCancelled) is acknowledged without a retry; both leases are given back
    and neither job is announced as completed or retrying."""
    finishes, stops = harness.new_job("cancel_midway"), harness.new_job("cancel_and_stop")
    sentinel = harness.new_job("ok")
    with harness.worker():
        for job in (finishes, stops, sentinel):
            harness.send(job)
        harness.tap.wait_for(sentinel.id, "job:completed")
        harness.wait_released(finishes.id, stops.id, sentinel.id)
        wait_until(harness.queue_is_empty, "every message acknowledged")
    for job in (finishes, stops):
        assert harness.tap.moves(job.id) == [("job:active", "active", 1)]
        stored = harness.row(job.id)
        assert (stored.state, stored.result, stored.attempt) == ("cancelled", None, 1)
    assert [job_id for job_id, *_ in harness.runs] == [finishes.id, stops.id, sentinel.id]


class _Clock:
    """``time`` for the leases module, whose monotonic clock a test moves forward."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead_s


def test_a_run_hung_past_its_time_limit_is_taken_over_by_a_new_run_in_the_same_process(
        harness: Harness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A run blocked where Dramatiq's time limit cannot reach it (a lock wait, as a C call
    that never returns) holds its job only until it is overdue (twice its time limit and
    a grace; the test moves the leases' clock). A new message for the job (the sweeper's,
    once the lease is gone) is put back while the run is not overdue, then runs as the
    next attempt in the same process. The hung run, returning while that attempt still
    runs, changes nothing and leaves its lease alone; the new attempt completes."""
    caplog.set_level(logging.INFO)
    clock = _Clock()
    monkeypatch.setattr(leases_module, "time", clock)
    # Dramatiq's own time limit (10 minutes by default) never fires here: the leases'
    # clock is moved instead. (With a short one, its exception stays pending on the
    # blocked thread; under coverage's tracer, as in `make test`, that made this process
    # spin at full CPU until the test timed out: seen here, CPython 3.11, coverage 7.)
    first_blocked, second_blocked = threading.Event(), threading.Event()
    harness.on_run["hang"] = lambda job: (first_blocked if job.attempt == 1
                                          else second_blocked).wait()
    job = harness.new_job("hang")
    with harness.worker(threads=3):
        try:
            harness.send(job)
            wait_until(lambda: harness.runs == [(job.id, 1, True)], "the first run")
            renewed = harness.db.write(store.renew_message, job_id=job.id,
                                       changed_before=utcnow() + timedelta(seconds=1))
            assert renewed is not None
            harness.send(renewed)
            wait_until(lambda: skipped(caplog) >= 1, "the new message put back")
            assert harness.runs == [(job.id, 1, True)], "not overdue yet"
            clock.ahead_s = 3600.0
            wait_until(lambda: len(harness.runs) == 2, "the new run")
            assert harness.runs[1] == (job.id, 2, True)
            lease = harness.lease(job.id)
            first_blocked.set()  # the hung run returns at last, with a result
            wait_until(lambda: any("attempt 1 is over" in r.getMessage()
                                   for r in caplog.records), "the hung run's end refused")
            assert harness.lease(job.id) == lease, "the new run's lease stands"
            row = harness.row(job.id)
            assert (row.state, row.attempt) == ("active", 2)
            second_blocked.set()
            events = harness.tap.wait_for(job.id, "job:completed")
        finally:
            first_blocked.set()
            second_blocked.set()
        harness.wait_released(job.id)
        wait_until(harness.queue_is_empty, "every message acknowledged")
    assert [e for e in events if e[0] != "job:queued"] == [
        ("job:active", 2, "active", 1), ("job:active", 3 + SEQ_BLOCK, "active", 2),
        ("job:completed", 4 + 2 * SEQ_BLOCK, "completed", 2)]
    row = harness.row(job.id)
    assert (row.state, row.attempt, row.result) == ("completed", 2, {"answer": 2})


def test_progress_of_a_run_a_later_attempt_took_over_is_refused(harness: Harness) -> None:
    """A thread's progress writes name the attempt it runs: once a later attempt began, the
    earlier run's step is refused (JobCancelled stops it) and changes nothing."""
    job = harness.new_job("ok")
    first = harness.db.write(store.begin_attempt, job_id=job.id)
    second = harness.db.write(store.begin_attempt, job_id=job.id)
    assert first is not None and second is not None
    reporter = harness.lifecycle.reporter
    try:
        handoff.hand_over(first)
        with pytest.raises(JobCancelled):
            reporter.progress(job.id, "thumbnail", 40)
        row = harness.row(job.id)
        assert (row.stage, row.progress, row.seq) == ("stored", 0, second.job.seq)
        handoff.hand_over(second)
        # No job:active was published here, so there is no live state: the step goes to
        # the database (``server.core.live``).
        assert reporter.progress(job.id, "thumbnail", 40) == second.job.seq + 1 + SEQ_BLOCK
    finally:
        handoff.clear()


def test_a_job_that_cannot_be_started_is_not_run_and_not_lost(
        harness: Harness, outage: Outage, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The database is away when the message arrives, so the job cannot be marked active.
    The actor must not run on a job that was never started (Dramatiq only logs an error
    raised by a ``before_process_message`` hook and runs the actor anyway): the message is
    put back and the lease given back; once the database is back the job runs as attempt 1
    and completes."""
    monkeypatch.setattr(lifecycle, "START_RETRY_MS", 50)
    caplog.set_level(logging.INFO)
    job = harness.new_job("ok")
    # Should the actor run anyway, the database is back for it, as it may well be.
    harness.before_run[job.id] = outage.end
    outage.start()
    with harness.worker():
        harness.send(job)
        try:
            wait_until(lambda: any("could not start job" in r.getMessage()
                                   for r in caplog.records) or harness.runs
                       or not outage.down, "the start to fail")
        finally:
            outage.end()
        events = harness.tap.wait_for(job.id, "job:completed")
        harness.wait_released(job.id)
    assert harness.runs == [(job.id, 1, True)], "the actor ran only on the started job"
    assert events == [("job:active", 2, "active", 1),
                      ("job:completed", 3 + SEQ_BLOCK, "completed", 1)]
    assert harness.row(job.id).state == "completed"
    assert not [r for r in caplog.records if "Unexpected failure in before_process_message"
                in r.getMessage()]


def test_a_start_refreshes_positions_only_when_someone_waits(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's start refreshes the positions of the jobs waiting behind it (job:queued
    with the new position); with nobody waiting, it reads that and takes no write turn."""
    writes: list[str] = []
    write = harness.db.write

    def counting(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        writes.append(fn.__name__)
        return write(fn, *args, **kwargs)

    base = harness.lifecycle.reporter
    reporter = Reporter(harness.db, base.bus, base.presenter, send=base.send)  # unthrottled
    first, second = harness.new_job("ok"), harness.new_job("ok")
    monkeypatch.setattr(harness.db, "write", counting)
    assert reporter.begin_attempt(first.id, str(first.message_id)) is not None
    assert writes == ["begin_attempt", "advance_line"], "the second job waits"
    harness.tap.wait_for(second.id, "job:queued")
    assert harness.tap.last(second.id)["queue_position"] == 0
    writes.clear()
    assert reporter.begin_attempt(second.id, str(second.message_id)) is not None
    assert writes == ["begin_attempt"], "nobody waits: no refresh is written"


# -- progress steps pushed from Redis alone (server.core.live) -------------------------------------

def _live(harness: Harness, job_id: str) -> JobView:
    """The job as readers show it: its row with the live state laid over."""
    view = harness.db.read(store.get_job, job_id=job_id, user_id=None)
    assert view is not None
    live_views.lay_over([view], harness.lifecycle.reporter.bus.live_states([job_id]))
    return view


def run_steps(harness: Harness, steps: Callable[[Job], None],
              until: str) -> tuple[Job, list[tuple[str, int, str, int]]]:
    """A job whose actor calls ``steps``, run by a worker until its event ``until``, its
    lease given back and its message acknowledged; the job and its events."""
    harness.on_run["steps"] = steps
    job = harness.new_job("steps")
    with harness.worker():
        harness.send(job)
        events = harness.tap.wait_for(job.id, until)
        harness.wait_released(job.id)
        wait_until(harness.queue_is_empty, "the message acknowledged")
    return job, events


def test_steps_are_pushed_from_redis_alone_and_kept_when_the_attempt_ends(
        harness: Harness) -> None:
    """A running job's steps leave its row alone: each is one event with the next seq, and
    readers see it through the live state; the completion, past the attempt's block of
    seqs, keeps the steps in the timeline under the seqs they were pushed with."""
    seen: dict[str, Any] = {}

    def steps(job: Job) -> None:
        reporter = harness.lifecycle.reporter
        assert reporter.progress(job.id, "one", 30) == 3
        assert reporter.progress(job.id, "two", 20) == 4
        row = harness.row(job.id)
        seen["row"] = (row.stage, row.progress, row.seq)
        shown = _live(harness, job.id).job
        seen["shown"] = (shown.stage, shown.progress, shown.seq)

    job, events = run_steps(harness, steps, "job:completed")
    assert seen == {"row": ("stored", 0, 2),
                    "shown": ("two", 30, 4)}, "progress never goes back within an attempt"
    assert events == [("job:active", 2, "active", 1), ("job:progress", 3, "active", 1),
                      ("job:progress", 4, "active", 1),
                      ("job:completed", 3 + SEQ_BLOCK, "completed", 1)]
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [(r.seq, r.name, r.stage, r.progress) for r in timeline] == [
        (1, "job:queued", "stored", 0), (2, "job:active", "stored", 0),
        (3, "job:progress", "one", 30), (4, "job:progress", "two", 30),
        (3 + SEQ_BLOCK, "job:completed", "done", 100)]
    done = _live(harness, job.id).job
    assert (done.state, done.stage, done.seq) == ("completed", "done", 3 + SEQ_BLOCK)


def test_a_cancel_stops_the_run_at_its_next_pushed_step(harness: Harness) -> None:
    """Cancelled as the web cancels (the row, then its event, which marks the live state
    ended), the run's next step is refused: JobCancelled stops it, nothing is pushed, and
    the cancel's seq is past the steps pushed before it."""
    outcome: dict[str, Any] = {}

    def cancel_between_steps(job: Job) -> None:
        reporter = harness.lifecycle.reporter
        reporter.progress(job.id, "one", 30)
        view = harness.db.write(store.cancel_job, job_id=job.id, user_id=None)
        assert view is not None
        reporter.bus.publish(reporter.presenter.event(view))
        try:
            reporter.progress(job.id, "two", 60)
        except JobCancelled:
            outcome["stopped"] = True
            raise

    job, events = run_steps(harness, cancel_between_steps, "job:cancelled")
    assert outcome == {"stopped": True}
    assert events == [("job:active", 2, "active", 1), ("job:progress", 3, "active", 1),
                      ("job:cancelled", 3 + SEQ_BLOCK, "cancelled", 1)]
    assert harness.row(job.id).state == "cancelled"


def test_without_live_state_a_step_goes_to_the_database_and_seeds_it_again(
        harness: Harness) -> None:
    """The live state is gone (a Redis restart, its TTL): the next step is written to the
    row, as before, with a seq past the attempt's block; its event seeds the state again,
    so the step after is pushed from Redis alone."""
    rows: list[tuple[str, int, int]] = []

    def lose_the_state(job: Job) -> None:
        reporter = harness.lifecycle.reporter
        harness.client.delete(keys.job_live(harness.prefix, job.id))
        assert reporter.progress(job.id, "one", 30) == 3 + SEQ_BLOCK
        row = harness.row(job.id)
        rows.append((row.stage, row.progress, row.seq))
        assert reporter.progress(job.id, "two", 60) == 4 + SEQ_BLOCK
        row = harness.row(job.id)
        rows.append((row.stage, row.progress, row.seq))

    job, events = run_steps(harness, lose_the_state, "job:completed")
    assert rows == [("one", 30, 3 + SEQ_BLOCK)] * 2, "the second step left the row alone"
    assert [(name, seq) for name, seq, _, _ in events] == [
        ("job:active", 2), ("job:progress", 3 + SEQ_BLOCK), ("job:progress", 4 + SEQ_BLOCK),
        ("job:completed", 4 + 2 * SEQ_BLOCK)]
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [(r.seq, r.stage) for r in timeline][2:] == [
        (3 + SEQ_BLOCK, "one"), (4 + SEQ_BLOCK, "two"), (4 + 2 * SEQ_BLOCK, "done")]


@contextlib.contextmanager
def attempt_here(harness: Harness, job: Job) -> Iterator[tuple[Reporter, JobView]]:
    """Begin the job's next attempt as a worker does (its job:active published) and run
    the block as the thread of that attempt."""
    reporter = harness.lifecycle.reporter
    began = reporter.begin_attempt(job.id, str(job.message_id))
    assert began is not None
    handoff.hand_over(began)
    try:
        yield reporter, began
    finally:
        handoff.clear()


def age_the_row(job_id: str) -> None:
    """As if this thread's attempt last wrote the job's row ROW_EVERY_S ago."""
    run = handoff.run_of(job_id)
    assert run is not None
    run.written_at -= live.ROW_EVERY_S + 1


def test_a_run_taken_over_stops_at_its_next_pushed_step_and_its_steps_are_kept(
        harness: Harness) -> None:
    """A later attempt began (a takeover of a hung run) and seeded the live state: the
    earlier run's next push is refused (JobCancelled stops it), and the steps it had
    pushed still reach the timeline."""
    job = harness.new_job("ok")
    with attempt_here(harness, job) as (reporter, first):
        assert reporter.progress(job.id, "one", 30) == first.job.seq + 1
        second = reporter.begin_attempt(job.id, str(job.message_id))
        assert second is not None and second.job.seq == live.next_seq(first.job.seq, "active")
        with pytest.raises(JobCancelled):
            reporter.progress(job.id, "two", 60)
    assert [(name, seq) for name, seq, _, _ in harness.tap.of(job.id)] == [
        ("job:active", 2), ("job:progress", 3), ("job:active", 3 + SEQ_BLOCK)]
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [(r.seq, r.name, r.stage) for r in timeline][1:] == [
        (2, "job:active", "stored"), (3, "job:progress", "one"),
        (3 + SEQ_BLOCK, "job:active", "stored")]


def test_a_live_state_left_by_an_earlier_attempt_does_not_stop_the_next(
        harness: Harness) -> None:
    """The hash still names attempt 1, ended (attempt 2's job:active was never
    published): attempt 2's step is not refused but written to the row, which seeds the
    hash for the steps after it."""
    job = harness.new_job("ok")
    reporter = harness.lifecycle.reporter
    assert reporter.begin_attempt(job.id, str(job.message_id)) is not None
    reporter.transition(job.id, JobState.RETRYING, of_attempt=1)
    second = harness.db.write(store.begin_attempt, job_id=job.id)  # announced to no one
    assert second is not None
    try:
        handoff.hand_over(second)
        first_step = reporter.progress(job.id, "one", 30)
        assert first_step == live.next_seq(second.job.seq, "active")
        assert reporter.progress(job.id, "two", 60) == first_step + 1
    finally:
        handoff.clear()
    row = harness.row(job.id)
    assert (row.state, row.attempt, row.stage, row.seq) == ("active", 2, "one", first_step)


def test_a_cancel_whose_event_was_lost_stops_the_run_at_its_next_row_write(
        harness: Harness) -> None:
    """The cancel's event never went out (so the hash still says running): the run goes
    on pushing until its next step due to the database, which is refused: JobCancelled,
    and the steps it pushed still reach the timeline."""
    job = harness.new_job("ok")
    with attempt_here(harness, job) as (reporter, _):
        assert reporter.progress(job.id, "one", 30) == 3
        assert harness.db.write(store.cancel_job, job_id=job.id, user_id=None) is not None
        assert reporter.progress(job.id, "two", 40) == 4  # nobody told Redis
        age_the_row(job.id)
        with pytest.raises(JobCancelled):
            reporter.progress(job.id, "three", 50)
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [(r.seq, r.name, r.stage) for r in timeline][2:] == [
        (3, "job:progress", "one"), (4, "job:progress", "two"),
        (live.next_seq(2, "active"), "job:cancelled", "cancelled")]


def test_a_running_jobs_row_is_written_at_least_every_row_every_s(harness: Harness) -> None:
    """Steps are pushed from Redis alone until the row is ROW_EVERY_S old; the next goes
    to the database (so the row never lags far behind)."""
    job = harness.new_job("ok")
    with attempt_here(harness, job) as (reporter, _):
        assert reporter.progress(job.id, "one", 30) == 3
        assert harness.row(job.id).stage == "stored"
        age_the_row(job.id)
        written = reporter.progress(job.id, "two", 60)
        assert written == live.next_seq(2, "active")
        assert (harness.row(job.id).stage, harness.row(job.id).seq) == ("two", written)
        assert reporter.progress(job.id, "three", 90) == written + 1


def test_a_step_past_the_attempts_block_goes_to_the_database(harness: Harness) -> None:
    """An attempt pushes at most SEQ_BLOCK steps from Redis between writes: the next is
    written (keeping those before it in the timeline) and a new block begins."""
    seqs: list[int] = []

    def many_steps(job: Job) -> None:
        reporter = harness.lifecycle.reporter
        seqs.extend(reporter.progress(job.id, f"step {n}", 0) for n in range(SEQ_BLOCK + 2))

    job, _ = run_steps(harness, many_steps, "job:completed")
    written = live.next_seq(2, "active")  # the step after the block's last push
    assert seqs == [*range(3, 3 + SEQ_BLOCK), written, written + 1]
    timeline = harness.db.read(store.job_timeline, job_id=job.id)
    assert [r.seq for r in timeline] == [1, 2, *seqs, live.next_seq(written, "active")]


# -- a retry Redis refuses -------------------------------------------------------------------------

def test_a_retry_redis_refuses_is_left_unsent_for_the_sweeper(
        tmp_path: Path, make_harness: Callable[[str], Harness],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Redis refuses the retry's message (out of memory; dramatiq#545 would lose it): the
    job is still announced as ``job:retrying``, now under a new message id marked unsent,
    due at once, so the web's sweeper sends it; the lease is given back."""
    # Consumers that hit the refusal restart after this instead of 3 s.
    monkeypatch.setattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", 0.05)
    server = EmbeddedRedis(tmp_path / "redis", persistent=False, use_socket=False).start()
    try:
        harness = make_harness(server.url)

        def refuse_writes(job: Job) -> None:
            harness.client.config_set("maxmemory", 1)

        harness.on_run["refuse_retry"] = refuse_writes
        job = harness.new_job("refuse_retry", max_attempts=3)
        started = time.time()
        with harness.worker():
            harness.send(job)
            try:
                wait_until(lambda: harness.row(job.id).state == "retrying", "the retrying row")
            finally:
                harness.client.config_set("maxmemory", 0)
            events = harness.tap.wait_for(job.id, "job:retrying")
            harness.wait_released(job.id)
        assert events == [("job:active", 2, "active", 1),
                          ("job:retrying", 3 + SEQ_BLOCK, "retrying", 1)]
        stored = harness.row(job.id)
        assert stored.message_id != job.message_id and not stored.enqueued
        assert stored.error == {"type": "TransientError", "message": "still down",
                                "retryable": True}
        assert stored.run_at is not None
        assert started <= at(harness.tap.last(job.id)["run_at"]).timestamp() <= time.time()
        assert harness.runs == [(job.id, 1, True)]
        assert harness.lifecycle._next_run == {}
        refusals = [r for r in caplog.records if r.exc_info and "OOM" in str(r.exc_info[1])
                    and "after_process_message" in r.getMessage()]
        assert refusals, "Retries' enqueue was refused by Redis"
    finally:
        server.stop()


# -- the helpers -----------------------------------------------------------------------------------

def test_release_lease_gives_back_only_a_lease_this_message_took(harness: Harness) -> None:
    """The lease value on the message decides: without it (a skip before the lease was
    taken) nothing is released; with it, that run's lease goes, once. ``job_id_of`` is
    the only argument."""
    message = dramatiq.Message(queue_name=QUEUE, actor_name=TASK, args=("j1",), kwargs={},
                               options={})
    assert job_id_of(message) == "j1"
    elsewhere = Leases(harness.client, harness.prefix, ttl_ms=60_000)
    other = elsewhere.acquire("j1")
    assert other is not None
    release_lease(harness.leases, message)
    assert harness.lease("j1") == other.encode()
    elsewhere.release("j1", other)

    lease = harness.leases.acquire("j1")
    assert lease is not None
    message.options[lifecycle.LEASE_OPTION] = lease
    release_lease(harness.leases, message)
    assert harness.lease("j1") is None and harness.leases.held() == []
    assert lifecycle.LEASE_OPTION not in message.options
    again = harness.leases.acquire("j1")
    assert again is not None, "free again"
    release_lease(harness.leases, message)  # no value any more: the new lease stays
    assert harness.lease("j1") == again.encode()
    harness.leases.release("j1", again)
