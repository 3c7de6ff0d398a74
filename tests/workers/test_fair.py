"""server.infra.fair against a real Redis: turns round-robin across users, the broker's queue kept
shallow, the per-user cap, priorities, pauses and worker liveness (no worker processes)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq import Message

from server.core import keys
from server.core.errors import ApiError
from server.core.events import decode_event
from server.infra.broker import build_broker, enqueue_job
from server.infra.fair import USER_OPTION, FairQueues
from server.infra.settings import Settings
from server.services import outbound, submit
from server.web.app import create_app
from server.web.http.error_handlers import status_of
from tests.conftest import Databases
from tests.factories import auth, jpeg_bytes

pytestmark = pytest.mark.integration

BASE = "images"


class Deployment:
    def __init__(self, client: redis.Redis, *, per_user_cap: int = 0) -> None:
        self.client = client
        self.prefix = f"fair-{secrets.token_hex(4)}"
        self.namespace = keys.dramatiq_namespace(self.prefix)
        self.fair = FairQueues(client, prefix=self.prefix, heartbeat_timeout_ms=10_000,
                               per_user_cap=per_user_cap, stale_ms=600_000)

    def worker(self, threads: int, name: str = "w1", *, beat_ms_ago: int = 0,
               per_user_cap: int | None = None) -> None:
        """A worker whose heartbeat is ``beat_ms_ago`` old, offering ``threads``."""
        self.client.zadd(keys.dramatiq_heartbeats(self.namespace),
                         {name: int(time.time() * 1000) - beat_ms_ago})
        self.fair.offer_threads(name, [BASE], threads, per_user_cap)

    def send(self, user: str, n: int = 1, queue: str = BASE) -> list[Message[object]]:
        sent = []
        for _ in range(n):
            message: Message[object] = Message(
                queue_name=queue, actor_name="image.process", args=(f"job-{user}",),
                kwargs={}, options={USER_OPTION: user})
            sent.append(self.fair.push(message, user))
        return sent

    def in_broker(self, queue: str = BASE) -> list[str]:
        """The owners of the messages in Dramatiq's queue, in its order."""
        ids = self.client.lrange(keys.dramatiq_queue(self.namespace, queue), 0, -1)
        if not ids:
            return []
        data = self.client.hmget(keys.dramatiq_messages(self.namespace, queue), ids)
        return [str(Message.decode(raw).options[USER_OPTION]) for raw in data]

    def take(self, queue: str = BASE) -> Message[object]:
        """What a worker does: fetch the first message of the queue (then run it)."""
        rid = self.client.lpop(keys.dramatiq_queue(self.namespace, queue))
        assert rid is not None
        raw = self.client.hget(keys.dramatiq_messages(self.namespace, queue), rid)
        self.client.hdel(keys.dramatiq_messages(self.namespace, queue), rid)
        return Message.decode(raw)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()


def test_users_take_turns_and_the_broker_queue_stays_shallow(client: redis.Redis) -> None:
    """A's backlog of 10 then B's one: Dramatiq's queue holds no more than the workers'
    threads, B's message goes in at the next turn, and every message gets there once."""
    d = Deployment(client)
    d.send("A", 10)
    assert d.in_broker() == [], "no live worker: everything waits in its owner's list"
    d.send("B")
    d.worker(threads=2)
    assert d.fair.dispatch(BASE) == 2
    assert d.in_broker() == ["A", "B"], "A's first, then B's turn, not A's backlog"
    assert d.fair.dispatch(BASE) == 0, "the queue is as deep as the threads"
    ran: list[str] = []
    while d.in_broker():
        message = d.take()
        ran.append(str(message.options[USER_OPTION]))
        d.fair.release(message)  # the worker ended it: the next turn moves in
    assert ran == ["A", "B"] + ["A"] * 9
    assert d.fair.waiting(BASE) == 0


def test_a_user_at_the_in_flight_cap_waits_while_others_go(client: redis.Redis) -> None:
    """With a cap of 2, each user has at most two messages between the move and their
    end, though threads are free; when one of A's ends, A's next moves."""
    d = Deployment(client, per_user_cap=2)
    d.worker(threads=8)
    d.send("A", 5)
    d.send("B", 3)
    assert d.in_broker() == ["A", "A", "B", "B"], "moved as they came: threads were free"
    first = d.take()
    assert first.options[USER_OPTION] == "A"
    assert d.fair.release(first) == 1
    assert d.in_broker() == ["A", "B", "B", "A"] and d.fair.waiting(BASE) == 3


