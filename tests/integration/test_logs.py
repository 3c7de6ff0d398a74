"""LOG_FORMAT=json with real web and worker processes: every line is JSON and names its ids."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Databases, running_stack
from tests.factories import auth, jpeg_bytes, new_token, wait_final

# Its subject is the log lines, which are the same whichever database the stack has:
# SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(path)]


async def _eventually(path: Path, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The first record of the log matching ``predicate``, waiting while it is relayed."""
    deadline = time.monotonic() + timeout
    while True:
        for line in _lines(path):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line still being written; checked whole at the end
            if predicate(record):
                return dict(record)
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching line in {path.name}:\n" +
                                 "\n".join(_lines(path)[-20:]))
        await asyncio.sleep(0.1)


async def test_json_logs_carry_request_user_and_job_ids(
        redis_url: str, databases: Databases, tmp_path: Path) -> None:
    with running_stack(redis_url, databases.new(), tmp_path, LOG_FORMAT="json",
                       LOG_LEVEL="info", ENABLE_TEST_TASKS="true",
                       RETRY_MIN_BACKOFF_MS="50", RETRY_MAX_BACKOFF_MS="200",
                       io_worker=False) as stack:
        web_log, worker_log = stack.logs / "web.log", stack.logs / "worker.log"
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            token = await new_token(http)
            response = await http.post(
                "/api/images", headers={**auth(token), "X-Request-ID": "req-upload-1"},
                files={"file": ("a.jpg", jpeg_bytes(64, 48), "image/jpeg")})
            assert response.status_code == 202, response.text
            assert response.headers["x-request-id"] == "req-upload-1"
            image_job = response.json()["job"]["id"]
            missing = await http.get("/api/jobs/nope", headers={**auth(token),
                                                                "X-Request-ID": "bad id!"})
            assert missing.status_code == 404
            made = missing.headers["x-request-id"]
            assert made and made != "bad id!"
            flaky = await http.post("/api/tasks", headers=auth(token), json={
                "type": "test.flaky", "payload": {"fail_runs": 1}})
            assert flaky.status_code == 202, flaky.text
            flaky_job = flaky.json()["job"]["id"]
            for job_id in (image_job, flaky_job):
                assert (await wait_final(http, token, job_id))["state"] == "completed"
            await http.get(f"/api/jobs/{image_job}",
                           headers={**auth(token), "X-Request-ID": "req-job-1"})

        # The upload's access line names the request and the caller who made it.
        access = await _eventually(web_log, lambda r: r.get("logger") == "uvicorn.access"
                                   and r.get("request_id") == "req-upload-1")
        assert access["path"] == "/api/images" and access["status"] == 202
        assert access["user_id"]
        owner = access["user_id"]
        await _eventually(web_log, lambda r: r.get("request_id") == made
                          and r.get("status") == 404)
        # A request about a job names the job too.
        about_job = await _eventually(web_log, lambda r: r.get("request_id") == "req-job-1")
        assert about_job["job_id"] == image_job and about_job["user_id"] == owner
        # The worker's lines about the flaky job's failed run name the job and its owner,
        # and carry the exception text.
        failure = await _eventually(worker_log, lambda r: r.get("job_id") == flaky_job
                                    and "exc" in r)
        assert failure["user_id"] == owner
        assert "TransientError: injected transient fault on run 1" in failure["exc"]

    # Stopped: every line either process (and Dramatiq's own main process) wrote is JSON.
    for path in (web_log, worker_log):
        records = _records(path)
        assert records, f"{path.name} is empty"
        for record in records:
            assert {"ts", "level", "logger", "message"} <= record.keys(), record
    assert any(r["logger"].startswith("dramatiq") for r in _records(worker_log))
