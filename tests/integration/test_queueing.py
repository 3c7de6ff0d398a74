"""Delays, priorities and queue positions with one worker thread, so order is observable."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from server.core import keys
from tests.conftest import Databases, Stack, running_stack
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def single(redis_url: str, databases: Databases,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("single"),
                       ENABLE_TEST_TASKS="true", WORKER_THREADS="1") as running:
        yield running


@pytest.fixture
def http_stack(single: Stack) -> Stack:
    return single


@pytest.fixture
async def live(single: Stack, http: httpx.AsyncClient,
               sockets: list[LiveClient]) -> tuple[str, LiveClient]:
    token = await new_token(http)
    return token, await connected(single.url, token, sockets)


async def _sleep(http: httpx.AsyncClient, token: str, seconds: float,
                 **options: Any) -> dict[str, Any]:
    response = await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.sleep", "payload": {"seconds": seconds, "steps": 1}, **options})
    assert response.status_code == 202, response.text
    return dict(response.json()["job"])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.one_database
async def test_delayed_job_starts_no_earlier_than_run_at(
        http: httpx.AsyncClient, live: tuple[str, LiveClient]) -> None:
    token, client = live
    job = await _sleep(http, token, 0.1, delay=2)
    assert job["state"] == "queued" and job["run_at"]
    assert job["queue_position"] is None
    await client.wait_final(job["id"], timeout=30)
    active = [(at, data) for at, name, data in client.timed(job["id"]) if name == "job:active"]
    assert active, "job:active was pushed"
    arrived, data = active[0]
    assert arrived >= _ts(job["run_at"]) - 0.05
    assert _ts(data["job"]["started_at"]) >= _ts(job["run_at"]) - 0.05


@pytest.mark.one_database
async def test_high_priority_overtakes_a_backlog_of_low_ones(
        http: httpx.AsyncClient, live: tuple[str, LiveClient]) -> None:
    token, client = live
    busy = await _sleep(http, token, 3)
    await client.wait_for(lambda n, d: n == "job:active" and d["job"]["id"] == busy["id"])
    lows = [await _sleep(http, token, 0.2, priority="low") for _ in range(4)]
    assert [low["queue_position"] for low in lows] == [0, 1, 2, 3]
    high = await _sleep(http, token, 0.2, priority="high")
    assert high["priority"] == "high"
    assert high["queue_position"] == 0, "a high job waits behind no low one"
    polled = (await http.get(f"/api/jobs/{lows[-1]['id']}", headers=auth(token))).json()
    assert polled["queue_position"] == 4
    for job in [*lows, high]:
        assert (await client.wait_final(job["id"], timeout=60))[0] == "job:completed"

    def started(job_id: str) -> float:
        return min(at for at, name, _ in client.timed(job_id) if name == "job:active")

    assert started(high["id"]) < min(started(low["id"]) for low in lows)
    order = sorted(lows, key=lambda job: started(job["id"]))
    assert [job["id"] for job in order] == [job["id"] for job in lows], "lows stay in order"
    # The last low job was told its place each time a job ahead of it started. A refresh
    # between the high job's arrival and its start tells it 4 first: one more ahead.
    positions = [d["job"]["queue_position"] for n, d in client.of_job(lows[-1]["id"])
                 if n == "job:queued"]
    assert positions[0] == 3 and positions[-1] == 0, positions
    after = positions[1:]
    assert after == sorted(after, reverse=True) and max(after) <= 4, positions


async def test_snapshot_carries_queue_positions(single: Stack, http: httpx.AsyncClient,
                                                live: tuple[str, LiveClient],
                                                sockets: list[LiveClient]) -> None:
    token, client = live
    busy = await _sleep(http, token, 2)
    await client.wait_for(lambda n, d: n == "job:active" and d["job"]["id"] == busy["id"])
    waiting = await _sleep(http, token, 0.1)
    second = await connected(single.url, token, sockets)
    _, snapshot = await second.wait_for(lambda name, _: name == "jobs:snapshot")
    by_id = {job["id"]: job for job in snapshot["jobs"]}
    assert by_id[waiting["id"]]["queue_position"] == 0
    assert by_id[busy["id"]]["queue_position"] is None
    await asyncio.wait_for(client.wait_final(waiting["id"]), timeout=30)


async def test_cancelled_queued_job_never_runs(http: httpx.AsyncClient,
                                               live: tuple[str, LiveClient]) -> None:
    token, client = live
    busy = await _sleep(http, token, 2)
    await client.wait_for(lambda n, d: n == "job:active" and d["job"]["id"] == busy["id"])
    waiting = await _sleep(http, token, 0.1)
    assert waiting["queue_position"] == 0
    response = await http.post(f"/api/jobs/{waiting['id']}/cancel", headers=auth(token))
    assert response.status_code == 202
    assert (await client.wait_final(waiting["id"]))[0] == "job:cancelled"
    await client.wait_final(busy["id"], timeout=30)
    after = await _sleep(http, token, 0.1)  # the worker is past the cancelled message
    await client.wait_final(after["id"], timeout=30)
    names = [name for name, _ in client.of_job(waiting["id"])]
    assert "job:active" not in names, names


async def test_admin_sees_queue_counts_and_pauses_and_resumes(
        single: Stack, http: httpx.AsyncClient, live: tuple[str, LiveClient]) -> None:
    token, client = live
    admin = auth(single.env["ADMIN_TOKEN"])
    assert (await http.get("/api/queues", headers=auth(token))).status_code == 403
    assert (await http.post("/api/queues/nope/pause", headers=admin)).status_code == 404

    assert (await http.post("/api/queues/default/pause", headers=admin)).json()["paused"]
    try:
        held = await _sleep(http, token, 0.1)
        assert held["stage"] == "paused"
        await asyncio.sleep(2)  # a worker sees it and leaves it waiting
        state = (await http.get(f"/api/jobs/{held['id']}", headers=auth(token))).json()
        assert (state["state"], state["stage"]) == ("queued", "paused")
        stats = {q["name"]: q for q in (await http.get("/api/queues", headers=admin)).json()[
            "queues"]}
        assert stats["default"]["paused"] is True
        assert stats["default"]["counts"]["queued"] >= 1
        assert stats["default"]["oldest_waiting_s"] is not None
        assert {"images", "email", "webhooks", "default"} <= set(stats)
    finally:
        resumed = await http.post("/api/queues/default/resume", headers=admin)
    assert resumed.json()["paused"] is False
    # Owners are told: the job is waiting again (a new seq), then it runs.
    await client.wait_for(lambda n, d: n == "job:queued" and d["job"]["id"] == held["id"]
                          and d["job"]["stage"] == "stored")
    assert (await client.wait_final(held["id"], timeout=30))[0] == "job:completed"
    stats = {q["name"]: q for q in (await http.get("/api/queues", headers=admin)).json()[
        "queues"]}
    assert stats["default"]["counts"]["completed"] >= 1
    assert stats["default"]["throughput_per_min"] > 0

    # An upload let in while its queue is paused starts "paused" (the admission's one
    # script reads the paused queues), and runs once the queue resumes.
    assert (await http.post("/api/queues/images/pause", headers=admin)).json()["paused"]
    try:
        upload = await http.post("/api/images", headers=auth(token),
                                 files={"file": ("p.jpg", jpeg_bytes(64, 48), "image/jpeg")})
        assert upload.status_code == 202
        assert (upload.json()["job"]["state"], upload.json()["job"]["stage"]) == (
            "queued", "paused")
    finally:
        await http.post("/api/queues/images/resume", headers=admin)
    assert (await client.wait_final(upload.json()["job"]["id"], timeout=30))[0] == \
        "job:completed"

    cleaned = await http.post("/api/queues/default/clean", headers=admin,
                              json={"older_than_s": 0})
    assert cleaned.status_code == 200 and cleaned.json()["removed"] >= 1
    assert (await http.get(f"/api/jobs/{held['id']}", headers=auth(token))).status_code == 404


async def test_job_lists_timelines_and_live_queue_stats_for_admins(
        single: Stack, http: httpx.AsyncClient, live: tuple[str, LiveClient],
        sockets: list[LiveClient]) -> None:
    token, client = live
    admin_token = single.env["ADMIN_TOKEN"]
    admin = await connected(single.url, admin_token, sockets)
    assert (await admin.sio.call("subscribe", {"scope": "all"}, timeout=10))["ok"]
    job = await _sleep(http, token, 0.2)
    await client.wait_final(job["id"], timeout=30)
    _, stats = await admin.wait_for(
        lambda n, d: n == "queues:stats" and any(
            q["name"] == "default" and q["counts"]["completed"] >= 1 for q in d["queues"]),
        timeout=15)
    assert stats["workers"] >= 1 and stats["at"]
    # The workers panel, pushed with the stats: the image and I/O worker processes, each
    # with its one thread, the jobs it handled and its memory.
    _, roster = await admin.wait_for(
        lambda n, d: n == "workers:stats" and any(
            w["pool"] == "images" and w["jobs_done"] >= 1 for w in d["workers"]),
        timeout=15)
    shown = {w["pool"]: w for w in roster["workers"]}
    assert set(shown) == {"images", "io"} and all(w["alive"] for w in shown.values())
    assert shown["images"]["threads"] == 1 and shown["images"]["memory_bytes"] > 0
    assert "default" in shown["images"]["queues"]
    listed = await http.get("/api/workers", headers=auth(admin_token))
    assert {w["id"] for w in listed.json()["workers"]} == {w["id"] for w in shown.values()}
    # The charts' minute so far, pushed while jobs move: counted from the snapshot the
    # minute's start left, set here to nothing counted (so this test's job is in it), well
    # within the minute (at its turn the stack takes its own); the stack's is put back.
    if not 5 < time.time() % 60 < 40:  # the stack takes its own about 2 s into a minute
        await asyncio.sleep((65 - time.time() % 60) % 60)
    store = aioredis.Redis.from_url(single.env["REDIS_URL"])
    snapshot = keys.chart_snapshot(single.env["REDIS_PREFIX"])
    now_minute = int(time.time() // 60)
    fake = json.dumps({"minute": now_minute - 1, "samples": {}})
    kept = await store.getset(snapshot, fake)
    try:
        admin.events.clear()
        await _sleep(http, token, 0)  # something moves: stats are pushed, the minute so far too
        # (One counted before the snapshot was set may come first, then those after it.)
        at = datetime.fromtimestamp(now_minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:00Z")
        _, running = await admin.wait_for(
            lambda n, d: n == "charts:point" and d.get("partial") is True and d["at"] == at
            and d["finished"] >= 1, timeout=25)
        assert "default" in running["queue_depth"] and running["uploads_refused"] >= 0
        last = (await http.get("/api/charts?minutes=5",
                               headers=auth(admin_token))).json()["points"][-1]
        assert last["partial"] is True and last["at"] == running["at"]
        assert last["finished"] >= running["finished"]
    finally:
        if kept is not None and (await store.get(snapshot)) == fake.encode():
            await store.set(snapshot, kept)
        await store.aclose()
    assert (await http.get("/api/workers", headers=auth(token))).status_code == 403

    mine = (await http.get("/api/jobs?state=completed&type=test.sleep",
                           headers=auth(token))).json()["items"]
    assert job["id"] in [j["id"] for j in mine]
    assert all(j["state"] == "completed" for j in mine)
    stranger = await new_token(http)
    assert (await http.get("/api/jobs", headers=auth(stranger))).json()["items"] == []
    everyone = (await http.get("/api/jobs?limit=200", headers=auth(admin_token))).json()
    assert job["id"] in [j["id"] for j in everyone["items"]]
    assert (await http.get("/api/jobs?state=nope", headers=auth(token))).status_code == 400
    # Search: by id (its short form too), owner (admins only), a bad filter is a 400.
    found = (await http.get(f"/api/jobs?id={job['id'][-8:]}&type=test.sleep",
                            headers=auth(token))).json()["items"]
    assert [j["id"] for j in found] == [job["id"]]
    session = (await http.post("/api/session")).json()
    owned = await _sleep(http, session["token"], 0)
    by_owner = (await http.get(f"/api/jobs?user={session['user_id']}",
                               headers=auth(admin_token))).json()["items"]
    assert [j["id"] for j in by_owner] == [owned["id"]]
    assert (await http.get(f"/api/jobs?user={session['user_id']}",
                           headers=auth(session["token"]))).status_code == 200
    refused = await http.get(f"/api/jobs?user={session['user_id']}", headers=auth(stranger))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    bad = await http.get("/api/jobs?from=yesterday", headers=auth(token))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"

    timeline = (await http.get(f"/api/jobs/{job['id']}/timeline", headers=auth(token))).json()
    assert timeline["payload"] == {"seconds": 0.2, "steps": 1}
    names = [e["name"] for e in timeline["events"]]
    assert names[0] == "job:queued" and names[-1] == "job:completed"
    assert "job:active" in names and "job:progress" in names
    seqs = [e["seq"] for e in timeline["events"]]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1, "stored once each, in seq order"
    assert (await http.get(f"/api/jobs/{job['id']}/timeline",
                           headers=auth(stranger))).status_code == 404


async def test_every_read_agrees_with_the_last_pushed_step(
        single: Stack, http: httpx.AsyncClient, live: tuple[str, LiveClient],
        sockets: list[LiveClient]) -> None:
    """A running job's steps are pushed from Redis alone (``server.core.live``), its row
    written only at the attempt's edges: GET /api/jobs/{id}, the job list, ``subscribe``'s
    acknowledgement and ``jobs:snapshot`` all show the step last pushed (its stage,
    progress and seq), not the row's ``job:active``."""
    token, client = live
    response = await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.sleep", "payload": {"seconds": 4.5, "steps": 3}})
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]["id"]
    _, step = await client.wait_for(lambda n, d: n == "job:progress"
                                    and d["job"]["id"] == job_id
                                    and d["job"]["stage"] == "step 2 of 3")
    active = [d["seq"] for n, d in client.of_job(job_id) if n == "job:active"]
    assert active and active[-1] < step["seq"]

    async def agrees(read: dict[str, Any], what: str) -> None:
        """``read`` is the job as one of the pushed steps left it (the last one by then:
        a later step may have come meanwhile, on a slow machine)."""
        assert read["seq"] >= step["seq"], f"{what} shows an older state: {read}"
        _, pushed = await client.wait_for(lambda n, d: n.startswith("job:")
                                          and d["job"]["id"] == job_id
                                          and d["seq"] == read["seq"])
        assert (read["state"], read["stage"], read["progress"]) == (
            pushed["job"]["state"], pushed["job"]["stage"], pushed["job"]["progress"]), what

    await agrees((await http.get(f"/api/jobs/{job_id}", headers=auth(token))).json(),
                 "GET /api/jobs/{id}")
    listed = (await http.get("/api/jobs", headers=auth(token))).json()["items"]
    await agrees(next(j for j in listed if j["id"] == job_id), "GET /api/jobs")
    ack = await client.sio.call("subscribe", {"job_id": job_id}, timeout=10)
    assert ack["ok"], ack
    await agrees(ack["job"], "subscribe")
    again = await connected(single.url, token, sockets)
    [snapshot] = [d for n, d in again.events if n == "jobs:snapshot"]
    await agrees(next(j for j in snapshot["jobs"] if j["id"] == job_id), "jobs:snapshot")
    name, final = await client.wait_final(job_id)
    assert name == "job:completed"
    done = (await http.get(f"/api/jobs/{job_id}", headers=auth(token))).json()
    assert (done["state"], done["seq"]) == ("completed", final["seq"])