def test_the_workers_serving_a_family_set_its_per_user_cap(client: redis.Redis) -> None:
    """The I/O worker sets DELIVERIES_IN_FLIGHT_PER_USER for its families: that cap holds
    there whatever the sender's own setting says."""
    d = Deployment(client, per_user_cap=16)
    d.worker(threads=8, per_user_cap=1)
    d.send("A", 3)
    d.send("B", 1)
    assert d.in_broker() == ["A", "B"]


def test_higher_priorities_take_the_free_places_first(client: redis.Redis) -> None:
    d = Deployment(client)
    d.send("A", 3)
    d.send("B", 1, queue=f"{BASE}.high")
    d.worker(threads=2)
    d.fair.dispatch(BASE)
    assert d.in_broker(f"{BASE}.high") == ["B"] and d.in_broker() == ["A"]


def test_nothing_moves_while_paused_or_without_a_live_worker(client: redis.Redis) -> None:
    d = Deployment(client)
    d.send("A", 2)
    d.worker(threads=4, beat_ms_ago=60_000)  # its heartbeat is older than the timeout
    assert d.fair.dispatch(BASE) == 0
    assert client.hlen(keys.fair_threads(d.prefix, BASE)) == 0, "the dead worker is dropped"
    client.sadd(keys.paused_queues(d.prefix), BASE)
    d.worker(threads=4)
    assert d.fair.dispatch(BASE) == 0
    client.srem(keys.paused_queues(d.prefix), BASE)
    assert d.fair.dispatch(BASE) == 2 and d.in_broker() == ["A", "A"]


async def test_new_work_waits_while_a_users_webhook_deliveries_pile_up(
        client: redis.Redis, redis_url: str) -> None:
    """Deliveries of a job's end are never dropped; past WEBHOOK_BACKLOG_PER_USER of them
    waiting for their turn, the user's new uploads and tasks get 429 until they drain."""
    d = Deployment(client)
    d.send("A", 3, queue="webhooks")
    d.send("B", 1, queue="webhooks.high")
    async_client = aioredis.Redis.from_url(redis_url)
    try:
        def state(limit: int) -> SimpleNamespace:
            return SimpleNamespace(redis=async_client, settings=Settings(
                redis_prefix=d.prefix, webhook_backlog_per_user=limit))

        with pytest.raises(ApiError) as refused:
            await outbound.check_backlog(state(3), "A")
        assert status_of(refused.value) == 429 and refused.value.code == "webhook_backlog"
        assert refused.value.retry_after_s == outbound.BACKLOG_RETRY_S
        await outbound.check_backlog(state(4), "A")  # under it
        await outbound.check_backlog(state(3), "B")  # another user's backlog is not A's
        await outbound.check_backlog(state(0), "A")  # 0: no cap
    finally:
        await async_client.aclose()


