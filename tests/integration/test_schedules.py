"""Schedules over the API, fired exactly once by two real scheduler processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from server.db import SyncDatabase
from server.models import Job, Schedule, utcnow
from tests.conftest import Databases, Stack, running_stack, start_scheduler, stop
from tests.factories import LiveClient, auth, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scheduled(redis_url: str, databases: Databases,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("scheduled")
    with running_stack(redis_url, databases.new(), base, ENABLE_TEST_TASKS="true",
                       SCHEDULE_POLL_S="1", CLEANUP_CRON="* * * * *",
                       PURGE_CRON="* * * * *", RETENTION_DAYS="1") as running:
        schedulers = [start_scheduler(running.env, running.logs / f"scheduler{n}.log")
                      for n in range(2)]
        try:
            yield running
        finally:
            for proc in schedulers:
                stop(proc)


@pytest.fixture
async def http(scheduled: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=scheduled.url, timeout=30) as client:
        yield client


async def _schedule(http: httpx.AsyncClient, token: str, cron: str,
                    timezone: str = "Europe/Paris") -> httpx.Response:
    return await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.sleep", "payload": {"seconds": 0.1, "steps": 1},
        "repeat": {"cron": cron, "timezone": timezone}})


async def test_schedules_are_created_listed_and_deleted(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    created = await _schedule(http, token, "*/5 * * * *")
    assert created.status_code == 201, created.text
    schedule = created.json()["schedule"]
    assert schedule["cron"] == "*/5 * * * *" and schedule["timezone"] == "Europe/Paris"
    assert schedule["type"] == "test.sleep"
    next_run = datetime.fromisoformat(schedule["next_run_at"].replace("Z", "+00:00"))
    assert next_run > utcnow() and next_run.minute % 5 == 0
    listed = (await http.get("/api/schedules", headers=auth(token))).json()["items"]
    assert [s["id"] for s in listed] == [schedule["id"]]
    bad = await _schedule(http, token, "61 * * * *")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cron"
    assert (await _schedule(http, token, "* * *")).status_code == 422
    zone = await _schedule(http, token, "0 * * * *", timezone="Mars/Olympus")
    assert zone.status_code == 422 and zone.json()["error"]["code"] == "invalid_timezone"
    other = await new_token(http)
    assert (await http.delete(f"/api/schedules/{schedule['id']}",
                              headers=auth(other))).status_code == 404
    assert (await http.delete(f"/api/schedules/{schedule['id']}",
                              headers=auth(token))).status_code == 204
    assert (await http.get("/api/schedules", headers=auth(token))).json()["items"] == []


async def test_a_due_schedule_fires_once_with_two_schedulers(scheduled: Stack,
                                                             http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    client = await LiveClient().connect(scheduled.url, token, transports=["websocket"])
    try:
        schedule = (await _schedule(http, token, "0 0 1 1 *", timezone="UTC")).json()[
            "schedule"]
        database = SyncDatabase(scheduled.env["DATABASE_URL"])
        try:
            # Make it due now instead of waiting for New Year.
            database.write(lambda s: s.execute(update(Schedule).where(
                Schedule.id == schedule["id"]).values(next_run_at=utcnow())))
            _, event = await client.wait_for(lambda n, d: n == "job:completed"
                                             and d["job"]["type"] == "test.sleep", timeout=30)
            _, queued = await client.wait_for(lambda n, d: n == "job:queued"
                                              and d["job"]["id"] == event["job"]["id"])
            assert isinstance(queued["job"]["queue_position"], int), \
                "a worker-side job:queued carries the position too"
            await asyncio.sleep(3)  # both schedulers polled several times since
            owner = database.read(lambda s: s.get(Job, event["job"]["id"]).user_id)
            fired = database.read(lambda s: s.scalar(select(func.count()).select_from(Job)
                                                     .where(Job.user_id == owner)))
            assert fired == 1, "one firing, one job, whatever the number of schedulers"
            moved = database.read(lambda s: s.get(Schedule, schedule["id"]).next_run_at)
        finally:
            database.dispose()
        assert (moved.year, moved.month, moved.day) == (utcnow().year + 1, 1, 1)
    finally:
        await client.close()


@pytest.mark.timeout(180)
async def test_scheduler_cleans_stray_files_and_purges_old_jobs(
        scheduled: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(64, 48))).json()
    await wait_final(http, token, body["job"]["id"])
    stray = scheduled.data_dir / "files" / "tmp" / "upload-stray"
    stray.write_bytes(b"left behind by a crashed request")
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    database = SyncDatabase(scheduled.env["DATABASE_URL"])
    try:
        database.write(lambda s: s.execute(update(Job).where(Job.id == body["job"]["id"])
                                           .values(finished_at=utcnow() - timedelta(days=3))))
    finally:
        database.dispose()
    # Both run every minute here (CLEANUP_CRON / PURGE_CRON), in one of two schedulers.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        gone = (await http.get(f"/api/images/{body['image']['id']}",
                               headers=auth(token))).status_code == 404
        if gone and not stray.exists():
            break
        await asyncio.sleep(1)
    assert not stray.exists(), "the hourly clean-up removed the stray temp file"
    assert (await http.get(f"/api/images/{body['image']['id']}",
                           headers=auth(token))).status_code == 404
    assert (await http.get(f"/api/jobs/{body['job']['id']}",
                           headers=auth(token))).status_code == 404
    assert not list(scheduled.data_dir.rglob(f"*{body['image']['id']}*"))
