"""Failure handling with real processes: retries, dead letters, cancel, crashes, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from server.core import keys
from server.core.signing import hash_token
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job
from server.infra.embedded_redis import EmbeddedRedis
from tests.conftest import Databases, Stack, running_stack
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token, upload, wait_final
from workers.tasks.testing import steps_key

pytestmark = pytest.mark.integration

# Short enough for tests, and documented as settings: a dead worker's job is redelivered
# after the heartbeat timeout; a job running past the time limit is stopped.
FAULT_ENV = {
    "ENABLE_TEST_TASKS": "true",
    "WORKER_PROCESSES": "2",
    "WORKER_HEARTBEAT_TIMEOUT_MS": "3000",
    "JOB_TIME_LIMIT_S": "4",
    "RETRY_MIN_BACKOFF_MS": "1000",
    "RETRY_MAX_BACKOFF_MS": "8000",
    "SWEEP_INTERVAL_S": "1",
    "SWEEP_AFTER_S": "1",
}
HEARTBEAT_TIMEOUT_S = int(FAULT_ENV["WORKER_HEARTBEAT_TIMEOUT_MS"]) / 1000
# Redelivery after a worker dies: its heartbeat and its job's lease go stale within the
# heartbeat timeout, and the next broker call of a live worker (each call does maintenance,
# idle workers poll every second) requeues its messages. So within twice the timeout, or
# when the supervisor took longer than a timeout to bring a worker back, within a timeout
# of that. Below the web's sweeper, whose fallback resends a silent active job only after
# three timeouts (with a new message id), and far below Dramatiq's default 60 s timeout.
REDELIVERY_BOUND_S = 2 * HEARTBEAT_TIMEOUT_S
# Generous deadlines for waits whose duration is not what the test is about.
SLOW_S = 90


@pytest.fixture(scope="module")
def faults(redis_url: str, databases: Databases,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("faults"),
                       **FAULT_ENV, io_worker=False) as running:
        yield running


@pytest.fixture
def http_stack(faults: Stack) -> Stack:
    return faults


async def _task(http: httpx.AsyncClient, token: str, task_type: str, payload: dict[str, Any],
                **options: Any) -> dict[str, Any]:
    response = await http.post("/api/tasks", headers=auth(token),
                               json={"type": task_type, "payload": payload, **options})
    assert response.status_code == 202, response.text
    return dict(response.json()["job"])


def _admin(stack: Stack) -> dict[str, str]:
    return auth(stack.env["ADMIN_TOKEN"])


async def _dead_letter(http: httpx.AsyncClient, stack: Stack, job_id: str) -> dict[str, Any]:
    items = (await http.get("/api/dlq?limit=200", headers=_admin(stack))).json()["items"]
    matching = [item for item in items if item["job"]["id"] == job_id]
    assert matching, f"job {job_id} is not in the dead-letter queue"
    return dict(matching[0])


def _when(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def test_transient_fault_is_retried_with_backoff_then_succeeds(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.flaky", {"fail_runs": 2})
    name, final = await client.wait_final(job["id"], timeout=60)
    assert name == "job:completed", final
    assert final["job"]["attempt"] == 3
    assert final["job"]["result"] == {"runs": 3}

    events = client.of_job(job["id"])
    seqs = [data["seq"] for _, data in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    timed = client.timed(job["id"])
    retrying = [(at, data["job"]) for at, n, data in timed if n == "job:retrying"]
    actives = [(at, data["job"]) for at, n, data in timed if n == "job:active"]
    assert [j["attempt"] for _, j in retrying] == [1, 2]
    assert [j["attempt"] for _, j in actives] == [1, 2, 3]
    assert all(j["progress"] == 0 for _, j in actives), "each attempt restarts its progress"
    for number, (arrived, retry) in enumerate(retrying, start=1):
        assert retry["max_attempts"] == 4
        assert retry["error"]["type"] == "TransientError"
        assert retry["error"]["retryable"] is True
        assert f"run {number}" in retry["error"]["message"]
        # Exponential backoff from RETRY_MIN_BACKOFF_MS (1 s): at least 1 s, then 2 s.
        run_at = _when(retry["run_at"])
        assert run_at - arrived >= 0.9 * 2 ** (number - 1), (number, run_at - arrived)
        # The next attempt starts no earlier than announced.
        next_start, _ = actives[number]
        assert next_start >= run_at - 0.1


async def test_permanent_fault_goes_straight_to_the_dead_letter_queue(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.flaky", {"fail_runs": 5, "error": "permanent"})
    name, final = await client.wait_final(job["id"])
    assert name == "job:failed"
    assert final["job"]["attempt"] == 1
    assert final["job"]["error"] == {"type": "ValueError", "retryable": False,
                                     "message": "injected permanent fault on run 1"}
    assert "job:retrying" not in [n for n, _ in client.of_job(job["id"])]
    entry = await _dead_letter(http, faults, job["id"])
    assert entry["attempts"] == 1
    assert entry["payload"] == {"fail_runs": 5, "error": "permanent"}
    assert "injected permanent fault on run 1" in entry["error"]["traceback"]
    assert entry["failed_at"]
    # The DLQ is for admins only.
    assert (await http.get("/api/dlq", headers=auth(token))).status_code == 403


async def test_exhausted_job_keeps_final_traceback_and_dlq_retry_reruns_same_id(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.flaky", {"fail_runs": 2}, max_attempts=2)
    name, final = await client.wait_final(job["id"], timeout=60)
    assert name == "job:failed"
    assert final["job"]["attempt"] == 2
    entry = await _dead_letter(http, faults, job["id"])
    assert entry["attempts"] == 2
    assert entry["error"]["type"] == "TransientError"
    # The error of the last attempt, not the stale copy Dramatiq keeps from the one before.
    assert "injected transient fault on run 2" in entry["error"]["traceback"]
    assert "run 1" not in entry["error"]["message"]
    # The job's page: each attempt with its worker thread, stages, error, traceback and
    # the back-off before the next one.
    timeline = (await http.get(f"/api/jobs/{job['id']}/timeline",
                               headers=_admin(faults))).json()
    first, second = timeline["attempts"]
    assert (first["number"], first["outcome"], second["outcome"]) == (1, "retrying", "failed")
    assert "injected transient fault on run 1" in first["traceback"]
    assert "injected transient fault on run 2" in second["traceback"]
    assert first["backoff_s"] > 0 and second["backoff_s"] is None
    host, pid, thread = first["worker"].split(":", 2)
    assert host and int(pid) > 0 and thread
    # The owner sees the same story without the servers' names.
    owned = (await http.get(f"/api/jobs/{job['id']}/timeline", headers=auth(token))).json()
    assert [a["outcome"] for a in owned["attempts"]] == ["retrying", "failed"]
    assert {a["worker"] for a in owned["attempts"]} | {e["worker"] for e in owned["events"]} == {
        None}
    assert first["stages"][0]["stage"] == "stored" and first["seconds"] >= 0

    retried = await http.post(f"/api/dlq/{job['id']}/retry", headers=_admin(faults))
    assert retried.status_code == 202, retried.text
    assert retried.json()["job"]["id"] == job["id"]
    assert retried.json()["job"]["state"] == "queued"
    assert retried.json()["job"]["attempt"] == 0
    name, again = await client.wait_for(
        lambda n, d: n == "job:completed" and d["job"]["id"] == job["id"], timeout=60)
    assert again["job"]["result"] == {"runs": 3}
    assert again["job"]["attempt"] == 1
    assert again["seq"] > final["seq"]
    items = (await http.get("/api/dlq?limit=200", headers=_admin(faults))).json()["items"]
    assert job["id"] not in [item["job"]["id"] for item in items]
    # Not in the DLQ any more: a second retry is a 404.
    assert (await http.post(f"/api/dlq/{job['id']}/retry",
                            headers=_admin(faults))).status_code == 404


async def test_retrying_a_dead_image_job_whose_image_is_gone_is_a_clear_409(
        faults: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    whole = jpeg_bytes(900, 700)
    body = (await upload(http, token, whole[: len(whole) // 2], filename="cut.jpg")).json()
    failed = await wait_final(http, token, body["job"]["id"])
    assert failed["state"] == "failed" and failed["attempt"] == 1
    assert (await http.delete(f"/api/images/{body['image']['id']}",
                              headers=auth(token))).status_code == 204
    refused = await http.post(f"/api/dlq/{failed['id']}/retry", headers=_admin(faults))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "input_missing"


async def test_dead_letters_filter_delete_and_clear(faults: Stack,
                                                    http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    jobs = [await _task(http, token, "test.flaky", {"fail_runs": 9, "error": "permanent"})
            for _ in range(2)]
    for job in jobs:
        assert (await wait_final(http, token, job["id"]))["state"] == "failed"
    admin = _admin(faults)
    by_type = (await http.get("/api/dlq?type=test.flaky&limit=200", headers=admin)).json()
    assert {j["id"] for j in jobs} <= {i["job"]["id"] for i in by_type["items"]}
    assert all(i["job"]["type"] == "test.flaky" for i in by_type["items"])
    by_error = (await http.get("/api/dlq?error=permanent%20fault", headers=admin)).json()
    assert {j["id"] for j in jobs} <= {i["job"]["id"] for i in by_error["items"]}
    nothing = (await http.get("/api/dlq?error=no-such-error-text", headers=admin)).json()
    assert nothing["items"] == []

    assert (await http.delete(f"/api/dlq/{jobs[0]['id']}", headers=admin)).status_code == 204
    assert (await http.delete(f"/api/dlq/{jobs[0]['id']}", headers=admin)).status_code == 404
    # "Delete all that match": the search's matches go, the rest stay.
    other = await _task(http, token, "test.flaky", {"fail_runs": 9, "error": "permanent"})
    assert (await wait_final(http, token, other["id"]))["state"] == "failed"
    assert (await http.delete(f"/api/dlq?id={jobs[1]['id']}", headers=admin)).status_code == 204
    left = {i["job"]["id"] for i in (await http.get("/api/dlq?limit=200", headers=admin)).json()[
        "items"]}
    assert jobs[1]["id"] not in left and other["id"] in left
    assert (await http.delete("/api/dlq?sha256=xyz", headers=admin)).json()["error"][
        "code"] == "invalid_filter"
    # "Retry all that match": only the matches run again.
    third = await _task(http, token, "test.flaky", {"fail_runs": 9, "error": "permanent"})
    assert (await wait_final(http, token, third["id"]))["state"] == "failed"

    async def dead_letters() -> dict[str, str]:
        found = (await http.get("/api/dlq?limit=200", headers=admin)).json()["items"]
        return {i["job"]["id"]: i["failed_at"] for i in found}

    before = await dead_letters()
    retried = await http.post(f"/api/dlq/retry?id={other['id'][-8:]}", headers=admin)
    assert retried.status_code == 202
    assert (retried.json()["retried"], retried.json()["errors"]) == ([other["id"]], [])
    assert (await wait_final(http, token, other["id"]))["attempt"] == 1  # ran (and failed) again
    # The match left the queue and ran; its permanent fault put it back, a new dead letter
    # (a worker may fetch it before the listing above could see it gone). The rest stay.
    after = await dead_letters()
    assert after[other["id"]] != before[other["id"]]
    assert after[third["id"]] == before[third["id"]]
    assert (await http.delete("/api/dlq", headers=admin)).status_code == 204
    assert (await http.get("/api/dlq", headers=admin)).json()["items"] == []
    # The jobs themselves stay failed: the DLQ entry is gone, the history is not.
    assert (await http.get(f"/api/jobs/{jobs[1]['id']}", headers=auth(token))).json()[
        "state"] == "failed"


async def _recorded(store_: aioredis.Redis, key: str) -> list[str]:
    return [entry.decode() for entry in await store_.lrange(key, 0, -1)]


async def test_cancel_running_job_stops_it_at_the_next_stage(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    """Cancelling a running job stops its work: in the task's own log of the steps it began
    (a Redis list the worker writes, not events), at most the one step whose report was
    already out when the cancel was answered comes after it (the cancel's event, published
    before the 202, refuses any later step), every step's seq is below the cancel's, and
    the run ends stopped by its cancellation check."""
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    steps = 12  # 0.25 s apart: 3 s in all, within the 4 s time limit
    job = await _task(http, token, "test.sleep", {"seconds": 3, "steps": steps, "record": True})
    key = steps_key(faults.env["REDIS_PREFIX"], job["id"])
    store_ = aioredis.Redis.from_url(faults.env["REDIS_URL"])
    try:
        deadline = time.monotonic() + 30
        while len(await _recorded(store_, key)) < 2:  # under way, well before its end
            assert time.monotonic() < deadline, "the job never started its steps"
            await asyncio.sleep(0.02)
        cancelled = await http.post(f"/api/jobs/{job['id']}/cancel", headers=auth(token))
        assert cancelled.status_code == 202
        # Steps begun by the time the cancel was accepted (the run may already have ended
        # by this read, so its "end" entry is not counted).
        begun_at_cancel = len([entry for entry in await _recorded(store_, key)
                               if entry.startswith("step ")])
        deadline = time.monotonic() + 30
        while not (log := await _recorded(store_, key))[-1].startswith("end "):
            assert time.monotonic() < deadline, f"the run never ended: {log}"
            await asyncio.sleep(0.05)
    finally:
        await store_.aclose()
    *begun, end = log
    assert [entry.split(" seq ")[0] for entry in begun] == [
        f"step {n}" for n in range(1, len(begun) + 1)], log
    assert begun_at_cancel <= len(begun) <= begun_at_cancel + 1 and len(begun) < steps, log
    assert end == "end JobCancelled", "stopped by its cancellation check"
    name, _ = await client.wait_final(job["id"])
    assert name == "job:cancelled"
    state = (await http.get(f"/api/jobs/{job['id']}", headers=auth(token))).json()
    after_cancel = [entry for entry in begun if int(entry.split(" seq ")[1]) > state["seq"]]
    assert not after_cancel, f"steps begun after the cancel (seq {state['seq']}): {after_cancel}"
    assert state["state"] == "cancelled" and state["result"] is None
    assert (await http.post(f"/api/jobs/{job['id']}/cancel",
                            headers=auth(token))).status_code == 409
    # The worker thread is free again.
    quick = await _task(http, token, "test.sleep", {"seconds": 0.1, "steps": 1})
    assert (await client.wait_final(quick["id"]))[0] == "job:completed"


@pytest.mark.one_database
async def test_job_over_its_time_limit_fails_cleanly_as_transient(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.sleep", {"seconds": 30, "steps": 60}, max_attempts=2)
    name, final = await client.wait_final(job["id"], timeout=60)
    assert name == "job:failed"
    assert final["job"]["error"]["type"] == "TimeLimitExceeded"
    assert final["job"]["attempt"] == 2
    names = [n for n, _ in client.of_job(job["id"])]
    assert names.count("job:retrying") == 1, names


def _message_id(stack: Stack, job_id: str) -> str | None:
    """The id of the message the job's row names (the sweeper gives a stuck job a new one)."""
    database = SyncDatabase(stack.env["DATABASE_URL"])
    try:
        return database.read(lambda s: s.get(Job, job_id).message_id)
    finally:
        database.dispose()


