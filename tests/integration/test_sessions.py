"""Sessions: tokens are stored hashed, and ``DELETE /api/session`` revokes one everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import socketio
import websockets
from sqlalchemy.engine import make_url

from server.core.signing import hash_token, mint_token
from server.data import store
from server.data.db import SyncDatabase
from server.infra.settings import Settings
from server.web.app import create_app
from tests.conftest import Databases, Stack, running_stack, start_web_process, stop
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration


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
    revoked_socket = await connected(stack.url, token, sockets)
    spare_socket = await connected(stack.url, spare, sockets)
    bystander_socket = await connected(stack.url, bystander, sockets)

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


def _database_dump(database_url: str) -> str:
    """Every row of every table as text, read with the database's own driver, not the ORM.

    SQLite: ``iterdump``, the SQL dump of the whole file. PostgreSQL: each row of every
    table of every schema but the system ones, as ``row::text`` (every column, whatever its
    type: JSON, arrays and bytea included, the last as hex).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        with contextlib.closing(sqlite3.connect(url.database)) as conn:
            return "\n".join(conn.iterdump())
    import psycopg
    from psycopg import sql

    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    lines: list[str] = []
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(sql.Identifier(schema),
                                                                    sql.Identifier(table))
            lines.extend(f"{schema}.{table}: {row}" for (row,) in conn.execute(query))
    return "\n".join(lines)


async def test_tokens_are_stored_only_as_hashes(stack: Stack, http: httpx.AsyncClient) -> None:
    """No plaintext token anywhere in the database, after it has been used for real work."""
    session = (await http.post("/api/session")).json()
    token, user_id = session["token"], session["user_id"]
    job = (await upload(http, token, jpeg_bytes(300, 200, color=(9, 8, 7)))).json()["job"]
    assert (await wait_final(http, token, job["id"]))["state"] == "completed"
    assert (await http.get("/api/images", headers=auth(token))).status_code == 200
    timeline = await http.get(f"/api/jobs/{job['id']}/timeline", headers=auth(token))
    assert timeline.status_code == 200
    admin = stack.env["ADMIN_TOKEN"]
    assert (await http.get(f"/api/jobs/{job['id']}/timeline",
                           headers=auth(admin))).status_code == 200  # an admin looks too

    dump = _database_dump(stack.env["DATABASE_URL"])
    # The dump holds this user's rows: its token's hash, its job.
    assert hash_token(token) in dump and user_id in dump and job["id"] in dump
    for secret in (token, admin):
        assert secret not in dump
        assert secret.encode().hex() not in dump.lower()  # nor as bytes


