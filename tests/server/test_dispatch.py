"""``server.services.dispatch``: handing stored jobs to the queue, against real Redis and a real
database.

The state these functions receive is built as ``server.web.app`` builds it: a ``Database``, an
asyncio Redis client, the deployment's ``RedisBroker`` (``build_broker``, under a namespace
of each test's own), local storage, the presenter and ``SentMarks``. Only the bus is a
recorder, so the events each call announces can be checked by name, job and position.

Proven here:
- ``enqueue`` puts the job's own message (id, actor, queue, per-job retries, delay) in
  Redis and notes it; with Redis unreachable it runs the undo and answers 503;
- ``SentMarks`` marks only rows whose message is still the one sent, keeps what a failed
  write could not note, and its loop survives a database outage;
- ``announce`` with a job's deliveries announces the change, then announces and sends each
  webhook delivery, and leaves those Redis refuses unsent for the sweeper;
- ``sweep`` resends exactly the jobs that would wait forever (unsent waiting jobs, silent
  active jobs without a lease whose message Dramatiq no longer holds), each under a new
  message id, delayed ones to their run_at;
- ``retry_failed`` requeues a dead letter under the same id with fresh attempts, refuses
  what cannot run again (404, 409 ``not_retryable`` / ``input_missing`` / ``conflict``),
  and puts the dead letter back when Redis refuses (503);
- ``announce`` publishes the stored state with the job's queue position.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import sqlalchemy.exc
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import update

from server.core import keys
from server.core.errors import ApiError
from server.core.events import JobEvent, decode_event
from server.core.jobs import JobState, queue_for
from server.core.tasks import WEBHOOK_DELIVER, TaskSpec
from server.data import store
from server.data.db import Database
from server.data.models import DeadLetter, Job, as_utc, utcnow
from server.data.store import JobView
from server.infra.broker import QUEUED_OPTION, build_broker
from server.infra.bus import Bus
from server.infra.settings import Settings
from server.infra.storage import LocalStorage
from server.services import dispatch
from server.services.presenter import Presenter
from server.services.sent_marks import SentMarks
from server.web.http.error_handlers import status_of
from tests.conftest import Databases

pytestmark = pytest.mark.integration

TASK = "test.echo"


@dataclass
class State:
    """The parts of the web app's state that dispatch uses (see ``server.web.app``)."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    broker: RedisBroker
    storage: LocalStorage
    presenter: Presenter
    sent: SentMarks
    published: list[JobEvent] = field(default_factory=list)
    announced: list[JobEvent] = field(default_factory=list)
    task_types: dict[str, TaskSpec] = field(default_factory=lambda: {
        TASK: TaskSpec(TASK, "echo", {"type": "object"})})

    async def publish(self, event: JobEvent) -> None:
        self.published.append(event)

    def announcement(self, event: JobEvent) -> tuple[str, str]:
        """``Bus.announcement``: the event handed to the queue's script with a send,
        recorded (it publishes to a channel nobody reads)."""
        self.announced.append(event)
        return (f"{self.settings.redis_prefix}:recorded",
                event.encode(published_at=time.time()))

    @property
    def bus(self) -> State:
        """The event bus: ``publish`` above records instead."""
        return self

    @property
    def namespace(self) -> str:
        return keys.dramatiq_namespace(self.settings.redis_prefix)

    def without_redis(self) -> State:
        """The same app, its broker pointed at a Redis that does not answer."""
        # Port 1: nothing listens there, and no test can take it (it is privileged).
        down = replace(self.settings, redis_url="redis://127.0.0.1:1/0")
        return replace(self, settings=down, broker=build_broker(down, maintenance=False),
                       published=self.published, announced=self.announced)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def state(redis_url: str, databases: Databases, tmp_path: Path) -> AsyncIterator[State]:
    settings = Settings(redis_url=redis_url, database_url=databases.new(),
                        redis_prefix=f"dispatch-{secrets.token_hex(4)}", data_dir=tmp_path,
                        storage_dir=tmp_path / "files", sweep_after_s=60,
                        worker_heartbeat_timeout_ms=20_000)
    db = Database(settings.database_url)
    await db.migrate()
    client = aioredis.Redis.from_url(redis_url)
    broker = build_broker(settings, maintenance=False)
    storage = LocalStorage(settings.storage_dir)
    storage.ensure_dirs()
    made = State(settings, db, client, broker, storage, Presenter("dispatch-secret", 3600),
                 SentMarks())
    yield made
    broker.close()
    await client.aclose()
    await db.dispose()


