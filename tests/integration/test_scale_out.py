"""Several web processes behind one Redis and database: events reach every user's sockets,
whichever process holds them and whichever process accepted the upload, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Databases,
    Stack,
    running_stack,
    start_web_process,
    stop,
)
from tests.factories import (
    LiveClient,
    assert_each_change_once,
    auth,
    connected,
    jpeg_bytes,
    new_token,
    upload,
)

# Its subject is the Redis bus and Socket.IO between web processes, not the database: SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]


@dataclass
class TwoWebs:
    """One stack (web A + worker) and a second web process B on the same Redis and database."""

    a: Stack
    b_url: str


@contextlib.contextmanager
def _second_web(stack: Stack, log: Path, data_dir: Path) -> Iterator[str]:
    """Another web process as on another host: its own DATA_DIR, the shared STORAGE_DIR."""
    env = {**stack.env, "DATA_DIR": str(data_dir), "STORAGE_DIR": str(stack.data_dir / "files")}
    web, url = start_web_process(env, log)
    try:
        yield url
    finally:
        stop(web)


@pytest.fixture(scope="module")
def two_webs(redis_url: str, databases: Databases,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWebs]:
    base = tmp_path_factory.mktemp("scale")
    # Hosts share the secret (signed URLs) and the storage volume, nothing else on disk.
    with (running_stack(redis_url, databases.new(), base, SECRET_KEY="shared-secret",
                        io_worker=False) as stack,
          _second_web(stack, stack.logs / "web-b.log", base / "host-b") as b_url):
        yield TwoWebs(stack, b_url)


def _job_ids(client: LiveClient) -> set[str]:
    return {data["job"]["id"] for name, data in client.events if name.startswith("job:")}


async def test_each_process_relays_each_users_events_to_its_own_sockets_once(
        two_webs: TwoWebs, sockets: list[LiveClient]) -> None:
    a_url, b_url = two_webs.a.url, two_webs.b_url
    async with (httpx.AsyncClient(base_url=a_url, timeout=30) as via_a,
                httpx.AsyncClient(base_url=b_url, timeout=30) as via_b):
        alice, bob = await new_token(via_a), await new_token(via_b)
        # Alice watches on both processes, Bob on B only.
        alice_a = await connected(a_url, alice, sockets)
        alice_b = await connected(b_url, alice, sockets)
        bob_b = await connected(b_url, bob, sockets)

        # Each uploads through the *other* process than the one holding their socket.
        alice_up = await upload(via_b, alice, jpeg_bytes(1600, 1200, color=(200, 10, 10)))
        bob_up = await upload(via_a, bob, jpeg_bytes(1600, 1200, color=(10, 200, 10)))
        assert alice_up.status_code == bob_up.status_code == 202
        alice_job, bob_job = alice_up.json()["job"]["id"], bob_up.json()["job"]["id"]

        watched = ((alice_a, alice_job), (alice_b, alice_job), (bob_b, bob_job))
        for client, job_id in watched:
            name, final = await client.wait_final(job_id)
            assert name == "job:completed"
            # Renditions the worker wrote to the shared volume are served by either process.
            image = final["job"]["result"]["image"]
            for http in (via_a, via_b):
                thumb = await http.get(image["thumbnail_url"])
                assert thumb.status_code == 200 and thumb.content[:4] == b"RIFF"
        # Give a stray duplicate the time to arrive before counting.
        await asyncio.sleep(1)

        for (client, job_id), token in zip(watched, (alice, alice, bob), strict=True):
            await assert_each_change_once(via_a, token, job_id, client.of_job(job_id))
        assert _job_ids(alice_a) == _job_ids(alice_b) == {alice_job}
        assert _job_ids(bob_b) == {bob_job}
        # Both processes answer with the same truth, and only to the owner.
        for http in (via_a, via_b):
            job = (await http.get(f"/api/jobs/{alice_job}", headers=auth(alice))).json()
            assert job["state"] == "completed"
            stranger = await http.get(f"/api/jobs/{alice_job}", headers=auth(bob))
            assert stranger.status_code == 404


def http_at(http: httpx.AsyncClient, url: str) -> httpx.AsyncClient:
    http.base_url = httpx.URL(url)
    return http


async def test_polling_needs_the_same_process_and_websocket_does_not(
        two_webs: TwoWebs, sockets: list[LiveClient]) -> None:
    """Why the README asks for sticky sessions (or websocket-only clients) behind a balancer:
    an Engine.IO polling session lives in the process that opened it."""
    a_url, b_url = two_webs.a.url, two_webs.b_url
    async with httpx.AsyncClient(timeout=30) as http:
        token = await new_token(http_at(http, a_url))
        opened = await http.get(f"{a_url}/socket.io/", params={"EIO": "4",
                                                               "transport": "polling"})
        assert opened.status_code == 200
        sid = opened.text.split('"sid":"', 1)[1].split('"', 1)[0]
        session = {"EIO": "4", "transport": "polling", "sid": sid}
        connect = b'40{"token":"' + token.encode() + b'"}'  # Socket.IO CONNECT with auth
        other = await http.post(f"{b_url}/socket.io/", params=session, content=connect)
        sent = await http.post(f"{a_url}/socket.io/", params=session, content=connect)
        acked = await http.get(f"{a_url}/socket.io/", params=session)
    assert sent.status_code == 200 and "40{\"sid\"" in acked.text, acked.text
    assert other.status_code == 400, "another process does not know the polling session"


async def test_websocket_only_servers_refuse_polling(
        redis_url: str, databases: Databases, tmp_path: Path,
        sockets: list[LiveClient]) -> None:
    with running_stack(redis_url, databases.new(), tmp_path,
                       SOCKETIO_TRANSPORTS="websocket", io_worker=False) as stack:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            token = await new_token(http)
            polling = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            assert polling.status_code == 400
        client = await connected(stack.url, token, sockets)
        assert client.sio.transport() == "websocket"
