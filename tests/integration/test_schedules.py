"""Schedules over the API, fired exactly once by two real scheduler processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, update

from server.data.db import SyncDatabase
from server.data.models import Job, Schedule, as_utc, utcnow
from tests.conftest import Databases, Stack, running_stack, start_scheduler, stop
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration

# Behind UTC all year: a schedule's hours and weekdays land on other UTC hours (and, late
# in the day, other UTC days), so a schedule computed in UTC gets different answers.
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def scheduled(redis_url: str, databases: Databases,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("scheduled")
    with running_stack(redis_url, databases.new(), base, ENABLE_TEST_TASKS="true",
                       SCHEDULE_POLL_S="1", CLEANUP_CRON="* * * * *",
                       PURGE_CRON="* * * * *", RETENTION_DAYS="1",
                       MAX_SCHEDULES_PER_USER="3", io_worker=False) as running:
        schedulers = [start_scheduler(running.env, running.logs / f"scheduler{n}.log")
                      for n in range(2)]
        try:
            yield running
        finally:
            for proc in schedulers:
                stop(proc)


@pytest.fixture
def http_stack(scheduled: Stack) -> Stack:
    return scheduled


async def _schedule(http: httpx.AsyncClient, token: str, cron: str,
                    timezone: str = "Europe/Paris") -> httpx.Response:
    return await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.sleep", "payload": {"seconds": 0.1, "steps": 1},
        "repeat": {"cron": cron, "timezone": timezone}})


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _next_local(after: datetime, zone: ZoneInfo, hour: int,
                weekday: int | None = None) -> datetime:
    """The first ``hour``:00 of ``zone`` (on ``weekday``, Monday 0) after ``after``, in UTC;
    worked out here from the calendar, not with server.core.cron."""
    today = after.astimezone(zone).date()
    for day in (today + timedelta(days=n) for n in range(9)):
        candidate = datetime.combine(day, clock(hour), tzinfo=zone)
        if (weekday is None or day.weekday() == weekday) and candidate > after:
            return candidate.astimezone(UTC)
    raise AssertionError("unreachable: every weekday comes within 9 days")


async def _listed(http: httpx.AsyncClient, token: str, schedule_id: str) -> dict[str, Any]:
    items = (await http.get("/api/schedules", headers=auth(token))).json()["items"]
    return dict(next(s for s in items if s["id"] == schedule_id))


async def test_next_run_is_worked_out_in_the_schedules_zone(http: httpx.AsyncClient) -> None:
    """The next run the API reports, when created and when listed (read back from the
    database), is the declared zone's: 09:00 daily and Friday 23:00 in New York are other
    instants, and the second another weekday, than the same crons in UTC."""
    token = await new_token(http)
    crons = {"0 9 * * *": (9, None), "0 23 * * 5": (23, 4)}  # (hour, weekday Monday=0)
    for cron, (hour, weekday) in crons.items():
        before = utcnow()
        created = await _schedule(http, token, cron, timezone="America/New_York")
        after = utcnow()
        assert created.status_code == 201, created.text
        schedule = created.json()["schedule"]
        assert schedule["timezone"] == "America/New_York"
        reported = _when(schedule["next_run_at"])
        # Computed once, at creation: a boundary crossed during the request allows either.
        expected = {_next_local(moment, NEW_YORK, hour, weekday) for moment in (before, after)}
        in_utc = {_next_local(moment, ZoneInfo("UTC"), hour, weekday)
                  for moment in (before, after)}
        assert expected.isdisjoint(in_utc), "the cron must tell the zones apart"
        assert reported in expected, (cron, reported, expected)
        assert reported.astimezone(NEW_YORK).hour == hour
        if weekday is not None:
            assert reported.astimezone(NEW_YORK).weekday() == weekday
            assert reported.weekday() == (weekday + 1) % 7, "Saturday in UTC"
        listed = await _listed(http, token, schedule["id"])
        assert _when(listed["next_run_at"]) == reported, "stored and read back unchanged"


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


async def test_a_fresh_session_gets_no_every_minute_or_high_priority_schedules(
        scheduled: Stack, http: httpx.AsyncClient) -> None:
    """Every-minute schedules used to be accepted from any fresh session: now a schedule
    fires at most every SCHEDULE_MIN_INTERVAL_S (default 5 minutes) wherever two firings
    meet, high priority needs an admin, and a user holds MAX_SCHEDULES_PER_USER."""
    token = await new_token(http)
    for cron in ("* * * * *", "*/2 * * * *", "0,1 * * * *", "0,58 0,23 * * *"):
        refused = await _schedule(http, token, cron)
        assert refused.status_code == 422, (cron, refused.text)
        assert refused.json()["error"]["code"] == "cron_too_frequent"
    high = await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.sleep", "payload": {"seconds": 0.1}, "priority": "high",
        "repeat": {"cron": "0 7 * * *"}})
    assert high.status_code == 403, high.text
    assert high.json()["error"]["code"] == "priority_not_allowed"
    admin = await http.post("/api/tasks", headers=auth(scheduled.env["ADMIN_TOKEN"]), json={
        "type": "test.sleep", "payload": {"seconds": 0.1}, "priority": "high",
        "repeat": {"cron": "0 7 1 1 *"}})
    assert admin.status_code == 201, admin.text
    for cron in ("*/5 * * * *", "0 * * * *", "30 7 * * 1-5"):
        assert (await _schedule(http, token, cron)).status_code == 201
    over = await _schedule(http, token, "0 8 * * *")
    assert over.status_code == 409 and over.json()["error"]["code"] == "too_many_schedules"
    assert "at most 3 schedules" in over.json()["error"]["message"]


async def test_a_due_schedule_fires_once_with_two_schedulers(
        scheduled: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(scheduled.url, token, sockets)
    # New Year in New York: 05:00 UTC on 1 January, not midnight.
    schedule = (await _schedule(http, token, "0 0 1 1 *",
                                timezone="America/New_York")).json()["schedule"]
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
        fired_at = utcnow()
        moved = as_utc(database.read(
            lambda s: s.get(Schedule, schedule["id"]).next_run_at))
    finally:
        database.dispose()
    new_year = datetime(fired_at.astimezone(NEW_YORK).year + 1, 1, 1, tzinfo=NEW_YORK)
    assert moved == new_year.astimezone(UTC)
    assert (moved.month, moved.day, moved.hour) == (1, 1, 5)
    listed = await _listed(http, token, schedule["id"])
    assert _when(listed["next_run_at"]) == moved, "the API reports the moved next run"


@pytest.mark.timeout(180)
# The purge's and clean-up's queries run on both databases in
# tests/server/store/test_retention.py; this is the scheduler firing them (a minute's wait).
@pytest.mark.one_database
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
