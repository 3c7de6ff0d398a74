"""Fair share end to end (server.infra.fair): one user's backlog does not hold another's job, and
killing worker processes mid-dispatch loses or doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from server.core import keys
from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth, new_token
from workers.tasks.testing import steps_key

# Its subject is the fair queue in Redis and Dramatiq's redelivery, not the database: SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]

FAIR_ENV = {
    "ENABLE_TEST_TASKS": "true",
    "WORKER_PROCESSES": "1",
    "WORKER_THREADS": "2",
    "WORKER_HEARTBEAT_TIMEOUT_MS": "3000",
    "SWEEP_INTERVAL_S": "1",
    "SWEEP_AFTER_S": "5",
}


@pytest.fixture(scope="module")
def fair(redis_url: str, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("fair"),
                       **FAIR_ENV, io_worker=False) as running:
        yield running


@pytest.fixture
def http_stack(fair: Stack) -> Stack:
    return fair


async def _sleep_job(http: httpx.AsyncClient, token: str, **payload: Any) -> dict[str, Any]:
    response = await http.post("/api/tasks", headers=auth(token),
                               json={"type": "test.sleep", "payload": payload})
    assert response.status_code == 202, response.text
    return dict(response.json()["job"])


async def _finished(http: httpx.AsyncClient, token: str, job_ids: list[str],
                    timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [(await http.get(f"/api/jobs/{job_id}", headers=auth(token))).json()
                for job_id in job_ids]
        if all(job["state"] in ("completed", "failed", "cancelled") for job in jobs):
            return jobs
        assert time.monotonic() < deadline, [(j["id"], j["state"]) for j in jobs]
        await asyncio.sleep(0.2)


def _at(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["started_at"])


async def test_a_users_backlog_does_not_hold_another_users_upload(
        fair: Stack, http: httpx.AsyncClient) -> None:
    """A queues 24 jobs, then B one: B's job is told a place near the front and starts
    after a few of A's (about one per worker thread, plus those already handed to the
    workers), not after A's whole backlog, as it would first come, first served."""
    heavy, light = await new_token(http), await new_token(http)
    # Both are sent while the queue is paused: sent as it ran, on a loaded CI machine the
    # two threads had worked off all but 5 of A's jobs before B's was sent.
    admin = auth(fair.env["ADMIN_TOKEN"])
    assert (await http.post("/api/queues/default/pause", headers=admin)).status_code == 200
    try:
        backlog = [await _sleep_job(http, heavy, seconds=0.5) for _ in range(24)]
        single = await _sleep_job(http, light, seconds=0.25)
    finally:
        assert (await http.post("/api/queues/default/resume",
                                headers=admin)).status_code == 200
    assert single["queue_position"] is not None and single["queue_position"] <= 2, single
    [done] = await _finished(http, light, [single["id"]], timeout=60)
    assert done["state"] == "completed"
    theirs = await _finished(http, heavy, [job["id"] for job in backlog], timeout=60)
    # Of A's jobs, all waiting when B's arrived, only a few (about one per thread, plus
    # those handed to the workers) go first.
    submitted = datetime.fromisoformat(done["created_at"])
    waiting = [job for job in theirs if _at(job) > submitted]
    assert len(waiting) == 24, "A's jobs ran while the queue was paused"
    before = [job for job in waiting if _at(job) < _at(done)]
    assert len(before) <= 6, f"{len(before)} of A's {len(waiting)} waiting jobs went first"


async def test_killing_workers_mid_dispatch_loses_and_doubles_nothing(
        fair: Stack, http: httpx.AsyncClient) -> None:
    """Three users' jobs flow through the per-user lists while the worker process is
    killed (kill -9) twice: every job completes; only the jobs running at a kill run
    again; and afterwards no message is left in a list, in Dramatiq's queue, or counted
    in flight."""
    tokens = [await new_token(http) for _ in range(3)]
    jobs = [(token, await _sleep_job(http, token, seconds=0.6, steps=3, record=True))
            for _ in range(5) for token in tokens]
    prefix = fair.env["REDIS_PREFIX"]
    store = aioredis.Redis.from_url(fair.env["REDIS_URL"])

    async def runs(job_id: str) -> int:
        log = [entry.decode() for entry in await store.lrange(steps_key(prefix, job_id), 0, -1)]
        return sum(entry.startswith("step 1 ") for entry in log)

    try:
        for kill in range(2):
            deadline = time.monotonic() + 30
            begun = sum([await runs(job["id"]) for _, job in jobs])
            while sum([await runs(job["id"]) for _, job in jobs]) < begun + 2:
                assert time.monotonic() < deadline, "no work under way"
                await asyncio.sleep(0.05)
            workers = fair.worker_processes()
            assert workers, "no dramatiq worker process found"
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not set(fair.worker_processes()) - set(workers):
                assert time.monotonic() < deadline, f"no worker came back after kill {kill}"
                await asyncio.sleep(0.1)
        finals = [(await _finished(http, token, [job["id"]], timeout=120))[0]
                  for token, job in jobs]
        assert [job["state"] for job in finals] == ["completed"] * len(jobs)
        counts = [await runs(job["id"]) for _, job in jobs]
        assert all(count >= 1 for count in counts), counts
        # Each kill interrupts at most the two jobs its threads were running.
        assert sum(counts) - len(jobs) <= 2 * 2, counts
        namespace = keys.dramatiq_namespace(prefix)
        assert await store.hlen(keys.fair_messages(prefix, "default")) == 0
        assert await store.llen(keys.dramatiq_queue(namespace, "default")) == 0
        # (Redis drops an emptied sorted set: any key left still counts a job.)
        in_flight = [key async for key in store.scan_iter(f"{prefix}:fair:inflight:*")]
        assert in_flight == [], [await store.zrange(key, 0, -1) for key in in_flight]
    finally:
        await store.aclose()