async def test_an_upload_refused_for_the_backlog_takes_none_of_the_allowance(
        client: redis.Redis, redis_url: str) -> None:
    """``submit.admit_uploads`` checks the backlog and takes the upload allowance in one
    script: a backlog refusal takes nothing; when both refuse, the backlog answers;
    admitted, the allowance taken is returned (to give back if the upload fails later),
    with the paused queues."""
    d = Deployment(client)
    d.send("A", 3, queue="webhooks")
    async_client = aioredis.Redis.from_url(redis_url)
    if time.time() % 60 > 55:  # the allowance's one-minute window must last the test
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    try:
        def state(backlog: int, uploads: int) -> Any:
            return SimpleNamespace(redis=async_client, settings=Settings(
                redis_prefix=d.prefix, webhook_backlog_per_user=backlog,
                rate_limit_uploads_per_min=uploads))

        for _ in range(3):
            with pytest.raises(ApiError) as refused:
                await submit.admit_uploads(state(3, 2), "A")
            assert refused.value.code == "webhook_backlog"
            assert status_of(refused.value) == 429
            assert refused.value.retry_after_s == outbound.BACKLOG_RETRY_S
            assert "3 of your webhook deliveries" in refused.value.message
        # None of it was used: the allowance of 2 is whole.
        client.sadd(keys.paused_queues(d.prefix), "images", "emails")
        admitted = await submit.admit_uploads(state(4, 2), "A")
        assert admitted.taken is not None and admitted.taken.amount == 1
        assert 60 < client.ttl(admitted.taken.key) <= 120  # the window's key expires
        # The paused queues come with the admission (the stage a new job starts in).
        assert admitted.paused == {"images", "emails"}
        client.delete(keys.paused_queues(d.prefix))
        assert (await submit.admit_uploads(state(4, 2), "A")).paused == frozenset()
        with pytest.raises(ApiError) as spent:
            await submit.admit_uploads(state(4, 2), "A")
        assert spent.value.code == "rate_limited" and status_of(spent.value) == 429
        with pytest.raises(ApiError) as none_left:  # files=0: is any of it left?
            await submit.admit_uploads(state(4, 2), "A", files=0)
        assert none_left.value.code == "rate_limited"
        assert (await submit.admit_uploads(state(4, 3), "A", files=0)).taken is None
        with pytest.raises(ApiError) as both:
            await submit.admit_uploads(state(3, 2), "A")
        assert both.value.code == "webhook_backlog"
        await submit.admit_uploads(state(3, 2), "B")  # another user's backlog is not A's
        # No caps at all: let in, nothing taken.
        assert (await submit.admit_uploads(state(0, 0), "A")).taken is None
    finally:
        await async_client.aclose()


def test_each_message_moved_in_rings_its_queues_bell_which_stays_short_and_short_lived(
        client: redis.Redis) -> None:
    d = Deployment(client)
    bell = keys.fair_bell(d.prefix, BASE)
    d.send("A", 3)
    assert not client.exists(bell), "nothing moved (no worker yet): no ring"
    d.worker(threads=2)
    assert d.fair.dispatch(BASE) == 2
    assert client.llen(bell) == 2
    first = client.pttl(bell)
    assert 0 < first <= 5_000
    time.sleep(0.2)
    assert d.fair.dispatch(BASE) == 0  # nothing moves: no ring, and its time runs on
    assert client.pttl(bell) < first and client.llen(bell) == 2
    d.send("B", 100)
    d.worker(threads=200)
    assert d.fair.dispatch(BASE) == 101
    assert client.llen(bell) == 64, "kept to its last 64 rings"


def _published(pubsub: Any, wait_s: float) -> bytes | None:
    """The next message published on the subscribed channel within ``wait_s`` (the
    subscription's own confirmations skipped), or None."""
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return bytes(message["data"])
    return None


def _message(user: str) -> Message[object]:
    return Message(queue_name=BASE, actor_name="image.process", args=(), kwargs={},
                   options={USER_OPTION: user})


def test_a_message_sent_with_its_event_publishes_it_in_the_same_script(
        client: redis.Redis) -> None:
    """The web's send of a new job carries its job:queued: one script stores the message,
    takes the turns (moving it in) and publishes the event, so no worker can take the
    message before its event is out. Without an event, nothing is published."""
    d = Deployment(client)
    d.worker(threads=1)
    channel = f"{d.prefix}:events"
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    try:
        sent = d.fair.push(_message("A"), "A", announce=(channel, "job:queued of A1"))
        d.fair.push(_message("B"), "B")
        assert [m.message_id for m in [d.take()]] == [sent.message_id]
        assert d.in_broker() == []
        assert _published(pubsub, 5) == b"job:queued of A1"
        assert _published(pubsub, 0.3) is None, "B's send published nothing"
    finally:
        pubsub.close()


