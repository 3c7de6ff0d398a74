"""The bus's script that publishes job events and keeps a running job's live state
(``server.infra.bus._PUBLISH``, ``server.core.live``), against a real Redis."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import redis

from server.core import keys, live
from server.core.events import JobEvent
from server.core.live import SEQ_BLOCK, LiveState
from server.data.models import Job
from server.data.store import JobView
from server.infra.bus import NO_LIVE_STATE, PUSHED, RUN_OVER, SyncBus
from server.infra.embedded_redis import EmbeddedRedis
from server.services import live_views

pytestmark = pytest.mark.integration

JOB = "01job"


def event(name: str, state: str, seq: int, *, attempt: int = 1, stage: str = "stored",
          progress: int = 0) -> JobEvent:
    return JobEvent(name=name, user_id="u1", job={
        "id": JOB, "state": state, "attempt": attempt, "seq": seq, "stage": stage,
        "progress": progress})


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def bus(client: redis.Redis) -> SyncBus:
    return SyncBus(client, f"live-{secrets.token_hex(4)}")


def stored(client: redis.Redis, bus: SyncBus) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(keys.job_live(bus._prefix, JOB))
    return {k.decode(): v.decode() for k, v in raw.items()}


def received(pubsub: Any) -> list[int]:
    """The seqs of the events published since the last call."""
    seqs = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            seqs.append(JobEvent.decode(message["data"]).seq)
    return seqs


def test_an_attempt_is_seeded_pushed_and_ended_keeping_its_last_step(
        client: redis.Redis, bus: SyncBus) -> None:
    """job:active seeds the hash; pushes write it and publish; the end notes its own seq
    beside the last step, which a row read before the end still shows; a push after the
    end is refused, and nothing is published for it."""
    pubsub = client.pubsub()
    pubsub.subscribe(keys.events_channel(bus._prefix))
    assert pubsub.get_message(timeout=5) is not None  # subscribed
    ceiling = 2 + SEQ_BLOCK
    bus.publish(event("job:active", "active", 2))
    assert stored(client, bus) == {"attempt": "1", "seq": "2", "stage": "stored",
                                   "progress": "0"}
    assert bus.push(event("job:progress", "active", 3, stage="one", progress=30),
                    ceiling) == PUSHED
    assert bus.push(event("job:progress", "active", 4, stage="two", progress=60),
                    ceiling) == PUSHED
    end = live.next_seq(2, "active")
    bus.publish(event("job:cancelled", "cancelled", end, stage="cancelled"))
    assert stored(client, bus) == {"attempt": "1", "seq": "4", "stage": "two",
                                   "progress": "60", "ended": str(end)}
    assert 0 < client.pttl(keys.job_live(bus._prefix, JOB)) <= live.ENDED_TTL_MS
    assert bus.push(event("job:progress", "active", 5, stage="three"), ceiling) == RUN_OVER
    assert received(pubsub) == [2, 3, 4, end], "the refused step was not published"
    # A reader that read the row before the end shows the last step pushed.
    row = JobView(Job(id=JOB, state="active", attempt=1, seq=2, stage="stored", progress=0),
                  None)
    states = bus.live_states([JOB])
    assert states == {JOB: LiveState(attempt=1, seq=4, stage="two", progress=60, ended=end)}
    live_views.lay_over([row], states)
    assert (row.job.stage, row.job.progress, row.job.seq) == ("two", 60, 4)
    # A late event below the end (a step the database took before it) changes nothing.
    bus.publish(event("job:progress", "active", 3, stage="one", progress=30))
    assert stored(client, bus)["ended"] == str(end)
    pubsub.close()


def test_events_of_a_job_never_seen_running_leave_no_state(client: redis.Redis,
                                                         bus: SyncBus) -> None:
    """An upload's job:queued (or any end of a job that never ran) creates no hash, and a
    push onto no hash asks for the database."""
    bus.publish(event("job:queued", "queued", 1))
    bus.publish(event("job:cancelled", "cancelled", 2))
    assert not client.exists(keys.job_live(bus._prefix, JOB))
    assert bus.push(event("job:progress", "active", 3), 2 + SEQ_BLOCK) == NO_LIVE_STATE


def test_a_retry_seeds_its_own_attempt_over_the_last_ones_end(client: redis.Redis,
                                                              bus: SyncBus) -> None:
    """Attempt 1 ended (retrying); attempt 2's job:active seeds the hash anew, and a
    push of attempt 1 is refused as over while attempt 2's goes out. Had attempt 2's
    job:active been lost, its push would be sent to the database, not refused."""
    bus.publish(event("job:active", "active", 2))
    retrying = live.next_seq(2, "active")
    bus.publish(event("job:retrying", "retrying", retrying))
    assert bus.push(event("job:progress", "active", retrying + 1, attempt=2),
                    retrying + 1 + SEQ_BLOCK) == NO_LIVE_STATE, "attempt 2 not seeded yet"
    bus.publish(event("job:active", "active", retrying + 1, attempt=2))
    assert stored(client, bus) == {"attempt": "2", "seq": str(retrying + 1),
                                   "stage": "stored", "progress": "0"}
    assert bus.push(event("job:progress", "active", 3), 2 + SEQ_BLOCK) == RUN_OVER
    assert bus.push(event("job:progress", "active", retrying + 2, attempt=2),
                    retrying + 1 + SEQ_BLOCK) == PUSHED


def test_a_redis_out_of_memory_publishes_all_the_same_and_drops_an_end_it_cannot_note(
        tmp_path: Path) -> None:
    """Writes refused (maxmemory): events still go out; a push asks for the database; an
    end that cannot be noted removes the hash, so the run's next step asks the database
    (which refuses it) instead of being pushed."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=False, use_socket=False).start()
    client = redis.Redis.from_url(server.url)
    try:
        bus = SyncBus(client, "oom")
        pubsub = client.pubsub()
        pubsub.subscribe(keys.events_channel("oom"))
        assert pubsub.get_message(timeout=5) is not None
        bus.publish(event("job:active", "active", 2))
        client.config_set("maxmemory", 1)
        try:
            assert bus.push(event("job:progress", "active", 3), 2 + SEQ_BLOCK) == NO_LIVE_STATE
            bus.publish(event("job:cancelled", "cancelled", 3 + SEQ_BLOCK))
            assert not client.exists(keys.job_live("oom", JOB))
        finally:
            client.config_set("maxmemory", 0)
        assert received(pubsub) == [2, 3 + SEQ_BLOCK]
        pubsub.close()
    finally:
        client.close()
        server.stop()