def in_queue(client: redis.Redis, namespace: str, queue: str) -> list[Message[Any]]:
    """The messages waiting for a worker in a queue: in Dramatiq's queue (in its order),
    then in their owners' lists (server.infra.fair; no worker runs in these tests, so there
    they stay)."""
    ids = client.lrange(keys.dramatiq_queue(namespace, queue), 0, -1)
    data = client.hmget(keys.dramatiq_messages(namespace, queue), ids) if ids else []
    prefix = namespace.removesuffix(":dramatiq")
    waiting = client.hgetall(keys.fair_messages(prefix, queue))
    found = [Message.decode(raw) for raw in [*data, *waiting.values()]]
    return sorted(found, key=lambda m: m.message_timestamp) if waiting else found


async def new_job(state: State, user_id: str = "u1", *, priority: str = "normal",
                  max_attempts: int = 3, task_type: str = TASK,
                  queue: str = "default") -> JobView:
    view: JobView = await state.db.write(store.create_job, user_id=user_id,
                                         task_type=task_type,
                                         queue=queue_for(queue, priority), payload={"n": 1},
                                         max_attempts=max_attempts, priority=priority)
    return view


async def row(state: State, job_id: str) -> Job:
    view = await state.db.read(store.get_job, job_id=job_id, user_id=None)
    assert view is not None, f"job {job_id} is gone"
    return view.job


async def set_row(app: State, job_id: str, **values: Any) -> None:
    """Put a row where a test needs it (states, ages) with one UPDATE."""
    await app.db.write(lambda s: s.execute(update(Job).where(Job.id == job_id).values(**values)))


async def fail_for_good(state: State, job_id: str, *, retryable: bool = True) -> None:
    """Run the job once and dead-letter it, as a worker does after its last attempt."""
    await state.db.write(store.begin_attempt, job_id=job_id)
    await state.db.write(store.dead_letter, job_id=job_id,
                         error={"type": "Boom", "message": "it broke", "retryable": retryable},
                         traceback="Traceback: boom")


async def undo_delete(state: State, job_id: str) -> None:
    await state.db.write(store.delete_job, job_id=job_id)


# -- enqueue and SentMarks ---------------------------------------------------------------------

async def test_enqueue_sends_the_jobs_own_message_and_notes_it_sent(
        state: State, sync_redis: redis.Redis) -> None:
    """The message in Redis is the stored job's: its message id, its only argument the job
    id, the priority's actor and queue, retries from the job's attempts; a delay puts it on
    the delay queue due then. The row is marked sent on the next flush, not before."""
    normal, high, later = (await new_job(state), await new_job(state, priority="high"),
                           await new_job(state, max_attempts=1))
    undone: list[str] = []

    async def undo() -> None:
        undone.append("undo")

    await dispatch.enqueue(state, normal, undo=undo)
    await dispatch.enqueue(state, high, undo=undo)
    before_ms = int(time.time() * 1000)
    await dispatch.enqueue(state, later, delay_s=30, undo=undo)
    assert undone == []

    [message] = in_queue(sync_redis, state.namespace, "default")
    assert (message.message_id, message.args, message.actor_name) == (
        normal.job.message_id, (normal.job.id,), TASK)
    assert message.options["max_retries"] == 2
    [message] = in_queue(sync_redis, state.namespace, "default.high")
    assert (message.message_id, message.actor_name) == (high.job.message_id, f"{TASK}@high")
    [message] = in_queue(sync_redis, state.namespace, "default.DQ")
    assert message.message_id == later.job.message_id
    assert message.options["max_retries"] == 0
    assert before_ms + 30_000 <= message.options["eta"] <= time.time() * 1000 + 30_000

    assert not (await row(state, normal.job.id)).enqueued, "noted in one later write"
    await state.sent.flush(state.db)
    for view in (normal, high, later):
        assert (await row(state, view.job.id)).enqueued