def test_a_message_without_an_owner_goes_straight_in_and_rings(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, redis_prefix=f"bell-{secrets.token_hex(4)}")
    broker = build_broker(settings, maintenance=False)
    bell = keys.fair_bell(settings.redis_prefix, BASE)
    try:
        def message() -> Message[object]:
            return Message(queue_name=BASE, actor_name="image.process", args=(), kwargs={},
                           options={})

        announce = (f"{settings.redis_prefix}:nobody-listens", "job:queued")
        assert broker.send(message(), announce=announce)[1] is False, (
            "nobody's job: sent without its event (its sender publishes it)")
        assert broker.client.llen(bell) == 1
        assert broker.send(message(), delay=60_000, announce=announce)[1] is False
        assert broker.client.llen(bell) == 1, "delayed: nothing moves in yet"
        assert broker.client.llen(keys.dramatiq_queue(broker.fair.namespace, BASE)) == 1
        # Only an owner's message for now goes with its event.
        sent = partial(enqueue_job, broker, actor_name="image.process", queue_name=BASE,
                       max_attempts=1, announce=announce)
        assert sent(job_id="j1", message_id="m1") is False, "no owner"
        assert sent(job_id="j2", message_id="m2", user_id="A", delay_ms=60_000) is False
        assert sent(job_id="j3", message_id="m3", user_id="A") is True
    finally:
        broker.client.close()


class _Watched(threading.Event):
    """An Event that says when someone began to wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


class _Next(threading.Thread):
    """``next(consumer)`` in a thread, as Dramatiq's consumer thread calls it."""

    def __init__(self, consumer: Any) -> None:
        super().__init__(daemon=True)
        self.consumer, self.result = consumer, None

    def run(self) -> None:
        self.result = next(self.consumer)


def test_a_workers_consumer_fetches_as_soon_as_a_message_or_room_is_there(
        redis_url: str, client: redis.Redis) -> None:
    """With the worker timeout at a minute, Dramatiq's consumer would sleep up to a minute
    before it looked again: here a message moved into its queue wakes it (the bell), and
    with no room one of its messages ending does (no miss counted for it)."""
    settings = Settings(redis_url=redis_url, redis_prefix=f"bell-{secrets.token_hex(4)}")
    broker = build_broker(settings, maintenance=False)
    try:
        consumer = broker.consume(BASE, prefetch=1, timeout=60_000)
        assert next(consumer) is None  # an empty queue: one fetch, then a short back-off
        consumer.misses = 30  # long idle: Dramatiq's next back-off is the whole minute
        waiting = _Next(consumer)
        waiting.start()
        time.sleep(0.2)
        assert waiting.is_alive(), "it waits for work"
        message: Message[object] = Message(queue_name=BASE, actor_name="image.process",
                                           args=(), kwargs={}, options={USER_OPTION: "A"})
        broker.enqueue(message)  # no worker offers threads yet: it waits in A's list
        client.zadd(keys.dramatiq_heartbeats(broker.fair.namespace),
                    {"w1": int(time.time() * 1000)})
        broker.fair.offer_threads("w1", [BASE], 1)
        assert broker.fair.dispatch(BASE) == 1  # a turn (a tick, an end) moves it: a ring
        waiting.join(10)
        assert not waiting.is_alive(), "the bell woke it"
        fetched = next(consumer)
        assert fetched is not None and fetched.message_id == message.message_id

        # Its one place is taken: it waits for room, however long it has been idle.
        consumer._room = room = _Watched()
        full = _Next(consumer)
        full.start()
        assert room.waiting.wait(10), "it waits for one of its messages to end"
        assert full.is_alive()
        consumer.ack(fetched)
        full.join(10)
        assert not full.is_alive() and full.result is None, "the end of its message woke it"
        assert consumer.misses == 0
    finally:
        broker.client.close()


