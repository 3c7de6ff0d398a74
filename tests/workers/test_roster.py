"""The workers panel: a real Dramatiq worker's ``Roster`` reports (threads, the job each
runs, jobs done, memory) and the web's ``services.workers.roster`` reading them, alive,
dead and gone, against the session's Redis."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker

from server.core import keys
from server.infra.settings import Settings
from server.services import workers
from workers.middleware.roster import Roster

pytestmark = pytest.mark.integration

QUEUE = "roster-test"


@pytest.fixture
def prefix() -> str:
    return f"roster-{secrets.token_hex(4)}"


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
async def state(redis_url: str, prefix: str) -> AsyncIterator[Any]:
    made = aioredis.Redis.from_url(redis_url)
    yield SimpleNamespace(redis=made, settings=Settings(
        redis_prefix=prefix, worker_heartbeat_timeout_ms=20_000))
    await made.aclose()


def _wait(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def test_a_worker_reports_what_its_threads_run_and_leaves_when_it_stops(
        redis_url: str, client: redis.Redis, prefix: str, state: Any) -> None:
    broker = RedisBroker(url=redis_url, namespace=f"{prefix}-dq")
    roster = Roster(client, prefix, pool="images", interval_s=0.05, forget_after_s=60)
    broker.add_middleware(roster)
    release, started = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="image.process@high",
                    max_retries=0)
    def work(job_id: str, fail: bool = False) -> None:
        if fail:
            raise ValueError("boom")
        started.set()
        release.wait(10)

    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        work.send("job-1")
        assert started.wait(10)
        _wait(lambda: client.get(keys.worker_report(prefix, roster.id)) is not None and
              b"job-1" in client.get(keys.worker_report(prefix, roster.id)), "a report")
        (shown,) = await workers.roster(state)
        assert (shown.id, shown.pool, shown.queues, shown.threads, shown.busy) == (
            roster.id, "images", [QUEUE], 2, 1)
        (running,) = shown.running
        assert (running.job_id, running.type) == ("job-1", "image.process")
        assert running.thread and shown.alive and shown.memory_bytes > 10_000_000
        release.set()
        work.send("job-2", fail=True)
        _wait(lambda: roster.report().jobs_done == 2, "both jobs handled")
        report = roster.report()
        assert (report.busy, report.running, report.jobs_failed) == (0, [], 1)
    finally:
        release.set()
        worker.stop()
        broker.close()
    # A clean stop leaves the roster at once.
    assert await workers.roster(state) == []
    assert client.zscore(keys.worker_roster(prefix), roster.id) is None


async def test_a_silent_worker_shows_dead_until_its_report_expires(
        client: redis.Redis, prefix: str, state: Any) -> None:
    later = time.time() + 25  # past the 20 s heartbeat timeout for the silent one
    alive = Roster(client, prefix, pool="io", interval_s=1, forget_after_s=60,
                   clock=lambda: later - 1)
    alive.id = "host-a:101"
    silent = Roster(client, prefix, pool="images", interval_s=1, forget_after_s=60)
    silent.id = "host-b:202"
    silent.send()
    alive.send()
    shown = await workers.roster(state, now=later)
    assert [(w.id, w.alive) for w in shown] == [("host-a:101", True), ("host-b:202", False)]
    assert shown[1].heartbeat_age_s >= 20
    client.delete(keys.worker_report(prefix, silent.id))  # WORKER_FORGET_S went by
    assert [w.id for w in await workers.roster(state, now=later)] == ["host-a:101"]
    assert client.zrange(keys.worker_roster(prefix), 0, -1) == [b"host-a:101"]
