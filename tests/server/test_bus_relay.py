"""The event bus (``server.infra.bus``) and the relay (``server.web.live.relay``) against real Redis
and a
real Socket.IO server with real clients.

Proven here:
- events published by workers (``SyncBus``) and the web (``Bus``) reach ``Bus.listen`` once,
  in order, stamped with their publish time; malformed messages are dropped, not fatal;
- while Redis is down ``listen`` re-subscribes with a doubling, capped backoff, and once it
  is back it signals the gap (``None``) exactly once per outage; a subscription Redis
  refuses is not a reconnection and is backed off the same way;
- the relay emits every event to exactly its rooms (owner, admins, followers of the job),
  once and in order; a revoked token's sockets are told and closed, no one else's;
- after a Redis restart the relay notices the gap and resyncs: each connected user gets
  a fresh ``jobs:snapshot`` from the database carrying the final state published (and
  lost) during the outage, and sockets of a token revoked meanwhile are closed;
- one failing emit hook or resync does not stop the relay.

Outages use a private ``EmbeddedRedis`` of each test (stopped, restarted, ACL-restricted or
its pub/sub clients killed); the session's shared Redis is only published to, under a
prefix of each test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import socketio
import uvicorn

from server.core import keys
from server.core.events import (
    ADMINS_ROOM,
    TOKEN_REVOKED,
    AdminEvent,
    BatchEvent,
    BusEvent,
    JobEvent,
    TokenRevoked,
    job_room,
    token_room,
    user_room,
)
from server.core.jobs import JobState
from server.core.live import SEQ_BLOCK
from server.core.token_cache import KnownToken, TokenCache
from server.data import store
from server.data.db import Database
from server.infra import bus as bus_module
from server.infra import metrics
from server.infra.bus import Bus, SyncBus
from server.infra.embedded_redis import EmbeddedRedis
from server.services.presenter import Presenter
from server.web.live.connections import Connections
from server.web.live.emitting import DirectManager
from server.web.live.relay import relay_events
from server.web.live.sockets import resync_all
from tests.conftest import Databases
from tests.factories import LiveClient

pytestmark = pytest.mark.integration

DEADLINE_S = 15.0


async def wait_until(predicate: Callable[[], bool], what: str,
                     timeout: float = DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_subscribed(client: aioredis.Redis, channel: str, count: int = 1) -> None:
    """Until Redis reports ``count`` subscribers of ``channel`` (the listener is ready)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        [(_, subscribers)] = await client.pubsub_numsub(channel)
        if subscribers >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no subscriber on {channel} after {DEADLINE_S}s")
        await asyncio.sleep(0.02)


def job_event(name: str, user_id: str, job_id: str, seq: int, **job: Any) -> JobEvent:
    return JobEvent(name=name, user_id=user_id, job={"id": job_id, "seq": seq, **job})


@dataclass
class Collector:
    """Consumes ``Bus.listen`` in a task; every item (``None`` for a gap) in order."""

    bus: Bus
    items: list[BusEvent | None] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for item in self.bus.listen():
            self.items.append(item)

    def start(self) -> Collector:
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    @property
    def gaps(self) -> int:
        return sum(1 for item in self.items if item is None)

    def events(self) -> list[BusEvent]:
        return [item for item in self.items if item is not None]


class RedisClients:
    """Redis clients a test opened; the ``redis_clients`` fixture closes them after it."""

    def __init__(self) -> None:
        self.async_clients: list[aioredis.Redis] = []
        self.sync_clients: list[redis.Redis] = []

    def aio(self, url: str) -> aioredis.Redis:
        """As the web process makes it (fails fast when Redis is unreachable)."""
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
        self.async_clients.append(client)
        return client

    def sync(self, url: str) -> redis.Redis:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        self.sync_clients.append(client)
        return client


@pytest.fixture
async def redis_clients() -> AsyncIterator[RedisClients]:
    made = RedisClients()
    yield made
    for client in made.async_clients:
        await client.aclose()
    for sync_client in made.sync_clients:
        sync_client.close()