@pytest.mark.one_database
async def test_killed_worker_job_is_redelivered_and_completes(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    """Killing every worker mid-job redelivers its message within twice the heartbeat
    timeout (plus however much longer than one timeout the supervisor took to bring a
    worker back): the same message (Dramatiq's redelivery, not the sweeper's fallback,
    which would give the job a new message id), run as a second attempt to completion."""
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.sleep", {"seconds": 2, "steps": 4})
    await client.wait_for(lambda n, d: n == "job:progress" and d["job"]["id"] == job["id"])
    message_id = _message_id(faults, job["id"])
    beats = aioredis.Redis.from_url(faults.env["REDIS_URL"])
    beats_key = keys.dramatiq_heartbeats(keys.dramatiq_namespace(faults.env["REDIS_PREFIX"]))
    try:
        dead = set(await beats.zrange(beats_key, 0, -1))
        assert dead, "the running worker writes no heartbeat (wrong key, or none at all)"
        workers = faults.worker_processes()
        assert workers, "no dramatiq worker process found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        back_after: float | None = None  # when a new worker process first beat
        while not [d for n, d in client.of_job(job["id"])
                   if n == "job:active" and d["job"]["attempt"] == 2]:
            if back_after is None and set(await beats.zrange(beats_key, 0, -1)) - dead:
                back_after = time.monotonic() - killed_at
            assert time.monotonic() - killed_at < SLOW_S, "the job was never redelivered"
            await asyncio.sleep(0.05)
        redelivered_after = time.monotonic() - killed_at
        if back_after is None and set(await beats.zrange(beats_key, 0, -1)) - dead:
            back_after = redelivered_after  # up between two looks: by now at the latest
    finally:
        await beats.aclose()
    assert back_after is not None, "redelivered, yet no new worker ever wrote a heartbeat"
    bound = REDELIVERY_BOUND_S + max(0.0, back_after - HEARTBEAT_TIMEOUT_S)
    assert redelivered_after < bound, (redelivered_after, back_after)
    name, final = await client.wait_final(job["id"], timeout=30)
    assert name == "job:completed"
    assert final["job"]["attempt"] == 2, "the redelivery is a second attempt"
    assert final["job"]["result"] == {"slept_s": 2}
    assert _message_id(faults, job["id"]) == message_id, \
        "redelivered by Dramatiq, not resent by the sweeper"


@pytest.mark.one_database
async def test_message_that_kills_its_worker_every_time_ends_in_the_dlq(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.crash", {}, max_attempts=2)
    name, final = await client.wait_final(job["id"], timeout=SLOW_S)
    assert name == "job:failed"
    assert final["job"]["error"]["type"] == "WorkerLost"
    assert "gave up after 2 attempts" in final["job"]["error"]["message"]
    entry = await _dead_letter(http, faults, job["id"])
    assert entry["error"]["type"] == "WorkerLost"
    # The supervisor brought the workers back: the next job runs.
    quick = await _task(http, token, "test.sleep", {"seconds": 0.1, "steps": 1})
    assert (await client.wait_final(quick["id"], timeout=60))[0] == "job:completed"


async def test_client_ends_with_the_final_state_across_a_web_restart(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.sleep", {"seconds": 3, "steps": 3})
    await client.wait_for(lambda n, d: n == "job:active" and d["job"]["id"] == job["id"])
    snapshots_before = sum(1 for n, _ in client.events if n == "jobs:snapshot")
    await asyncio.to_thread(faults.restart_web)

    def final_seen(name: str, data: Any) -> bool:
        if name == "job:completed":
            return bool(data["job"]["id"] == job["id"])
        return name == "jobs:snapshot" and any(
            j["id"] == job["id"] and j["state"] == "completed" for j in data["jobs"])

    await client.wait_for(final_seen, timeout=60)
    assert sum(1 for n, _ in client.events if n == "jobs:snapshot") > snapshots_before, \
        "the client reconnected by itself and got a fresh snapshot"


@pytest.mark.one_database
async def test_a_delayed_job_a_worker_lost_in_a_redis_outage_still_runs(
        databases: Databases, tmp_path: Path) -> None:
    """A worker fetches a delayed message into memory until it is due; a Redis outage
    shorter than the heartbeat timeout makes Dramatiq's consumer forget it, while it stays
    unacknowledged in that (live) worker's name, so Dramatiq never redelivers it. The
    web's sweeper sends the job again once it is overdue, and it runs."""
    private = EmbeddedRedis(tmp_path / "redis", persistent=True, use_socket=False).start()
    try:
        with running_stack(private.url, databases.new(), tmp_path,
                           **{**FAULT_ENV, "WORKER_HEARTBEAT_TIMEOUT_MS": "30000"},
                           io_worker=False) as stack:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
                token = await new_token(http)
                job = await _task(http, token, "test.sleep", {"seconds": 0.1, "steps": 1},
                                  delay=3)
                client = aioredis.Redis.from_url(private.url)
                try:
                    namespace = keys.dramatiq_namespace(stack.env["REDIS_PREFIX"])
                    pattern = keys.dramatiq_acks(namespace, "*",
                                                 keys.dramatiq_delay_queue("default"))

                    async def fetched() -> bool:
                        return any([await client.scard(key)
                                    async for key in client.scan_iter(pattern)])

                    for _ in range(100):
                        if await fetched():
                            break
                        await asyncio.sleep(0.1)
                    assert await fetched(), "a worker holds the delayed message"
                finally:
                    await client.aclose()
                await asyncio.to_thread(private.stop)
                # Long enough for the worker's consumer to give up its connection, far
                # shorter than the heartbeat timeout: the worker stays alive to Dramatiq.
                await asyncio.sleep(4)
                await asyncio.to_thread(private.start)
                done = await wait_final(http, token, job["id"], timeout=SLOW_S)
                assert (done["state"], done["attempt"]) == ("completed", 1)
    finally:
        private.stop()


async def test_redis_restart_loses_nothing(databases: Databases,
                                           tmp_path: Path, sockets: list[LiveClient]) -> None:
    # A Redis of its own, with its append-only file, so it can be stopped and started.
    private = EmbeddedRedis(tmp_path / "redis", persistent=True, use_socket=False).start()
    try:
        with running_stack(private.url, databases.new(), tmp_path,
                           **{**FAULT_ENV, "JOB_TIME_LIMIT_S": "60"}, io_worker=False) as stack:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
                token = await new_token(http)
                client = await connected(stack.url, token, sockets)
                # Still running when Redis comes back, past the heartbeat timeout.
                sleepers = [await _task(http, token, "test.sleep", {"seconds": 9, "steps": 9})
                            for _ in range(2)]
                # Fails (transiently) while Redis is down: its retry cannot be enqueued.
                flaky = await _task(http, token, "test.flaky", {"fail_runs": 1, "sleep_s": 1.5})
                for job in [*sleepers, flaky]:
                    await client.wait_for(
                        lambda n, d, j=job: n == "job:progress" and d["job"]["id"] == j["id"])
                await asyncio.to_thread(private.stop)
                down = await http.get("/healthz")
                assert down.status_code == 503
                assert down.json()["redis"] != "ok"
                refused = await upload(http, token, jpeg_bytes(100, 80))
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "queue_unavailable"
                assert (await http.get("/api/images", headers=auth(token))).json()[
                    "items"] == [], "nothing half-stored"
                # Longer than the heartbeat timeout: when Redis is back, the workers look
                # dead to Dramatiq's maintenance, and their messages are redelivered.
                await asyncio.sleep(4.5)
                await asyncio.to_thread(private.start)
                for _ in range(100):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                assert (await http.get("/healthz")).status_code == 200

                def final_seen(job_id: str) -> Any:
                    def check(name: str, data: Any) -> bool:
                        if name == "job:completed":
                            return bool(data["job"]["id"] == job_id)
                        return name == "jobs:snapshot" and any(
                            j["id"] == job_id and j["state"] == "completed"
                            for j in data["jobs"])
                    return check

                # The socket stayed connected all along and still learns every end.
                for job in [*sleepers, flaky]:
                    await client.wait_for(final_seen(job["id"]), timeout=SLOW_S)
                for job in sleepers:
                    done = await wait_final(http, token, job["id"])
                    assert done["state"] == "completed"
                    assert done["attempt"] == 1, "a live worker's job must not run twice"
                done = await wait_final(http, token, flaky["id"])
                assert (done["state"], done["attempt"]) == ("completed", 2)
                # The relay re-subscribed by itself: a new job's events reach the socket.
                later = await _task(http, token, "test.sleep", {"seconds": 0.1, "steps": 1})
                assert (await client.wait_final(later["id"], timeout=60))[0] == "job:completed"
    finally:
        private.stop()


async def test_task_submission_checks_type_and_payload(faults: Stack,
                                                       http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    types = (await http.get("/api/tasks/types", headers=auth(token))).json()["types"]
    names = {t["type"] for t in types}
    assert {"test.sleep", "test.flaky", "test.crash"} <= names
    assert "image.process" not in names, "image jobs come from uploads only"
    flaky = next(t for t in types if t["type"] == "test.flaky")
    assert flaky["payload_schema"]["properties"]["fail_runs"]["type"] == "integer"

    unknown = await http.post("/api/tasks", headers=auth(token),
                              json={"type": "nope", "payload": {}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_task_type"
    bad = await http.post("/api/tasks", headers=auth(token),
                          json={"type": "test.flaky", "payload": {"fail_runs": "two"}})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_payload"
    assert bad.json()["error"]["fields"] == {"payload.fail_runs": "must be of type integer"}
    not_json = await http.post("/api/tasks", headers={**auth(token),
                                                      "Content-Type": "application/json"},
                               content=b"{nope")
    assert not_json.status_code == 400
    delayed = await _task(http, token, "test.sleep", {"seconds": 0}, delay=30)
    assert delayed["state"] == "queued" and delayed["run_at"]
    assert delayed["queue_position"] is None, "a delayed job is not waiting in line yet"
    assert (await http.post(f"/api/jobs/{delayed['id']}/cancel",
                            headers=auth(token))).status_code == 202


async def test_job_stored_but_never_enqueued_is_swept_and_runs(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    # What a web process leaves behind if it dies between the commit and the enqueue.
    database = SyncDatabase(faults.env["DATABASE_URL"])
    try:
        found = database.read(store.user_by_token_hash, token_hash=hash_token(token))
        assert found is not None
        view = database.write(store.create_task_job, user_id=found[0].id, task_type="test.sleep",
                              queue="default", payload={"seconds": 0.1, "steps": 1},
                              max_attempts=2)
    finally:
        database.dispose()
    name, final = await client.wait_final(view.job.id, timeout=30)
    assert name == "job:completed"
    assert final["job"]["attempt"] == 1


async def test_owner_retries_a_transient_failure_under_the_same_id(
        faults: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(faults.url, token, sockets)
    job = await _task(http, token, "test.flaky", {"fail_runs": 1}, max_attempts=1)
    name, final = await client.wait_final(job["id"])
    assert name == "job:failed" and final["job"]["error"]["retryable"] is True
    stranger = await new_token(http)
    assert (await http.post(f"/api/jobs/{job['id']}/retry",
                            headers=auth(stranger))).status_code == 404
    retried = await http.post(f"/api/jobs/{job['id']}/retry", headers=auth(token))
    assert retried.status_code == 202 and retried.json()["job"]["id"] == job["id"]
    name, _ = await client.wait_for(
        lambda n, d: n == "job:completed" and d["job"]["id"] == job["id"], timeout=30)
    items = (await http.get("/api/dlq?limit=200", headers=_admin(faults))).json()["items"]
    assert job["id"] not in [i["job"]["id"] for i in items], "no second run via the DLQ"

    permanent = await _task(http, token, "test.flaky", {"fail_runs": 5, "error": "permanent"})
    await client.wait_final(permanent["id"])
    refused = await http.post(f"/api/jobs/{permanent['id']}/retry", headers=auth(token))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_retryable"
