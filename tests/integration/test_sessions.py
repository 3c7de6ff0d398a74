"""Sessions: tokens are stored hashed, and ``DELETE /api/session`` revokes one everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio

from server import store
from server.auth import hash_token, mint_token
from server.db import SyncDatabase
from tests.conftest import Stack
from tests.factories import LiveClient, auth, jpeg_bytes, new_token, upload

pytestmark = pytest.mark.integration


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


@pytest.fixture
async def sockets() -> AsyncIterator[list[LiveClient]]:
    clients: list[LiveClient] = []
    yield clients
    for client in clients:
        if client.sio.connected:
            await client.close()


async def _connect(stack: Stack, token: str, sockets: list[LiveClient]) -> LiveClient:
    client = await LiveClient().connect(stack.url, token, transports=["websocket"])
    sockets.append(client)
    await client.wait_for(lambda name, _: name == "jobs:snapshot", timeout=10)
    return client


def _second_token(stack: Stack, user_id: str) -> str:
    """Another token of the same user, as `darkroom admin create-token --user` would add."""
    token = mint_token()
    db = SyncDatabase(stack.env["DATABASE_URL"])
    try:
        db.write(store.create_token, user_id=user_id, token_hash=hash_token(token))
    finally:
        db.dispose()
    return token


async def test_a_revoked_token_is_refused_and_its_sockets_close(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    session = (await http.post("/api/session")).json()
    token, user_id = session["token"], session["user_id"]
    spare = _second_token(stack, user_id)
    bystander = await new_token(http)
    revoked_socket = await _connect(stack, token, sockets)
    spare_socket = await _connect(stack, spare, sockets)
    bystander_socket = await _connect(stack, bystander, sockets)

    response = await http.delete("/api/session", headers=auth(token))
    assert response.status_code == 204, response.text

    await revoked_socket.wait_for(lambda name, _: name == "session:revoked", timeout=10)
    for _ in range(100):  # the disconnect follows the event at once; allow 10 s
        if not revoked_socket.sio.connected:
            break
        await asyncio.sleep(0.1)
    assert not revoked_socket.sio.connected
    for call in (http.get("/api/images", headers=auth(token)),
                 http.delete("/api/session", headers=auth(token))):
        refused = await call
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    with pytest.raises(socketio.exceptions.ConnectionError):
        await LiveClient().connect(stack.url, token, transports=["websocket"])

    # The user's other token, and other users, are untouched: they still get live events.
    assert spare_socket.sio.connected and bystander_socket.sio.connected
    job = (await upload(http, spare, jpeg_bytes(400, 300, color=(3, 4, 5)))).json()["job"]
    name, _ = await spare_socket.wait_final(job["id"])
    assert name == "job:completed"
    assert not any(n == "session:revoked" for n, _ in spare_socket.events)
    assert not any(n == "session:revoked" for n, _ in bystander_socket.events)


async def test_admin_token_from_the_environment_cannot_be_revoked_by_a_call(
        stack: Stack, http: httpx.AsyncClient) -> None:
    admin = stack.env["ADMIN_TOKEN"]
    response = await http.delete("/api/session", headers=auth(admin))
    assert response.status_code == 409
    assert "ADMIN_TOKEN" in response.json()["error"]["message"]
    assert (await http.get("/api/dlq", headers=auth(admin))).status_code == 200


async def test_tokens_are_stored_only_as_hashes(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    db = SyncDatabase(stack.env["DATABASE_URL"])
    try:
        found = db.read(store.user_by_token_hash, token_hash=hash_token(token))
    finally:
        db.dispose()
    assert found is not None and found[1].token_hash == hash_token(token) != token
