"""The ``darkroom`` command against a live stack: admin tokens, the DLQ, watch, migrate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from server.core.signing import hash_token
from server.data import store
from server.data.db import SyncDatabase
from tests.conftest import ROOT, Stack
from tests.factories import auth, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration
# The command line's client side (HTTP and Socket.IO through the API): its subject is not
# the database, which the API's own tests cover on both. create-token and migrate, which
# open the database themselves, run on both.
ONE_DATABASE = pytest.mark.one_database


def darkroom(stack: Stack, *args: str, token: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``darkroom ARGS`` as an operator would, with the stack's settings."""
    env = {**stack.env, "DARKROOM_URL": stack.url}
    env.pop("ADMIN_TOKEN", None)
    if token is not None:
        env["DARKROOM_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


async def adarkroom(stack: Stack, *args: str, token: str | None = None,
                    timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(darkroom, stack, *args, token=token, timeout=timeout)


async def _failed_job(http: httpx.AsyncClient, token: str) -> str:
    """An image job that fails for good: a JPEG cut short decodes to nothing."""
    data = jpeg_bytes(900, 700, color=(7, 70, 170))
    response = await upload(http, token, data[: len(data) // 3], filename="cut.jpg")
    assert response.status_code == 202, response.text
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "failed", job
    return str(job["id"])


async def test_create_token_makes_an_admin_that_the_api_accepts(
        stack: Stack, http: httpx.AsyncClient) -> None:
    result = await adarkroom(stack, "admin", "create-token", "--label", "ops laptop")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) >= 40 and "admin user" in result.stderr
    # Audited even though the stack logs at LOG_LEVEL=warning.
    assert "admin.create_token" in result.stderr and token not in result.stderr
    assert (await http.get("/api/dlq", headers=auth(token))).status_code == 200
    # The token is shown once; only its hash is stored.
    db = SyncDatabase(stack.env["DATABASE_URL"])
    try:
        found = db.read(store.user_by_token_hash, token_hash=hash_token(token))
    finally:
        db.dispose()
    assert found is not None and found[0].is_admin and found[1].label == "ops laptop"
    assert found[1].token_hash == hash_token(token) != token

    user = await new_token(http)
    assert (await http.get("/api/dlq", headers=auth(user))).status_code == 403
    user_id = (await http.post("/api/session")).json()["user_id"]
    promoted = await adarkroom(stack, "admin", "create-token", "--user", user_id)
    assert promoted.returncode == 0, promoted.stderr
    assert (await http.get("/api/dlq", headers=auth(promoted.stdout.strip()))).status_code == 200
    unknown = await adarkroom(stack, "admin", "create-token", "--user", "nobody")
    assert unknown.returncode == 2 and "no user nobody" in unknown.stderr


@ONE_DATABASE
async def test_dlq_list_retry_and_clear(stack: Stack, http: httpx.AsyncClient) -> None:
    admin = (await adarkroom(stack, "admin", "create-token")).stdout.strip()
    owner = await new_token(http)
    first, second = await _failed_job(http, owner), await _failed_job(http, owner)

    listing = await adarkroom(stack, "dlq", "list", "--limit", "200", token=admin)
    assert listing.returncode == 0, listing.stderr
    assert first in listing.stdout and second in listing.stdout
    as_json = json.loads((await adarkroom(stack, "dlq", "list", "--json", "--limit", "200",
                                          token=admin)).stdout)
    assert {first, second} <= {item["job"]["id"] for item in as_json["items"]}

    retried = await adarkroom(stack, "dlq", "retry", first, token=admin)
    assert retried.returncode == 0, retried.stderr
    assert f"retried {first}" in retried.stdout
    # The same bytes fail again: it comes back to the dead-letter queue under the same id.
    assert (await wait_final(http, owner, first))["state"] == "failed"

    cleared = await adarkroom(stack, "dlq", "clear", second, token=admin)
    assert cleared.returncode == 0 and f"removed {second}" in cleared.stdout
    after = json.loads((await adarkroom(stack, "dlq", "list", "--json", "--limit", "200",
                                        token=admin)).stdout)
    ids = {item["job"]["id"] for item in after["items"]}
    assert second not in ids

    # A user's token is not an admin's: refused with the API's own words, exit 3.
    refused = await adarkroom(stack, "dlq", "list", token=owner)
    assert refused.returncode == 3 and "403 forbidden" in refused.stderr
    missing = await adarkroom(stack, "dlq", "list")
    assert missing.returncode != 0 and "no token" in missing.stderr


@ONE_DATABASE
async def test_watch_prints_live_events_until_the_job_ends(
        stack: Stack, http: httpx.AsyncClient) -> None:
    """The first line is the subscribe snapshot of the job still queued: its queue is held
    paused until the watcher has printed it, whatever the time the CLI takes to start."""
    token = await new_token(http)
    admin = auth(stack.env["ADMIN_TOKEN"])
    assert (await http.post("/api/queues/images/pause", headers=admin)).status_code == 200
    try:
        response = await upload(http, token, jpeg_bytes(2400, 1600, color=(90, 20, 120)))
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        env = {**stack.env, "DARKROOM_URL": stack.url, "DARKROOM_TOKEN": token}
        env.pop("ADMIN_TOKEN", None)
        watcher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "watch", job_id, "--json", "--timeout", "60",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert watcher.stdout is not None
        first = await asyncio.wait_for(watcher.stdout.readline(), timeout=60)
    finally:
        assert (await http.post("/api/queues/images/resume",
                                headers=admin)).status_code == 200
    rest, errors = await asyncio.wait_for(watcher.communicate(), timeout=90)
    assert watcher.returncode == 0, errors.decode()
    lines = [json.loads(line) for line in [first, *rest.splitlines()]]
    seqs = [line["job"]["seq"] for line in lines]
    assert seqs == sorted(set(seqs)), "newer states only, each once"
    assert lines[0]["job"]["state"] == "queued"  # the subscribe snapshot, while paused
    assert {"job:active", "job:progress"} <= {line["event"] for line in lines}
    assert lines[-1]["event"] == "job:completed" and lines[-1]["job"]["progress"] == 100

    # Human-readable by default, and exit 1 for a job that failed.
    failed = await _failed_job(http, token)
    text = await adarkroom(stack, "watch", failed, token=token)
    assert text.returncode == 1
    assert "failed" in text.stdout.splitlines()[-1]


@ONE_DATABASE
async def test_watch_refuses_other_users_jobs_and_bad_tokens(
        stack: Stack, http: httpx.AsyncClient) -> None:
    owner, stranger = await new_token(http), await new_token(http)
    response = await upload(http, owner, jpeg_bytes(300, 200, color=(1, 2, 3)))
    job_id = response.json()["job"]["id"]
    other = await adarkroom(stack, "watch", job_id, "--timeout", "20", token=stranger)
    assert other.returncode == 3 and "not_found" in other.stderr
    bad = await adarkroom(stack, "watch", job_id, "--timeout", "20", token="not-a-token")
    assert bad.returncode == 3 and "unauthorized" in bad.stderr


def test_migrate_reports_a_current_schema(stack: Stack) -> None:
    check = darkroom(stack, "migrate", "--check")
    assert check.returncode == 0, check.stderr
    again = darkroom(stack, "migrate")
    assert again.returncode == 0 and "already at" in again.stdout


def test_worker_passes_dramatiq_options_on_and_takes_io(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from server import cli

    given: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda _exe, argv: given.append(argv[3:]))
    assert cli.main(["worker", "-Q", "images", "images.high"]) == 0  # argparse refused -Q
    assert cli.main(["worker", "--io"]) == 0
    assert cli.main(["worker", "--io", "-t", "3"]) == 0
    assert cli.main(["scheduler"]) == 0
    assert given == [["-Q", "images", "images.high"], ["--io"], ["--io", "-t", "3"], []]
    with pytest.raises(SystemExit) as refused:
        cli.main(["migrate", "--bogus"])
    assert refused.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