def test_where_redis_refuses_blpop_a_consumer_polls_and_delay_queues_never_wait_on_a_bell(
        redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(redis_url=redis_url, redis_prefix=f"bell-{secrets.token_hex(4)}")
    broker = build_broker(settings, maintenance=False)
    try:
        assert broker.consume(f"{BASE}.DQ", prefetch=1, timeout=200)._bell is None

        def refused(*_args: object, **_kwargs: object) -> None:  # Redis 5, or an ACL
            raise redis.ResponseError("timeout is not an integer or out of range")

        monkeypatch.setattr(broker.client, "blpop", refused)
        consumer = broker.consume(BASE, prefetch=1, timeout=200)
        consumer.misses = 10  # a back-off of the whole 200 ms: long enough for the bell
        assert next(consumer) is None
        assert consumer._bell is None, "polls from now on"
        assert any("polling instead" in r.getMessage() for r in caplog.records)
        assert next(consumer) is None  # and goes on working
        # With no room it still waits for one of its messages to end, not for a poll.
        message: Message[object] = Message(queue_name=BASE, actor_name="image.process",
                                           args=(), kwargs={}, options={})
        broker.enqueue(message)  # no owner: straight into Dramatiq's queue
        fetched = next(consumer)
        assert fetched is not None and fetched.message_id == message.message_id
        consumer._room = room = _Watched()
        full = _Next(consumer)
        full.start()
        assert room.waiting.wait(10)
        consumer.ack(fetched)
        full.join(10)
        assert not full.is_alive() and full.result is None
    finally:
        broker.client.close()


async def test_an_upload_wakes_an_idle_worker_once_its_job_queued_is_out(
        redis_url: str, databases: Databases, tmp_path: Path) -> None:
    """The web process sends an upload's message with its job:queued: the script
    publishes the event and moves the message in, ringing the queue's bell, so an idle
    consumer (here one that would otherwise sleep a whole minute) fetches the job at
    once, and a subscriber has its job:queued."""
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "DATABASE_URL": databases.new(), "DATA_DIR": str(tmp_path),
        "REDIS_PREFIX": f"ring-{secrets.token_hex(4)}"})
    broker = build_broker(settings, maintenance=False)
    app = create_app(settings)
    http_app = app.app.other_asgi_app  # the Starlette app, whose lifespan builds AppState
    try:
        # A live worker with one free thread for images: the send moves the message in.
        broker.client.zadd(keys.dramatiq_heartbeats(broker.fair.namespace),
                           {"w1": int(time.time() * 1000)})
        broker.fair.offer_threads("w1", [BASE], 1)
        consumer = broker.consume(BASE, prefetch=1, timeout=60_000)
        assert next(consumer) is None
        consumer.misses = 30  # long idle: Dramatiq's next back-off is the whole minute
        async with http_app.router.lifespan_context(http_app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://darkroom.test") as http:
            pubsub = broker.client.pubsub()
            pubsub.subscribe(keys.events_channel(settings.redis_prefix))

            def wait() -> None:
                waiting.run()

            waiting = _Next(consumer)
            woken = threading.Thread(target=wait, daemon=True)
            woken.start()
            await asyncio.sleep(0.2)
            assert woken.is_alive(), "it waits for work"
            token = (await http.post("/api/session")).json()["token"]
            sent = await http.post("/api/images", headers=auth(token),
                                   files={"file": ("a.jpg", jpeg_bytes(64, 48), "image/jpeg")})
            assert sent.status_code == 202, sent.text
            await asyncio.to_thread(woken.join, 10)
            assert not woken.is_alive(), "the web's ring woke it"
            message = _published(pubsub, 5)
            pubsub.close()
            assert message is not None and decode_event(message).name == "job:queued"
            fetched = next(consumer)
            assert fetched is not None and fetched.args == (sent.json()["job"]["id"],)
    finally:
        broker.client.close()


async def test_an_upload_whose_send_redis_refuses_is_undone_and_never_announced(
        redis_url: str, databases: Databases, tmp_path: Path) -> None:
    """Redis refuses the send (here the real script fails at its first write: its queue's
    message hash is not a hash): the upload is 503 ``queue_unavailable``, its job and
    image are undone, and its job:queued, which went with the send, was never
    published."""
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "DATABASE_URL": databases.new(), "DATA_DIR": str(tmp_path),
        "REDIS_PREFIX": f"refused-{secrets.token_hex(4)}"})
    app = create_app(settings)
    http_app = app.app.other_asgi_app
    async with http_app.router.lifespan_context(http_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://darkroom.test") as http:
        fair = http_app.state.darkroom.broker.fair
        pubsub = fair.client.pubsub()
        pubsub.subscribe(keys.events_channel(settings.redis_prefix))
        token = (await http.post("/api/session")).json()["token"]

        fair.client.set(keys.fair_messages(settings.redis_prefix, BASE), "not a hash")
        sent = await http.post("/api/images", headers=auth(token),
                               files={"file": ("a.jpg", jpeg_bytes(64, 48), "image/jpeg")})
        assert sent.status_code == 503, sent.text
        assert sent.json()["error"]["code"] == "queue_unavailable"
        assert (await http.get("/api/images", headers=auth(token))).json()["items"] == []
        assert _published(pubsub, 0.5) is None, "nothing published"
        pubsub.close()