async def test_enqueue_with_redis_down_undoes_the_job_and_answers_503(
        state: State, sync_redis: redis.Redis) -> None:
    """No 202 without a message: the undo runs (the row is deleted), the caller gets 503
    ``queue_unavailable``, nothing is noted as sent and nothing reached any queue."""
    view = await new_job(state)
    down = state.without_redis()
    try:
        with pytest.raises(ApiError) as refused:
            await dispatch.enqueue(down, view, undo=lambda: undo_delete(state, view.job.id))
    finally:
        down.broker.close()
    assert (status_of(refused.value), refused.value.code) == (503, "queue_unavailable")
    assert await state.db.read(store.get_job, job_id=view.job.id, user_id=None) is None
    assert in_queue(sync_redis, state.namespace, "default") == []
    await state.sent.flush(state.db)
    assert state.sent._pending == {}


async def test_sent_marks_skip_superseded_messages_and_survive_a_failed_write(
        state: State, tmp_path: Path) -> None:
    """A note names the message that was sent: a row whose message was renewed meanwhile
    stays unsent. A flush the database refuses raises and keeps every note for the next
    one, which then marks the rows."""
    first, renewed, third = await new_job(state), await new_job(state), await new_job(state)
    marks = SentMarks()
    for view in (first, renewed, third):
        marks.add(view.job)
    await set_row(state, renewed.job.id, message_id="a-newer-message")

    broken = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    try:
        with pytest.raises(OSError):
            await marks.flush(broken)
    finally:
        await broken.dispose()
    assert marks._pending == {v.job.id: v.job.message_id for v in (first, renewed, third)}
    assert not (await row(state, first.job.id)).enqueued

    await marks.flush(state.db)
    assert marks._pending == {}
    assert (await row(state, first.job.id)).enqueued
    assert (await row(state, third.job.id)).enqueued
    assert not (await row(state, renewed.job.id)).enqueued, "its message is not that one"
    await marks.flush(state.db)  # nothing pending: nothing to write