@pytest.fixture
async def db(databases: Databases) -> AsyncIterator[Database]:
    """A fresh, migrated database of this test (SQLite, and PostgreSQL when configured)."""
    database = Database(databases.new())
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone (not started yet), to stop, restart and restrict."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=False, use_socket=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> tuple[float, float]:
    """Shorter reconnect backoff (same doubling rule), so outages take a fraction of a second."""
    monkeypatch.setattr(bus_module, "_MIN_BACKOFF_S", 0.05)
    monkeypatch.setattr(bus_module, "_MAX_BACKOFF_S", 0.2)
    return 0.05, 0.2


def backoffs(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The re-subscribe pauses ``Bus.listen`` announced, in order."""
    return [float(record.args[-1]) for record in caplog.records  # type: ignore[index]
            if record.name == "server.infra.bus" and "re-subscribing" in record.msg]


# -- the bus -----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def listening(redis_clients: RedisClients, redis_url: str,
                    prefix: str) -> AsyncIterator[tuple[aioredis.Redis, Bus, SyncBus, Collector]]:
    """A collector subscribed to ``prefix``'s bus, and a web and a worker side to publish."""
    client = redis_clients.aio(redis_url)
    collector = Collector(Bus(client, prefix)).start()
    try:
        await wait_subscribed(client, keys.events_channel(prefix))
        yield client, Bus(client, prefix), SyncBus(redis_clients.sync(redis_url), prefix), \
            collector
    finally:
        await collector.stop()


async def test_published_events_arrive_once_in_order_with_their_publish_time(
        redis_clients: RedisClients, redis_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Worker-side and web-side publishes reach the listener in publish order, exactly once,
    stamped with when they were published; a malformed message is dropped with a warning,
    and another deployment's channel (prefix) is not heard."""
    prefix, other_prefix = f"bus-{secrets.token_hex(4)}", f"bus-{secrets.token_hex(4)}"
    sync_client = redis_clients.sync(redis_url)
    async with listening(redis_clients, redis_url, prefix) as (client, web, worker, collector):
        before = time.time()
        worker.publish(job_event("job:queued", "u1", "j1", 1))
        await web.publish(job_event("job:active", "u1", "j1", 2))
        await client.publish(keys.events_channel(prefix), b"{not json")
        SyncBus(sync_client, other_prefix).publish(job_event("job:queued", "u9", "x", 1))
        worker.publish(BatchEvent(user_id="u1", batch={"id": "b1", "done": 1}))
        await web.publish(AdminEvent("dlq:removed", {"all": True}))
        worker.publish(TokenRevoked(token_id="t1"))
        worker.publish(job_event("job:completed", "u1", "j1", 3))
        await wait_until(lambda: len(collector.events()) >= 6, "six events")
        after = time.time()
        # Anything else (a duplicate, the other prefix's event) would have come before the
        # last one: a subscriber receives in publish order.
        got = collector.events()
        assert [(e.name, getattr(e, "job", {}).get("seq")) for e in got] == [
            ("job:queued", 1), ("job:active", 2), ("batch:progress", None),
            ("dlq:removed", None), ("session:revoked", None), ("job:completed", 3)]
        assert isinstance(got[2], BatchEvent) and got[2].batch == {"id": "b1", "done": 1}
        assert isinstance(got[4], TokenRevoked) and got[4].token_id == "t1"
        stamps = [e.published_at for e in got]
        assert all(s is not None and before <= s <= after for s in stamps), stamps
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        assert collector.gaps == 0
        assert any("malformed" in r.getMessage() for r in caplog.records
                   if r.name == "server.infra.bus")


def summary(batch_id: str, done: int, failed: int, progress: int) -> dict[str, Any]:
    return {"id": batch_id, "total": 2, "files": 2, "done": done, "failed": failed,
            "progress": progress}


async def test_a_batch_summary_older_than_one_published_is_dropped(
        redis_clients: RedisClients, redis_url: str) -> None:
    """Two jobs of a batch ending at once may each read the batch before the other's end
    and publish in the opposite order: a summary counting fewer finished jobs
    than one already published for that batch is not published, from the
    workers' side or the web's; as many again is (progress may go down), another batch is
    not affected, a summary without the counts is published as it is, and once the key is
    removed (a retry) fewer is published."""
    prefix = f"bus-{secrets.token_hex(4)}"
    async with listening(redis_clients, redis_url, prefix) as (client, web, worker, collector):
        sent = [
            (worker, summary("B1", 0, 0, 40)),
            (worker, summary("B1", 2, 0, 100)),   # the last job's end
            (worker, summary("B1", 1, 0, 82)),    # the other job's end, read before it
            (web, summary("B1", 1, 0, 95)),       # fewer finished than shown: dropped
            (worker, summary("B1", 2, 0, 100)),   # the same again: published
            (worker, summary("B2", 0, 0, 10)),    # another batch: its own count
            (web, {"id": "B1", "done": 0}),       # no counts: published as it is
            (worker, summary("B2", 0, 0, 5)),     # a job running again: as many finished
        ]
        for bus, batch in sent:
            event = BatchEvent(user_id="u1", batch=batch)
            if isinstance(bus, Bus):
                await bus.publish(event)
            else:
                bus.publish(event)
        await wait_until(lambda: len(collector.events()) >= 6, "six summaries")
        await asyncio.sleep(0.2)  # anything dropped would have come by now
        got = [(e.batch["id"], e.batch.get("done"), e.batch.get("progress"))
               for e in collector.events() if isinstance(e, BatchEvent)]
        assert got == [("B1", 0, 40), ("B1", 2, 100), ("B1", 2, 100), ("B2", 0, 10),
                       ("B1", 0, None), ("B2", 0, 5)]
        ttl = await client.pttl(keys.batch_shown(prefix, "B1"))
        assert 0 < ttl <= bus_module.BATCH_SHOWN_TTL_MS
        # Once the key is gone (a failed job of the batch is run again), fewer is news.
        await client.delete(keys.batch_shown(prefix, "B1"))
        worker.publish(BatchEvent(user_id="u1", batch=summary("B1", 1, 0, 50)))
        await wait_until(lambda: len(collector.events()) >= 7, "the reopened batch")


async def test_listen_backs_off_while_redis_is_down_and_signals_each_gap_once(
        redis_clients: RedisClients, private_redis: EmbeddedRedis,
        fast_backoff: tuple[float, float],
        caplog: pytest.LogCaptureFixture) -> None:
    """With Redis down, re-subscription waits 0.05, 0.1, 0.2, 0.2 … (doubling, capped);
    once Redis is up the listener yields one ``None`` (the gap) before any event, the
    backoff starts short again, and the next drop is signalled by one more ``None``."""
    minimum, maximum = fast_backoff
    caplog.set_level(logging.WARNING, logger="server.infra.bus")
    prefix = f"gap-{secrets.token_hex(4)}"
    client = redis_clients.aio(private_redis.url)
    collector = Collector(Bus(client, prefix)).start()
    try:
        await wait_until(lambda: len(backoffs(caplog)) >= 5, "five failed re-subscriptions")
        assert backoffs(caplog)[:5] == [minimum, 2 * minimum, maximum, maximum, maximum]
        assert collector.items == [], "nothing is yielded while Redis is down"

        private_redis.start()
        await wait_until(lambda: collector.gaps == 1, "the gap signal after Redis came up")
        await wait_subscribed(client, keys.events_channel(prefix))
        sync_client = redis_clients.sync(private_redis.url)
        SyncBus(sync_client, prefix).publish(job_event("job:active", "u1", "j1", 2))
        await wait_until(lambda: len(collector.items) == 2, "the event after the gap")
        assert collector.items[0] is None
        assert isinstance(collector.items[1], JobEvent) and collector.items[1].seq == 2

        # A dropped connection (Redis restarted by its operator, a proxy timeout...).
        failures = len(backoffs(caplog))
        sync_client.client_kill_filter(_type="pubsub")
        await wait_until(lambda: collector.gaps == 2, "the second gap signal")
        assert backoffs(caplog)[failures:] == [minimum], "backoff starts short again"
        await wait_subscribed(client, keys.events_channel(prefix))
        SyncBus(sync_client, prefix).publish(job_event("job:completed", "u1", "j1", 3))
        await wait_until(lambda: len(collector.items) == 4, "the event after the second gap")
        assert [None if i is None else i.name for i in collector.items] == [
            None, "job:active", None, "job:completed"]
    finally:
        await collector.stop()


async def test_a_refused_subscription_is_backed_off_and_is_not_a_gap(
        redis_clients: RedisClients, private_redis: EmbeddedRedis,
        fast_backoff: tuple[float, float],
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis reachable but refusing the SUBSCRIBE (an ACL without the channel): the listener
    logs the failure and backs off (doubling) instead of retrying and resyncing every
    client at full speed; no gap is signalled until Redis accepts the subscription, then
    exactly one, and events flow."""
    minimum, maximum = fast_backoff
    caplog.set_level(logging.WARNING, logger="server.infra.bus")
    private_redis.start()
    admin = redis_clients.sync(private_redis.url)
    admin.execute_command("ACL", "SETUSER", "default", "resetchannels")
    prefix = f"acl-{secrets.token_hex(4)}"
    client = redis_clients.aio(private_redis.url)
    collector = Collector(Bus(client, prefix)).start()
    try:
        await wait_until(lambda: len(backoffs(caplog)) >= 4, "four refused subscriptions")
        assert backoffs(caplog)[:4] == [minimum, 2 * minimum, maximum, maximum]
        assert collector.items == [], "a refused subscription is no reconnection"
        assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records
                   if r.name == "server.infra.bus"), "the unexpected error is logged with its trace"

        admin.execute_command("ACL", "SETUSER", "default", "allchannels")
        await wait_until(lambda: collector.gaps == 1, "the gap signal once subscribed")
        await wait_subscribed(client, keys.events_channel(prefix))
        SyncBus(admin, prefix).publish(job_event("job:queued", "u1", "j1", 1))
        await wait_until(lambda: len(collector.items) == 2, "the event after the gap")
        assert collector.items[0] is None and isinstance(collector.items[1], JobEvent)
    finally:
        await collector.stop()


# -- the relay ---------------------------------------------------------------------------------

@dataclass
class SocketServer:
    """A real Socket.IO server (uvicorn, websocket) whose sockets join the rooms their
    ``auth`` names: the owner's user room and token room, plus any extra ones."""

    sio: socketio.AsyncServer
    url: str
    connections: Connections
    clients: list[LiveClient] = field(default_factory=list)

    async def join(self, user_id: str, token_id: str, *rooms: str) -> LiveClient:
        client = LiveClient()
        self.clients.append(client)
        await client.sio.connect(self.url, auth={"user_id": user_id, "token_id": token_id,
                                                 "rooms": list(rooms)},
                                 transports=["websocket"], wait_timeout=10)
        return client


@contextlib.asynccontextmanager
async def socket_server() -> AsyncIterator[SocketServer]:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*",
                               client_manager=DirectManager())  # as the app has it
    connections = Connections()

    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any]) -> None:
        connections.tokens[sid] = auth["token_id"]
        await sio.enter_room(sid, token_room(auth["token_id"]))
        await sio.enter_room(sid, user_room(auth["user_id"]))
        for room in auth["rooms"]:
            await sio.enter_room(sid, room)

    async def disconnect(sid: str, reason: Any = None) -> None:
        connections.forget(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    # Bound here on port 0 and handed to uvicorn: no other process can take the port.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(socketio.ASGIApp(sio), log_level="warning",
                                           lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    running = SocketServer(sio, f"http://127.0.0.1:{port}", connections)
    try:
        await wait_until(lambda: server.started or serving.done(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield running
    finally:
        for client in running.clients:
            if client.sio.connected:
                await client.close()
        server.should_exit = True
        await serving


def names(client: LiveClient) -> list[tuple[str, str | None, int | None]]:
    """(event, job id, seq) of everything a client received, in arrival order."""
    out = []
    for name, data in client.events:
        job = data.get("job") if isinstance(data, dict) else None
        out.append((name, job["id"] if job else None, job["seq"] if job else None))
    return out


class Relay:
    """``relay_events`` running as the app runs it (a task), with what it calls recorded."""

    def __init__(self, bus: Bus, sio: socketio.AsyncServer,
                 resync: Callable[[], Awaitable[None]],
                 moved: Callable[[], None] | None = None,
                 tokens: TokenCache | None = None) -> None:
        self.tally = metrics.Tally()
        self.moves = 0

        def count_move() -> None:
            self.moves += 1
            if moved is not None:
                moved()

        self.task = asyncio.create_task(relay_events(bus, sio, resync=resync,
                                                     moved=count_move, tally=self.tally,
                                                     tokens=tokens))

    async def stop(self) -> None:
        ended = self.task.done()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        assert not ended, "the relay loop must never end by itself"


def relay_delays(tally: metrics.Tally) -> int:
    """How many publish → emit delays the relay observed."""
    name = metrics.RELAY_DELAY.name
    return sum(count for key, count in tally.drain().counts.items()
               if key.startswith(f'["{name}","bucket"'))


async def no_resync() -> None:
    raise AssertionError("no gap expected")


async def test_relay_emits_each_event_once_in_order_to_exactly_its_rooms(
        redis_clients: RedisClients, redis_url: str) -> None:
    """Two sockets of one user, another user, an admin following everything (and also one
    job's room) and an admin following one job of another user: each receives exactly the
    events addressed to it, once, in publish order; ``moved`` runs once per job or batch
    event and every delay is tallied."""
    prefix = f"relay-{secrets.token_hex(4)}"
    client = redis_clients.aio(redis_url)
    sync_client = redis_clients.sync(redis_url)
    async with socket_server() as server:
        owner_a = await server.join("u1", "t1")
        owner_b = await server.join("u1", "t2")
        other = await server.join("u2", "t3")
        admin = await server.join("u3", "t4", ADMINS_ROOM, job_room("J1"))
        follower = await server.join("u4", "t5", job_room("J2"))
        relay = Relay(Bus(client, prefix), server.sio, resync=no_resync)
        try:
            await wait_subscribed(client, keys.events_channel(prefix))
            worker = SyncBus(sync_client, prefix)
            published: list[BusEvent] = [
                job_event("job:queued", "u1", "J1", 1),
                job_event("job:queued", "u2", "J2", 1),
                job_event("job:active", "u1", "J1", 2),
                job_event("job:progress", "u1", "J1", 3, stage="thumbnail"),
                job_event("job:active", "u2", "J2", 2),
                BatchEvent(user_id="u1", batch={"id": "B1", "done": 0}),
                job_event("job:progress", "u1", "J1", 4, stage="preview"),
                AdminEvent("dlq:removed", {"all": True}),
                job_event("job:completed", "u1", "J1", 5),
                job_event("job:failed", "u2", "J2", 3),
                # Last, one per recipient: once it is in, anything else would be too.
                job_event("job:queued", "u1", "END1", 1),
                job_event("job:queued", "u2", "END2", 1),
                job_event("job:queued", "u4", "END4", 1),
            ]
            for event in published:
                worker.publish(event)

            def got(client: LiveClient, job_id: str) -> bool:
                return any(job == job_id for _, job, _ in names(client))

            for recipient, end in ((owner_a, "END1"), (owner_b, "END1"), (other, "END2"),
                                   (follower, "END4"), (admin, "END4")):
                await wait_until(lambda r=recipient, e=end: got(r, e), f"{end} arrives")

            u1 = [("job:queued", "J1", 1), ("job:active", "J1", 2), ("job:progress", "J1", 3),
                  ("batch:progress", None, None), ("job:progress", "J1", 4),
                  ("job:completed", "J1", 5), ("job:queued", "END1", 1)]
            assert names(owner_a) == u1
            assert names(owner_b) == u1
            assert names(other) == [("job:queued", "J2", 1), ("job:active", "J2", 2),
                                    ("job:failed", "J2", 3), ("job:queued", "END2", 1)]
            # In the admins room and J1's room at once, yet each event arrives once.
            assert names(admin) == [
                ("job:queued", "J1", 1), ("job:queued", "J2", 1), ("job:active", "J1", 2),
                ("job:progress", "J1", 3), ("job:active", "J2", 2),
                ("batch:progress", None, None), ("job:progress", "J1", 4),
                ("dlq:removed", None, None), ("job:completed", "J1", 5),
                ("job:failed", "J2", 3), ("job:queued", "END1", 1),
                ("job:queued", "END2", 1), ("job:queued", "END4", 1)]
            assert names(follower) == [("job:queued", "J2", 1), ("job:active", "J2", 2),
                                       ("job:failed", "J2", 3), ("job:queued", "END4", 1)]
            # The wire payload: {"job", "seq", "published_at"} / {"batch", ...} / admin data.
            data = owner_a.events[2][1]
            assert data["job"] == {"id": "J1", "seq": 3, "stage": "thumbnail"}
            assert data["seq"] == 3 and isinstance(data["published_at"], float)
            assert owner_a.events[3][1]["batch"] == {"id": "B1", "done": 0}
            assert admin.events[7][1]["all"] is True
            assert relay.moves == len(published) - 1, "every event but the admin one"
            assert relay_delays(relay.tally) == len(published)
        finally:
            await relay.stop()


async def test_a_revoked_tokens_sockets_are_told_and_closed_and_no_others(
        redis_clients: RedisClients, redis_url: str) -> None:
    """``session:revoked`` reaches every socket of that token, which is then disconnected
    by the server; the same user's socket with another token stays and gets later events."""
    prefix = f"revoke-{secrets.token_hex(4)}"
    client = redis_clients.aio(redis_url)
    sync_client = redis_clients.sync(redis_url)
    async with socket_server() as server:
        revoked_1 = await server.join("u1", "t-old")
        revoked_2 = await server.join("u1", "t-old")
        kept = await server.join("u1", "t-new")
        # This web process's token cache vouches for both tokens (AUTH_CACHE_S).
        tokens = TokenCache(ttl_s=3600, max_entries=10)
        for token_id in ("t-old", "t-new"):
            tokens.put(f"hash-{token_id}", KnownToken("u1", False, token_id), time.monotonic(),
                       since=tokens.generation)
        relay = Relay(Bus(client, prefix), server.sio, resync=no_resync, tokens=tokens)
        try:
            await wait_subscribed(client, keys.events_channel(prefix))
            worker = SyncBus(sync_client, prefix)
            worker.publish(TokenRevoked(token_id="t-old"))
            worker.publish(job_event("job:queued", "u1", "J1", 1))
            await wait_until(lambda: not revoked_1.sio.connected and not revoked_2.sio.connected,
                             "the revoked token's sockets to be closed")
            await wait_until(lambda: bool(kept.events), "the later event on the kept socket")
            for gone in (revoked_1, revoked_2):
                assert [name for name, _ in gone.events] == [TOKEN_REVOKED]
                assert gone.events[0][1]["reason"] == "the token was revoked"
            assert names(kept) == [("job:queued", "J1", 1)]
            assert kept.sio.connected
            assert [sid for sid, _ in server.sio.manager.get_participants(
                "/", token_room("t-old"))] == []
            assert relay.moves == 1, "a revocation is not a job movement"
            # The revoked token is forgotten (its next request reads the database), the
            # other one kept.
            assert tokens.get("hash-t-old", time.monotonic()) is None
            assert tokens.get("hash-t-new", time.monotonic()) is not None
        finally:
            await relay.stop()


async def test_a_failing_hook_or_resync_does_not_stop_the_relay(
        redis_clients: RedisClients, private_redis: EmbeddedRedis,
        fast_backoff: tuple[float, float],
        caplog: pytest.LogCaptureFixture) -> None:
    """An exception from ``moved`` (after an emit) is logged and the next event still goes
    out; a resync that fails after a gap is logged, and the next gap resyncs again."""
    private_redis.start()
    prefix = f"robust-{secrets.token_hex(4)}"
    client = redis_clients.aio(private_redis.url)
    sync_client = redis_clients.sync(private_redis.url)
    resyncs: list[str] = []

    async def resync() -> None:
        resyncs.append("called")
        if len(resyncs) == 1:
            raise RuntimeError("database away")

    failed_moves: list[int] = []

    def moved() -> None:
        if not failed_moves:
            failed_moves.append(1)
            raise RuntimeError("stats broke")

    async with socket_server() as server:
        owner = await server.join("u1", "t1")
        tokens = TokenCache(ttl_s=3600, max_entries=10)
        relay = Relay(Bus(client, prefix), server.sio, resync=resync, moved=moved,
                      tokens=tokens)
        try:
            channel = keys.events_channel(prefix)
            await wait_subscribed(client, channel)
            tokens.put("hash-t1", KnownToken("u1", False, "t1"), time.monotonic(),
                       since=tokens.generation)
            worker = SyncBus(sync_client, prefix)
            worker.publish(job_event("job:active", "u1", "J1", 2))
            worker.publish(job_event("job:completed", "u1", "J1", 3))
            await wait_until(lambda: len(owner.events) == 2, "both events")
            assert any("failed to relay job:active" in r.getMessage() for r in caplog.records)

            for expected in (1, 2):
                sync_client.client_kill_filter(_type="pubsub")
                await wait_until(lambda n=expected: len(resyncs) == n, f"resync #{expected}")
                await wait_subscribed(client, channel)
            assert any("failed to resync" in r.getMessage() for r in caplog.records)
            # A revocation may have gone by in a gap: every token is read again.
            assert len(tokens) == 0
            worker.publish(job_event("job:queued", "u1", "J2", 1))
            await wait_until(lambda: len(owner.events) == 3, "an event after both gaps")
            assert names(owner) == [("job:active", "J1", 2), ("job:completed", "J1", 3),
                                    ("job:queued", "J2", 1)]
            assert not relay.task.done()
        finally:
            await relay.stop()


async def _user_with_token(db: Database) -> tuple[str, str]:
    """A stored user and the id of its token."""
    token_hash = secrets.token_hex(32)
    user = await db.write(store.create_user, token_hash=token_hash)
    found = await db.read(store.user_by_token_hash, token_hash=token_hash)
    assert found is not None
    return user.id, found[1].id


async def test_after_a_redis_restart_the_relay_resyncs_every_connected_user(
        redis_clients: RedisClients, private_redis: EmbeddedRedis, db: Database) -> None:
    """Redis stops while a job is running; meanwhile the job completes (its event cannot be
    published) and a token is revoked. When Redis is back the relay notices the gap and
    runs the app's resync: the job's owner gets a ``jobs:snapshot`` from the database with
    the job completed, the other user gets a snapshot of their own jobs only, the revoked
    token's socket is told and closed; live events then flow again, once each."""
    private_redis.start()
    client = redis_clients.aio(private_redis.url)
    presenter = Presenter("relay-secret", 3600)
    prefix = f"resync-{secrets.token_hex(4)}"
    u1, t1 = await _user_with_token(db)
    u2, t2 = await _user_with_token(db)
    t1_revoked = (await db.write(store.create_token, user_id=u1, token_hash="r" * 64)).id

    async def new_job(user_id: str) -> str:
        view = await db.write(store.create_job, user_id=user_id, task_type="test.echo",
                              queue="default", payload={}, max_attempts=1)
        return str(view.job.id)

    j1, j2 = await new_job(u1), await new_job(u2)
    active = await db.write(store.transition, job_id=j1, state=JobState.ACTIVE, attempt=1)
    assert active is not None

    async with socket_server() as server:
        tokens = TokenCache(ttl_s=3600, max_entries=10)
        state: Any = SimpleNamespace(db=db, presenter=presenter, connections=server.connections,
                                     sio=server.sio, tokens=tokens, bus=Bus(client, prefix))
        owner = await server.join(u1, t1)
        doomed = await server.join(u1, t1_revoked)
        other = await server.join(u2, t2)
        relay = Relay(Bus(client, prefix), server.sio,
                      resync=lambda: resync_all(state))
        try:
            channel = keys.events_channel(prefix)
            await wait_subscribed(client, channel)
            web = Bus(client, prefix)
            await web.publish(presenter.event(active))
            await wait_until(lambda: len(owner.events) == 1, "job:active while healthy")

            private_redis.stop()
            done = await db.write(store.transition, job_id=j1, state=JobState.COMPLETED,
                                  progress=100, stage="done", result={"ok": True})
            assert done is not None
            with pytest.raises(redis.ConnectionError):
                await web.publish(presenter.event(done))  # lost: pub/sub keeps nothing
            assert await db.write(store.revoke_token, token_id=t1_revoked)
            private_redis.start()

            def snapshot(c: LiveClient) -> dict[str, Any] | None:
                found = [data for name, data in c.events if name == "jobs:snapshot"]
                return found[-1] if found else None

            await wait_until(lambda: snapshot(owner) is not None and snapshot(other) is not None,
                             "a jobs:snapshot for each connected user")
            await wait_until(lambda: not doomed.sio.connected, "the revoked socket closed")
            mine = snapshot(owner)
            assert mine is not None
            [job] = mine["jobs"]
            assert (job["id"], job["state"], job["seq"], job["result"]) == (
                j1, "completed", 3 + SEQ_BLOCK, {"ok": True})
            theirs = snapshot(other)
            assert theirs is not None
            assert [(j["id"], j["state"]) for j in theirs["jobs"]] == [(j2, "queued")]
            assert [name for name, _ in doomed.events] == ["job:active", TOKEN_REVOKED]
            assert tokens.generation > 0  # the gap (and the revoked token) was forgotten

            # Healthy again: live events flow, once each, and the gap resynced only once.
            await wait_subscribed(client, channel)
            later = await db.write(store.transition, job_id=j2, state=JobState.ACTIVE,
                                   attempt=1)
            assert later is not None
            await web.publish(presenter.event(later))
            await wait_until(lambda: len(other.events) == 2, "the event after the gap")
            assert names(owner) == [("job:active", j1, 2), ("jobs:snapshot", None, None)]
            assert names(other) == [("jobs:snapshot", None, None), ("job:active", j2, 2)]
            assert relay.moves == 2
        finally:
            await relay.stop()


async def test_a_cancelled_listener_ends_whenever_the_cancel_lands(redis_url: str) -> None:
    """Cancelling ``listen`` ends it even when the cancel lands while the pub/sub connection
    is being set up (redis-py turns it into a ConnectionError there, or loses it inside
    SUBSCRIBE): a web process whose port was taken hung in shutdown on this."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        for attempt in range(40):
            listener = Bus(client, f"cancel-{secrets.token_hex(4)}").listen()

            async def consume(events: AsyncIterator[BusEvent | None] = listener) -> None:
                async for _ in events:
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.00025 * (attempt % 8))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, f"listener still running 5 s after its cancel (attempt {attempt})"
            assert task.cancelled()
    finally:
        await client.aclose()