@pytest.fixture(scope="module")
def pair(redis_url: str, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A stack whose web processes re-count their sockets every second, and a second web
    process on the same Redis and database, with the default quotas, as if behind a proxy
    on the same host: TRUSTED_PROXIES=127.0.0.1 (the tests' own requests, without
    X-Forwarded-For, are a local tool's: not counted per address)."""
    base = tmp_path_factory.mktemp("sessions")
    with running_stack(redis_url, databases.new(), base, SOCKET_REFRESH_S="1",
                       MAX_SOCKETS_PER_USER="2", io_worker=False) as stack:
        behind_proxy = {**stack.env, "TRUSTED_PROXIES": "127.0.0.1"}
        other, url = start_web_process(behind_proxy, stack.logs / "web-b.log")
        try:
            yield stack, url
        finally:
            stop(other)


async def _closed(client: LiveClient, timeout: float = 15) -> bool:
    for _ in range(int(timeout * 10)):
        if not client.sio.connected:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_revoking_through_one_process_closes_sockets_held_by_another(
        pair: tuple[Stack, str], sockets: list[LiveClient]) -> None:
    stack, b_url = pair
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http, \
            httpx.AsyncClient(base_url=b_url, timeout=30) as http_b:
        token = await new_token(http)
        on_b = await connected(b_url, token, sockets)
        # B has checked the token lately (its token cache vouches for it, AUTH_CACHE_S)...
        assert (await http_b.get("/api/images", headers=auth(token))).status_code == 200
        assert (await http.delete("/api/session", headers=auth(token))).status_code == 204
        await on_b.wait_for(lambda name, _: name == "session:revoked", timeout=10)
        assert await _closed(on_b)
        # ...and forgets it with the event: B refuses it at once, not AUTH_CACHE_S later.
        refused = await http_b.get("/api/images", headers=auth(token))
        assert refused.status_code == 401, refused.text


async def test_a_revocation_the_bus_never_carried_still_closes_the_sockets(
        pair: tuple[Stack, str], sockets: list[LiveClient]) -> None:
    """Pub/sub keeps nothing: a process that missed the event finds out on its next round."""
    stack, b_url = pair
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        token = await new_token(http)
    on_b = await connected(b_url, token, sockets)
    db = SyncDatabase(stack.env["DATABASE_URL"])
    try:
        found = db.read(store.user_by_token_hash, token_hash=hash_token(token))
        assert found is not None
        db.write(store.revoke_token, token_id=found[1].id)  # no event published
    finally:
        db.dispose()
    await on_b.wait_for(lambda name, _: name == "session:revoked", timeout=10)
    assert await _closed(on_b)
    # The round that found it also dropped it from B's token cache.
    async with httpx.AsyncClient(base_url=b_url, timeout=30) as http_b:
        assert (await http_b.get("/api/images", headers=auth(token))).status_code == 401


async def test_clients_that_hang_up_while_connecting_leave_no_slot_behind(
        pair: tuple[Stack, str], sockets: list[LiveClient]) -> None:
    stack, _ = pair
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        token = await new_token(http)
    ws_url = stack.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    # Each sends its Socket.IO CONNECT and hangs up without waiting for the answer: some
    # while the server's connect handler still runs, some just after.
    for _ in range(6):
        async with websockets.connect(ws_url) as ws:
            await ws.recv()  # the Engine.IO open packet
            await ws.send('40{"token":"' + token + '"}')
    # The user's limit is 2: both slots must be free again within a round or two.
    for _ in range(50):
        try:
            first = await connected(stack.url, token, sockets)
            second = await connected(stack.url, token, sockets)
        except socketio.exceptions.ConnectionError:
            for client in sockets:
                if client.sio.connected:
                    await client.close()
            sockets.clear()
            await asyncio.sleep(0.2)
            continue
        assert first.sio.connected and second.sio.connected
        return
    raise AssertionError("slots of vanished clients were never freed")




async def _clear_of_a_window_edge(window_s: int, margin_s: float) -> None:
    """Rates count in fixed windows: start a burst that must fall in one window at least
    ``margin_s`` before the window ends."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        await asyncio.sleep(left + 0.05)


def _rate_limited(response: httpx.Response, window_s: int) -> bool:
    return (response.status_code == 429
            and response.json()["error"]["code"] == "rate_limited"
            and 1 <= int(response.headers["retry-after"]) <= window_s)


async def test_a_fresh_session_is_held_to_the_default_quotas(
        pair: tuple[Stack, str]) -> None:
    """Unlimited sessions, unlimited task submissions and priority high used to be
    accepted from any fresh session. The defaults: 30 sessions a minute per client
    address (loopback aside), 120 task submissions a minute and 10 high-priority jobs an
    hour per user."""
    stack, b_url = pair
    async with httpx.AsyncClient(base_url=b_url, timeout=30) as http:
        await _clear_of_a_window_edge(60, 5)
        client = {"X-Forwarded-For": "198.51.100.7"}  # as the proxy on 127.0.0.1 says
        made = [await http.post("/api/session", headers=client) for _ in range(30)]
        assert [r.status_code for r in made] == [201] * 30
        # Writing 127.0.0.1 at the left gains nothing: the proxy appends the real peer.
        refused = await http.post("/api/session",
                                  headers={"X-Forwarded-For": "127.0.0.1, 198.51.100.7"})
        assert _rate_limited(refused, 60), refused.text
        # Another client behind the proxy is counted apart; a local tool is not counted.
        other = await http.post("/api/session", headers={"X-Forwarded-For": "198.51.100.8"})
        assert other.status_code == 201, other.text
        assert (await http.post("/api/session")).status_code == 201
        tasker, uploader = (r.json()["token"] for r in made[:2])

        # Every submission counts, valid or not: each costs the server work.
        await _clear_of_a_window_edge(60, 5)
        for _ in range(120):
            unknown = await http.post("/api/tasks", headers=auth(tasker),
                                      json={"type": "no.such.type"})
            assert unknown.status_code == 400, unknown.text
        assert _rate_limited(await http.post("/api/tasks", headers=auth(tasker),
                                             json={"type": "no.such.type"}), 60)

        await _clear_of_a_window_edge(3600, 5)
        for n in range(10):
            high = await upload(http, uploader, jpeg_bytes(16 + n, 16),
                                fields={"priority": "high"})
            assert high.status_code == 202, high.text
        over = await upload(http, uploader, jpeg_bytes(40, 16), fields={"priority": "high"})
        assert _rate_limited(over, 3600), over.text
        assert "high-priority" in over.json()["error"]["message"]
        assert (await upload(http, uploader, jpeg_bytes(41, 16))).status_code == 202
        admin = await upload(http, stack.env["ADMIN_TOKEN"], jpeg_bytes(42, 16),
                             fields={"priority": "high"})
        assert admin.status_code == 202, admin.text


async def test_refused_and_duplicate_uploads_cost_no_high_priority_allowance(
        pair: tuple[Stack, str]) -> None:
    """The high-priority allowance was taken before duplicate detection and before the
    file was checked: a 200 duplicate or a refused file cost one all the same."""
    _, b_url = pair
    high = {"priority": "high"}
    async with httpx.AsyncClient(base_url=b_url, timeout=30) as http:
        token = await new_token(http)
        await _clear_of_a_window_edge(3600, 10)
        assert (await upload(http, token, jpeg_bytes(60, 16), fields=high)).status_code == 202
        for _ in range(10):  # the same bytes again: the existing job, no new one
            again = await upload(http, token, jpeg_bytes(60, 16), fields=high)
            assert again.status_code == 200 and again.json()["duplicate"], again.text
        refused = await upload(http, token, b"not an image at all", fields=high)
        assert 400 <= refused.status_code < 500 and refused.status_code != 429, refused.text
        batch = await http.post("/api/batches", headers=auth(token), data=high, files=[
            ("file", ("a.jpg", jpeg_bytes(60, 16), "image/jpeg")),
            ("file", ("b.jpg", b"not an image either", "image/jpeg"))])
        assert batch.status_code == 202, batch.text
        first, second = batch.json()["items"]
        assert first.get("duplicate") and "error" in second
        for _ in range(2):  # a task that makes no job (no such image) costs none either
            missing = await http.post("/api/tasks", headers=auth(token), json={
                "type": "image.reprocess", "payload": {"image_id": "no-such-image"}, **high})
            assert missing.status_code == 422, missing.text
        # One new high-priority job so far: nine more fit in the hour, the tenth does not.
        for n in range(9):
            fresh = await upload(http, token, jpeg_bytes(61 + n, 16), fields=high)
            assert fresh.status_code == 202, (n, fresh.text)
        over = await upload(http, token, jpeg_bytes(70, 16), fields=high)
        assert _rate_limited(over, 3600), over.text


async def test_the_revoking_process_refuses_the_token_without_waiting_for_the_bus(
        redis_url: str, databases: Databases, tmp_path: Path) -> None:
    """Its own token cache forgets the token as the revocation is stored: here its
    ``session:revoked`` never reaches the bus, and the token is refused all the same."""
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "DATABASE_URL": databases.new(), "DATA_DIR": str(tmp_path),
        "REDIS_PREFIX": f"revoke-here-{secrets.token_hex(4)}", "AUTH_CACHE_S": "3600"})
    app = create_app(settings)
    http_app = app.app.other_asgi_app  # the Starlette app, whose lifespan builds AppState
    async with http_app.router.lifespan_context(http_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://darkroom.test") as client:
        token = (await client.post("/api/session")).json()["token"]
        assert (await client.get("/api/images", headers=auth(token))).status_code == 200
        published: list[object] = []

        async def lost(event: object) -> None:  # Redis took the publish; nobody heard it
            published.append(event)

        http_app.state.darkroom.publish = lost
        assert (await client.delete("/api/session", headers=auth(token))).status_code == 204
        assert len(published) == 1
        refused = await client.get("/api/images", headers=auth(token))
        assert refused.status_code == 401, refused.text