async def test_sent_marks_loop_flushes_periodically_and_outlasts_a_database_outage(
        state: State, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``run`` flushes every FLUSH_S; while the database is away it logs and keeps the
    notes, and against a working database the rows get marked without any explicit flush."""
    view = await new_job(state)
    marks = SentMarks()
    marks.FLUSH_S = 0.02
    marks.add(view.job)
    broken = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    failing = asyncio.create_task(marks.run(broken))
    try:
        deadline = time.monotonic() + 10
        while sum("could not note sent messages" in r.getMessage()
                  for r in caplog.records) < 2:
            assert time.monotonic() < deadline, "the loop did not retry"
            assert not failing.done(), "the loop must survive a failed flush"
            await asyncio.sleep(0.01)
    finally:
        failing.cancel()
        await asyncio.gather(failing, return_exceptions=True)
        await broken.dispose()
    assert marks._pending == {view.job.id: view.job.message_id}

    working = asyncio.create_task(marks.run(state.db))
    try:
        deadline = time.monotonic() + 10
        # Both, before the loop is cancelled: a cancel that lands after the commit but
        # before the flush resumes puts the notes back (marking twice is harmless).
        while marks._pending or not (await row(state, view.job.id)).enqueued:
            assert time.monotonic() < deadline, "the loop never flushed"
            await asyncio.sleep(0.02)
    finally:
        working.cancel()
        await asyncio.gather(working, return_exceptions=True)


# -- webhook deliveries ------------------------------------------------------------------------

async def cancelled_with_deliveries(state: State,
                                    urls: list[str]) -> tuple[JobView, list[JobView]]:
    """Cancel a job of a user with webhooks, as DELETE … cancel does; it and its deliveries."""
    for url in urls:
        await state.db.write(store.create_webhook, user_id="hooked", url=url)
    job = await new_job(state, user_id="hooked")
    view, deliveries = await state.db.write(
        store.end_with_deliveries, change=store.cancel_job, webhook=state.presenter.webhook,
        job_id=job.job.id, user_id="hooked")
    assert view is not None and view.job.state == JobState.CANCELLED.value
    assert len(deliveries) == len(urls)
    return view, list(deliveries)


async def test_announce_sends_each_delivery_after_the_change(
        state: State, sync_redis: redis.Redis) -> None:
    """The cancellation is announced first, then each delivery to its owner as
    ``job:queued``, and each delivery's message reaches the webhooks queue; all are noted
    sent."""
    view, deliveries = await cancelled_with_deliveries(state, ["https://a.example/h",
                                                               "https://b.example/h"])
    job = await dispatch.announce(state, view, deliveries=deliveries)

    assert job["id"] == view.job.id and job["state"] == JobState.CANCELLED.value
    assert [(e.name, e.user_id, e.job["id"], e.job["type"]) for e in state.published] == [
        ("job:cancelled", "hooked", view.job.id, TASK),
        *[("job:queued", "hooked", d.job.id, WEBHOOK_DELIVER.name) for d in deliveries]]
    assert state.published[0].job == job
    sent = in_queue(sync_redis, state.namespace, WEBHOOK_DELIVER.queue)
    assert [(m.message_id, m.args) for m in sent] == [
        (d.job.message_id, (d.job.id,)) for d in deliveries]
    await state.sent.flush(state.db)
    for delivery in deliveries:
        assert (await row(state, delivery.job.id)).enqueued


async def test_deliveries_redis_refuses_are_announced_and_left_for_the_sweeper(
        state: State, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """With Redis refusing, every delivery is still announced, none is noted sent (so the
    sweeper will send them), each refusal is logged, and the call itself does not fail."""
    view, deliveries = await cancelled_with_deliveries(state, ["https://a.example/h",
                                                               "https://b.example/h"])
    down = state.without_redis()
    try:
        await dispatch.announce(down, view, deliveries=deliveries)
    finally:
        down.broker.close()
    assert [e.job["id"] for e in state.published] == [view.job.id,
                                                       *[d.job.id for d in deliveries]]
    assert in_queue(sync_redis, state.namespace, WEBHOOK_DELIVER.queue) == []
    assert state.sent._pending == {}
    left = [r for r in caplog.records if "left for the sweeper" in r.getMessage()]
    assert len(left) == 2
    for delivery in deliveries:
        assert not (await row(state, delivery.job.id)).enqueued


# -- the sweeper -------------------------------------------------------------------------------

async def test_sweep_resends_exactly_the_jobs_that_would_wait_forever(
        state: State, sync_redis: redis.Redis) -> None:
    """Resent, each under a new message id: a queued job never sent, a retrying one never
    sent (delayed to its run_at), an active one silent past three heartbeat timeouts whose
    lease is gone, and one whose message Dramatiq still holds but which has been silent
    past HELD_GRACE_S more. Left alone: recent changes, sent ones, leased ones, finished
    ones, and a silent active one whose message Dramatiq still holds (a killed worker's:
    Dramatiq redelivers it) within that grace."""
    now = utcnow()
    old = now - timedelta(minutes=5)
    jobs = {name: await new_job(state) for name in (
        "unsent", "unsent_recent", "sent", "retrying", "silent", "leased", "active_recent",
        "completed", "held", "held_long")}

    async def make(name: str, **values: Any) -> str:
        job_id = jobs[name].job.id
        await set_row(state, job_id, **values)
        return job_id

    await make("unsent", updated_at=old)
    await make("sent", enqueued=True, updated_at=old)
    run_at = now + timedelta(seconds=40)
    await make("retrying", state=JobState.RETRYING.value, run_at=run_at, updated_at=old)
    await make("silent", state=JobState.ACTIVE.value, enqueued=True, attempt=1, updated_at=old)
    leased = await make("leased", state=JobState.ACTIVE.value, enqueued=True, attempt=1,
                        updated_at=old)
    await make("active_recent", state=JobState.ACTIVE.value, enqueued=True, attempt=1,
               updated_at=now)
    await make("completed", state=JobState.COMPLETED.value, updated_at=old)
    silent_s = max(state.settings.sweep_after_s,
                   3 * state.settings.worker_heartbeat_timeout_ms / 1000)
    await make("held", state=JobState.ACTIVE.value, enqueued=True, attempt=1,
               updated_at=now - timedelta(seconds=silent_s + 5))
    assert silent_s + dispatch.HELD_GRACE_S < 5 * 60
    await make("held_long", state=JobState.ACTIVE.value, enqueued=True, attempt=1,
               updated_at=old)
    # As a killed worker leaves them: unacknowledged, their bodies still in the queue's hash.
    for name in ("held", "held_long"):
        body = {"queue_name": "default", "actor_name": "image.process",
                "args": [jobs[name].job.id], "kwargs": {}, "options": {},
                "message_id": jobs[name].job.message_id, "message_timestamp": 0}
        sync_redis.hset(keys.dramatiq_messages(state.namespace, "default"), f"rid-{name}",
                        json.dumps(body))
    sync_redis.set(keys.job_lease(state.settings.redis_prefix, leased), "another-worker",
                   px=60_000)

    assert await dispatch.sweep(state) == 4

    resent = {name: await row(state, jobs[name].job.id) for name in jobs}
    for name, job in resent.items():
        changed = job.message_id != jobs[name].job.message_id
        assert changed == (name in {"unsent", "retrying", "silent", "held_long"}), name
    queued = in_queue(sync_redis, state.namespace, "default")
    assert sorted((m.message_id, m.args[0]) for m in queued) == sorted(
        (resent[n].message_id, resent[n].id) for n in ("unsent", "silent", "held_long"))
    [delayed] = in_queue(sync_redis, state.namespace, "default.DQ")
    assert (delayed.message_id, delayed.args[0]) == (resent["retrying"].message_id,
                                                     resent["retrying"].id)
    due_ms = as_utc(run_at).timestamp() * 1000
    assert due_ms - 2000 <= delayed.options["eta"] <= due_ms + 2000
    assert resent["retrying"].state == JobState.RETRYING.value, "still waiting for its turn"

    await state.sent.flush(state.db)
    for name in ("unsent", "retrying", "silent", "held_long"):
        assert (await row(state, jobs[name].job.id)).enqueued, name
    assert await dispatch.sweep(state) == 0, \
        "a renewal counts as a change: the new messages get their time to start"
    sync_redis.delete(keys.job_lease(state.settings.redis_prefix, leased))

    # Once Dramatiq has let go of it (acknowledged, the run died after), it is resent.
    sync_redis.hdel(keys.dramatiq_messages(state.namespace, "default"), "rid-held")
    assert await dispatch.sweep(state) == 2, "the unleased one, the held one"
    assert (await row(state, jobs["held"].job.id)).message_id != jobs["held"].job.message_id
    # A renewed one whose new run never started either is renewed again once silent.
    await make("silent", updated_at=old)
    assert await dispatch.sweep(state) == 1


async def test_sweep_resends_a_delayed_message_a_live_worker_lost(
        state: State, sync_redis: redis.Redis) -> None:
    """Dramatiq's consumer keeps fetched delayed messages in memory and forgets them after
    a Redis connection error, while they stay unacknowledged in its name (so Dramatiq
    redelivers them only when that worker dies): one still held by a live worker
    SWEEP_AFTER_S after it was due is resent at once, under a new message id. Left alone:
    one due more recently, one held by a dead worker (Dramatiq's own maintenance requeues
    those), and a job already waiting on another message."""
    now = utcnow()
    now_ms = now.timestamp() * 1000
    late_ms = now_ms - (state.settings.sweep_after_s + 30) * 1000
    jobs = {name: await new_job(state) for name in ("lost", "due_now", "dead_worker", "moved")}
    heartbeats = keys.dramatiq_heartbeats(state.namespace)
    sync_redis.zadd(heartbeats, {"live-worker": now_ms - 1000, "dead-worker": now_ms - 600_000})
    delay_queue = keys.dramatiq_delay_queue("default")
    for name, eta, worker in (("lost", late_ms, "live-worker"),
                              ("due_now", now_ms - 10_000, "live-worker"),
                              ("dead_worker", late_ms, "dead-worker"),
                              ("moved", late_ms, "live-worker")):
        job = jobs[name].job
        await set_row(state, job.id, state=JobState.RETRYING.value, enqueued=True,
                      run_at=utcnow() - timedelta(minutes=2),
                      updated_at=now - timedelta(minutes=2))
        body = {"queue_name": delay_queue, "actor_name": TASK, "args": [job.id],
                "kwargs": {}, "options": {"eta": eta, "redis_message_id": f"rid-{name}"},
                "message_id": job.message_id, "message_timestamp": 0}
        sync_redis.hset(keys.dramatiq_messages(state.namespace, delay_queue), f"rid-{name}",
                        json.dumps(body))
        sync_redis.sadd(keys.dramatiq_acks(state.namespace, worker, delay_queue),
                        f"rid-{name}")
    await set_row(state, jobs["moved"].job.id, message_id="a-newer-message")

    assert await dispatch.sweep(state) == 1
    after = {name: await row(state, view.job.id) for name, view in jobs.items()}
    assert after["lost"].message_id != jobs["lost"].job.message_id
    assert after["lost"].state == JobState.RETRYING.value
    [resent] = in_queue(sync_redis, state.namespace, "default")
    assert (resent.message_id, resent.args[0]) == (after["lost"].message_id,
                                                   after["lost"].id), "due: not delayed"
    for name in ("due_now", "dead_worker"):
        assert after[name].message_id == jobs[name].job.message_id, name
    assert after["moved"].message_id == "a-newer-message"
    await state.sent.flush(state.db)
    assert await dispatch.sweep(state) == 0, "its lost copy is superseded now"


# -- dead-letter retries -----------------------------------------------------------------------

async def test_retry_failed_requeues_a_dead_letter_under_the_same_id(
        state: State, sync_redis: redis.Redis) -> None:
    """The job is queued again with fresh attempts and no error, out of the dead-letter
    queue, under a new message that is in Redis; ``job:queued`` is announced with its
    position, and the <Job> returned is the one announced."""
    ahead = await new_job(state)
    view = await new_job(state)
    await fail_for_good(state, view.job.id)
    dead = await row(state, view.job.id)

    job = await dispatch.retry_failed(state, view.job.id)

    stored = await row(state, view.job.id)
    assert (stored.state, stored.attempt, stored.error, stored.progress) == (
        JobState.QUEUED.value, 0, None, 0)
    assert stored.message_id not in (None, dead.message_id)
    assert stored.seq == dead.seq + 1
    assert await state.db.read(store.dead_letter_ids) == []
    [message] = [m for m in in_queue(sync_redis, state.namespace, "default")
                 if m.args[0] == view.job.id]
    assert message.message_id == stored.message_id
    # Its wait (workers' JobTimings) counts from the retry, which the message says; a
    # new job's message says nothing (its wait counts from when it was made).
    assert message.options[QUEUED_OPTION] == int(
        as_utc(stored.updated_at).timestamp() * 1000)
    await dispatch.send(state, ahead.job)
    [first] = [m for m in in_queue(sync_redis, state.namespace, "default")
               if m.args[0] == ahead.job.id]
    assert QUEUED_OPTION not in first.options
    assert state.published == [], "announced with the send"
    [event] = state.announced
    assert (event.name, event.user_id, event.job["id"]) == ("job:queued", "u1", view.job.id)
    assert event.job["queue_position"] == 1, f"behind {ahead.job.id}"
    assert job == event.job and job["state"] == "queued" and job["attempt"] == 0
    assert state.sent._pending == {view.job.id: stored.message_id}


async def test_retrying_a_batch_job_makes_the_batchs_next_summaries_news_again(
        state: State, sync_redis: redis.Redis) -> None:
    """The batch counts one finished job fewer after the retry: the note of the last
    summary published (which would drop those counting fewer) goes; another batch's
    stays."""
    view = await new_job(state)
    await set_row(state, view.job.id, batch_id="B1")
    await fail_for_good(state, view.job.id)
    prefix = state.settings.redis_prefix
    for batch_id in ("B1", "B2"):
        sync_redis.set(keys.batch_shown(prefix, batch_id), 1)
    await dispatch.retry_failed(state, view.job.id)
    assert sync_redis.get(keys.batch_shown(prefix, "B1")) is None
    assert sync_redis.get(keys.batch_shown(prefix, "B2")) == b"1"


async def test_retry_failed_refuses_what_cannot_run_again(state: State) -> None:
    """404 for an unknown job, another user's job, or a failed job outside the dead-letter
    queue when only dead letters may be retried; 409 ``not_retryable`` for a permanent
    failure when only retryable ones may; 409 ``conflict`` for a job that is not failed.
    Nothing is announced or changed by a refusal."""
    async def refused(job_id: str, **kwargs: Any) -> tuple[int, str, str]:
        with pytest.raises(ApiError) as caught:
            await dispatch.retry_failed(state, job_id, **kwargs)
        return status_of(caught.value), caught.value.code, caught.value.message

    assert await refused("nope") == (404, "not_found", "dead letter not found")
    permanent = await new_job(state)
    await fail_for_good(state, permanent.job.id, retryable=False)
    assert await refused(permanent.job.id, user_id="someone-else") == (
        404, "not_found", "job not found")
    assert (await refused(permanent.job.id, user_id="u1", retryable_only=True))[:2] == (
        409, "not_retryable")
    queued = await new_job(state)
    assert (await refused(queued.job.id, dead_letters_only=False))[:2] == (409, "conflict")

    # Failed, but its dead letter was cleared by an admin: only the owner's retry finds it.
    cleared = await new_job(state)
    await fail_for_good(state, cleared.job.id)
    assert await state.db.write(store.delete_dead_letter, job_id=cleared.job.id)
    assert await refused(cleared.job.id) == (404, "not_found", "dead letter not found")
    job = await dispatch.retry_failed(state, cleared.job.id, user_id="u1",
                                      dead_letters_only=False, retryable_only=True)
    assert job["state"] == "queued"

    assert [e.job["id"] for e in state.announced] == [cleared.job.id]
    assert (await row(state, permanent.job.id)).state == JobState.FAILED.value
    assert (await row(state, queued.job.id)).state == JobState.QUEUED.value


async def test_retry_failed_refuses_an_image_job_whose_image_is_gone(state: State) -> None:
    """409 ``input_missing`` when the original file was deleted, and when the image row
    is gone; with the original in place the same job runs again."""
    image_id = secrets.token_hex(16)
    view = await state.db.write(
        store.create_image_job, image_id=image_id, user_id="u1", filename="a.jpg",
        content_type="image/jpeg", size_bytes=3, sha256=secrets.token_hex(32), fmt="JPEG",
        width=1, height=1, task_type="image.process", queue="images", max_attempts=2)
    await fail_for_good(state, view.job.id)

    with pytest.raises(ApiError) as no_file:
        await dispatch.retry_failed(state, view.job.id)
    assert (status_of(no_file.value), no_file.value.code) == (409, "input_missing")

    original = state.storage.original(image_id)
    original.parent.mkdir(parents=True, exist_ok=True)
    original.write_bytes(b"abc")
    job = await dispatch.retry_failed(state, view.job.id)
    assert job["state"] == "queued" and job["image_id"] == image_id

    await set_row(state, view.job.id, state=JobState.FAILED.value)
    assert await state.db.write(store.delete_image, image_id=image_id, user_id=None)
    with pytest.raises(ApiError) as no_image:
        await dispatch.retry_failed(state, view.job.id, dead_letters_only=False)
    assert (status_of(no_image.value), no_image.value.code) == (409, "input_missing")


async def test_retry_failed_with_redis_down_puts_the_dead_letter_back(
        state: State, caplog: pytest.LogCaptureFixture) -> None:
    """Redis refusing the message: 503, and the job is failed again with its dead letter
    and its error as they were (so its owner may still retry it once Redis is back),
    nothing announced, nothing noted sent."""
    caplog.set_level(logging.WARNING, logger="server.services.dispatch")
    view = await new_job(state)
    await fail_for_good(state, view.job.id)
    before = await state.db.read(lambda s: s.get(DeadLetter, view.job.id))
    down = state.without_redis()
    try:
        with pytest.raises(ApiError) as refused:
            await dispatch.retry_failed(down, view.job.id)
    finally:
        down.broker.close()
    assert (status_of(refused.value), refused.value.code) == (503, "queue_unavailable")
    stored = await row(state, view.job.id)
    assert stored.state == JobState.FAILED.value
    assert stored.error == {"type": "Boom", "message": "it broke", "retryable": True}
    after = await state.db.read(lambda s: s.get(DeadLetter, view.job.id))
    assert after is not None and before is not None
    assert (after.error_type, after.error_message, after.traceback, after.attempts) == (
        before.error_type, before.error_message, before.traceback, before.attempts)
    # Its job:queued went with the refused send: never published.
    assert state.published == [] and state.sent._pending == {}
    assert any(view.job.id in r.getMessage() for r in caplog.records)
    # Redis is back: the owner's own retry (only retryable failures) goes through.
    job = await dispatch.retry_failed(state, view.job.id, user_id="u1",
                                      dead_letters_only=False, retryable_only=True)
    assert job["state"] == "queued"


# -- announce ----------------------------------------------------------------------------------

async def test_announce_publishes_the_stored_state_with_its_queue_position(
        state: State) -> None:
    """Without a position it is read (jobs ahead in the queue family); a given one, or
    None, is used as is; the <Job> returned is the one published."""
    first, second = await new_job(state), await new_job(state)
    high = await new_job(state, priority="high")

    read = await dispatch.announce(state, second)
    given = await dispatch.announce(state, first, position=7)
    unknown = await dispatch.announce(state, high, position=None)

    assert read["queue_position"] == 2, "behind the first job and the high-priority one"
    assert given["queue_position"] == 7
    assert unknown["queue_position"] is None
    assert [(e.name, e.user_id, e.job["id"]) for e in state.published] == [
        ("job:queued", "u1", second.job.id), ("job:queued", "u1", first.job.id),
        ("job:queued", "u1", high.job.id)]
    assert [e.job for e in state.published] == [read, given, unknown]
    assert read["seq"] == second.job.seq and isinstance(read["created_at"], str)


async def test_enqueue_publishes_job_queued_in_the_step_that_sends_the_message(
        state: State, sync_redis: redis.Redis) -> None:
    """With the real bus: a message for now goes in one script call with its job's
    ``job:queued`` (published by that script, so no worker can begin the job first),
    never through a publish of its own; a delayed one is announced once sent. Each
    reaches a subscriber once, with the job's position, and is noted sent."""
    ahead, view, later = await new_job(state), await new_job(state), await new_job(state)
    bus = Bus(state.redis, state.settings.redis_prefix)
    published_alone: list[str] = []
    real_publish = bus.publish

    async def publish(event: Any) -> None:
        published_alone.append(event.job["id"])
        await real_publish(event)

    bus.publish = publish  # type: ignore[method-assign]
    real = SimpleNamespace(**{name: getattr(state, name) for name in (
        "settings", "db", "redis", "broker", "presenter", "sent")}, bus=bus)
    pubsub = state.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(state.settings.redis_prefix))
    scripts: list[str] = []
    script = state.broker.fair._script

    def counted(*args: Any, **kwargs: Any) -> Any:
        scripts.append("fair")
        return script(*args, **kwargs)

    state.broker.fair._script = counted  # type: ignore[method-assign]

    async def undo() -> None:
        raise AssertionError("not undone")

    try:
        job = await dispatch.enqueue(real, view, undo=undo)  # type: ignore[arg-type]
        assert scripts == ["fair"], "the send and its event: one script call"
        delayed = await dispatch.enqueue(real, later, undo=undo,  # type: ignore[arg-type]
                                         delay_s=60)
    finally:
        state.broker.fair._script = script  # type: ignore[method-assign]
    received = []
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            received.append(decode_event(message["data"]))
    await pubsub.aclose()
    # (The delayed one's row has no run_at here: it counts as waiting.)
    assert [(e.name, e.job["id"], e.job["queue_position"]) for e in received] == [
        ("job:queued", view.job.id, 1), ("job:queued", later.job.id, 2)]
    assert [e.job for e in received] == [job, delayed]
    assert published_alone == [later.job.id], "only the delayed one's after its send"
    assert [m.args[0] for m in in_queue(sync_redis, state.namespace, "default")] == [
        view.job.id], "sent (the delayed one waits in the delay queue)"
    assert set(state.sent._pending) == {view.job.id, later.job.id}
    assert ahead.job.id not in state.sent._pending


async def test_a_job_whose_position_cannot_be_read_is_announced_with_its_send(
        state: State, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database answers no queue position: the job's job:queued still goes with its
    message, without a position (never after it, when a worker could have begun it)."""
    view = await new_job(state)
    real_read = state.db.read

    async def read(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if fn is store.queue_position:
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return await real_read(fn, *args, **kwargs)

    monkeypatch.setattr(state.db, "read", read)

    async def undo() -> None:
        raise AssertionError("not undone")

    job = await dispatch.enqueue(state, view, undo=undo)
    assert job["queue_position"] is None and job["state"] == "queued"
    assert state.published == [], "no publish of its own"
    [event] = state.announced
    assert event.job == job
    assert [m.args[0] for m in in_queue(sync_redis, state.namespace, "default")] == [
        view.job.id]
