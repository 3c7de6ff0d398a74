"""Hardening against real processes: headers, CORS, socket limits, floods, the audit trail."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import socketio

from server.web.http.headers import content_security_policy
from tests.conftest import Databases, Stack, running_stack, start_web_process, stop
from tests.factories import auth, connected, jpeg_bytes, new_token, upload, wait_final

# Its subject is HTTP and Socket.IO guards, audit log lines and Redis counters, not the
# database: SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]

ALLOWED = "http://allowed.example"
EVIL = "http://evil.example"
SOCKET_LIMIT = 3


@pytest.fixture(scope="module")
def guarded(redis_url: str, databases: Databases,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("guarded"),
                       CORS_ORIGINS=ALLOWED, MAX_SOCKETS_PER_USER=str(SOCKET_LIMIT),
                       LOG_LEVEL="info", ENABLE_TEST_TASKS="true") as running:
        yield running


@pytest.fixture(scope="module")
def second_web(guarded: Stack) -> Iterator[str]:
    """Another web process of the same deployment (same Redis, database, prefix)."""
    web, url = start_web_process(guarded.env, guarded.logs / "web2.log")
    try:
        yield url
    finally:
        stop(web)


@pytest.fixture
def http_stack(guarded: Stack) -> Stack:
    return guarded


async def _refusal(url: str, token: str, **kwargs: Any) -> str | None:
    """The connect error's message, or None when the connection was accepted (then closed)."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", lambda data=None: errors.append(data))
    try:
        await client.connect(url, auth={"token": token}, wait_timeout=10, **kwargs)
    except socketio.exceptions.ConnectionError as exc:
        data = errors[0] if errors else None
        return str(data.get("message") if isinstance(data, dict) else data or exc)
    finally:
        # Closes the HTTP session too; no wait for a long-poll to end.
        await client.eio.disconnect(abort=True)
    return None


# -- headers -------------------------------------------------------------------------------


async def test_pages_get_the_page_policy_and_everything_gets_nosniff(
        guarded: Stack, http: httpx.AsyncClient) -> None:
    for path in ("/", "/admin", "/docs"):
        page = await http.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        # One policy for every page.
        assert policy == content_security_policy(guarded.env.get("PUBLIC_URL", "")), path
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["x-frame-options"] == "DENY", path
        assert page.headers["referrer-policy"] == "no-referrer", path
        assert page.headers["x-content-type-options"] == "nosniff", path
    # Nothing else gets a policy. No exemption for the list of images, refused or given:
    # it is JSON like any other API answer (only the image files have one, see below).
    answers = {path: await http.get(path) for path in (
        "/static/app.js", "/static/style.css", "/static/docs.js", "/healthz", "/metrics",
        "/openapi.json", "/api/images", "/api/no-such-thing", "/no-such-page")}
    answers["/api/images, signed in"] = await http.get("/api/images",
                                                       headers=auth(await new_token(http)))
    assert answers["/api/images"].status_code == 401
    assert answers["/api/images, signed in"].status_code == 200
    for path, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "content-security-policy" not in response.headers, path
    assert (await http.get("/no-such-page")).headers["content-type"] == "application/json"


async def test_the_original_is_a_download_and_renditions_show_inline(
        http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    name = "Ürlaub 2024 ;=,.jpg"
    body = (await upload(http, token, jpeg_bytes(640, 480), filename=name)).json()
    await wait_final(http, token, body["job"]["id"])
    image = (await http.get(f"/api/images/{body['image']['id']}", headers=auth(token))).json()
    for original in (await http.get(f"/api/images/{image['id']}/original", headers=auth(token)),
                     await http.get(image["original_url"])):
        assert original.status_code == 200
        disposition = original.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name
        assert original.headers["x-content-type-options"] == "nosniff"
        assert original.headers["content-type"] == "image/jpeg"
        # The one non-page response with a policy, and the strictest one: should a browser
        # ever render an uploaded file as a document (an SVG or HTML behind an image name,
        # opened directly), it could load and run nothing.
        assert original.headers["content-security-policy"] == "default-src 'none'"
    for kind in ("thumbnail", "preview"):
        shown = await http.get(image[f"{kind}_url"])
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/webp"
        assert "attachment" not in shown.headers.get("content-disposition", "")
        assert shown.headers["x-content-type-options"] == "nosniff"
        assert shown.headers["content-security-policy"] == "default-src 'none'"


# -- CORS ----------------------------------------------------------------------------------


async def test_rest_cors_answers_only_the_listed_origin(http: httpx.AsyncClient) -> None:
    asking = {"Access-Control-Request-Method": "POST",
              "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = await http.options("/api/tasks", headers={"Origin": ALLOWED, **asking})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers

    refused = await http.options("/api/tasks", headers={"Origin": EVIL, **asking})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "cors_refused"
    assert "access-control-allow-origin" not in refused.headers

    token = await new_token(http)
    simple = await http.get("/api/images", headers={"Origin": ALLOWED, **auth(token)})
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    exposed = simple.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "x-request-id" in exposed
    other = await http.get("/api/images", headers={"Origin": EVIL, **auth(token)})
    assert other.status_code == 200, "the browser, not the server, withholds the answer"
    assert "access-control-allow-origin" not in other.headers


async def test_socketio_refuses_origins_not_allowed(guarded: Stack,
                                                    http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    assert await _refusal(guarded.url, token, transports=["websocket"],
                          headers={"Origin": ALLOWED}) is None
    # The bundled pages connect from the server's own origin.
    assert await _refusal(guarded.url, token, transports=["websocket"],
                          headers={"Origin": guarded.url}) is None
    assert await _refusal(guarded.url, token, transports=["websocket"],
                          headers={"Origin": EVIL}) is not None
    # Long-polling: the engine.io handshake itself (a client's long-poll would outlive it).
    handshake = "/socket.io/?EIO=4&transport=polling"
    for origin in (ALLOWED, guarded.url):
        opened = await http.get(handshake, headers={"Origin": origin})
        assert opened.status_code == 200 and '"sid"' in opened.text, origin
        assert opened.headers["access-control-allow-origin"] == origin
    refused = await http.get(handshake, headers={"Origin": EVIL})
    assert refused.status_code == 400 and '"sid"' not in refused.text


# -- socket limits -------------------------------------------------------------------------


async def test_sockets_per_user_are_capped_across_web_processes(
        guarded: Stack, second_web: str, http: httpx.AsyncClient,
        sockets: list[Any]) -> None:
    ana, bo = await new_token(http), await new_token(http)
    held = [await connected(guarded.url, ana, sockets),
            await connected(second_web, ana, sockets),
            await connected(guarded.url, ana, sockets)]
    for url in (guarded.url, second_web):
        refused = await _refusal(url, ana, transports=["websocket"])
        assert refused is not None and refused.startswith("too_many_sockets:"), refused
    # Another user is not affected.
    other = await connected(second_web, bo, sockets)
    await other.wait_for(lambda name, _data: name == "jobs:snapshot")
    # A closed socket frees its slot at once, whichever process held it.
    await held[1].close()
    assert await _refusal(guarded.url, ana, transports=["websocket"]) is None


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_an_oversize_message_closes_only_that_socket(
        guarded: Stack, http: httpx.AsyncClient, sockets: list[Any], transport: str) -> None:
    token = await new_token(http)
    big = socketio.AsyncClient(reconnection=False)
    sockets.append(big)
    gone = asyncio.Event()
    big.on("disconnect", lambda *_args: gone.set())
    await big.connect(guarded.url, auth={"token": token}, transports=[transport],
                      wait_timeout=10)
    neighbour = await connected(guarded.url, token, sockets)
    await big.emit("subscribe", {"job_id": "x" * 200_000})
    await asyncio.wait_for(gone.wait(), timeout=30)
    ack = await neighbour.sio.call("subscribe", {"job_id": "no-such-job"}, timeout=10)
    assert ack["error"]["code"] == "not_found"
    assert neighbour.sio.connected


async def test_a_subscribe_flood_is_throttled_and_others_are_served(
        guarded: Stack, http: httpx.AsyncClient, sockets: list[Any]) -> None:
    flooder = await connected(guarded.url, await new_token(http), sockets)
    victim_token = await new_token(http)

    async def flood() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(
            flooder.sio.call("subscribe", {"job_id": f"nope-{i}"}, timeout=90)
            for i in range(1000))))

    flooding = asyncio.create_task(flood())
    victim = await connected(guarded.url, victim_token, sockets)
    await victim.wait_for(lambda name, _data: name == "jobs:snapshot")
    job = (await http.post("/api/tasks", headers=auth(victim_token), json={
        "type": "test.sleep", "payload": {"seconds": 0.4, "steps": 2}})).json()["job"]
    ack = await victim.sio.call("subscribe", {"job_id": job["id"]}, timeout=30)
    assert ack["ok"] is True and ack["job"]["id"] == job["id"]
    name, _ = await victim.wait_final(job["id"])
    assert name == "job:completed"

    acks = await flooding
    codes = [a["error"]["code"] for a in acks]
    assert set(codes) <= {"rate_limited", "not_found"}
    limited = [a for a in acks if a["error"]["code"] == "rate_limited"]
    assert len(limited) > len(acks) // 2, "most of a burst of 1,000 is refused"
    assert all(a["error"]["retry_after_ms"] > 0 for a in limited)


# -- audit trail ---------------------------------------------------------------------------


async def _failed_job(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    job = (await http.post("/api/tasks", headers=auth(token), json={
        "type": "test.flaky", "payload": {"fail_runs": 1, "error": "permanent"}})).json()["job"]
    ended = await wait_final(http, token, job["id"])
    assert ended["state"] == "failed"
    return ended


def _audit_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines()
            if " darkroom.audit: " in line]


async def test_admin_operations_are_audited(guarded: Stack, http: httpx.AsyncClient,
                                            sockets: list[Any]) -> None:
    admin = auth(guarded.env["ADMIN_TOKEN"])
    user = await new_token(http)
    body = (await upload(http, user, jpeg_bytes(300, 200, color=(1, 2, 3)))).json()
    image_id, image_job = body["image"]["id"], body["job"]["id"]
    await wait_final(http, user, image_job)
    delayed = (await http.post("/api/tasks", headers=auth(user), json={
        "type": "test.sleep", "payload": {"seconds": 0}, "delay": 600})).json()["job"]
    # A user reading their own job is no admin operation.
    assert (await http.get(f"/api/jobs/{delayed['id']}", headers=auth(user))).status_code == 200
    batch = (await http.post("/api/batches", headers=auth(user), files=[
        ("file", ("b.jpg", jpeg_bytes(200, 100, color=(9, 9, 9)), "image/jpeg"))])).json()

    expected: list[tuple[str, str]] = []

    async def admin_call(method: str, path: str, action: str, target: str,
                         **kwargs: Any) -> httpx.Response:
        response = await http.request(method, path, headers=admin, **kwargs)
        assert response.status_code < 300, (path, response.text)
        expected.append((action, target))
        return response

    to_retry, to_delete, by_job_route = [await _failed_job(http, user) for _ in range(3)]
    await admin_call("GET", "/api/dlq", "dlq.list", "dlq")
    await admin_call("POST", f"/api/dlq/{to_retry['id']}/retry", "dlq.retry",
                     f"job:{to_retry['id']}")
    await admin_call("DELETE", f"/api/dlq/{to_delete['id']}", "dlq.delete",
                     f"job:{to_delete['id']}")
    await admin_call("POST", f"/api/jobs/{by_job_route['id']}/retry", "job.retry",
                     f"job:{by_job_route['id']}")
    await _failed_job(http, user)
    await admin_call("POST", "/api/dlq/retry", "dlq.retry_all", "dlq")
    await admin_call("DELETE", "/api/dlq", "dlq.clear", "dlq")
    await admin_call("GET", "/api/queues", "queues.list", "queues")
    await admin_call("GET", "/api/workers", "workers.list", "workers")
    await admin_call("GET", "/api/charts", "charts.read", "charts")
    await admin_call("POST", "/api/queues/default/pause", "queue.pause", "queue:default")
    await admin_call("POST", "/api/queues/default/resume", "queue.resume", "queue:default")
    await admin_call("POST", "/api/queues/default/clean", "queue.clean", "queue:default",
                     json={"older_than_s": 3600})
    await admin_call("GET", "/api/jobs", "jobs.list", "jobs of all users")
    await admin_call("GET", f"/api/jobs/{image_job}", "job.read", f"job:{image_job}")
    await admin_call("GET", f"/api/jobs/{image_job}/timeline", "job.timeline",
                     f"job:{image_job}")
    await admin_call("POST", f"/api/jobs/{delayed['id']}/cancel", "job.cancel",
                     f"job:{delayed['id']}")
    await admin_call("GET", f"/api/batches/{batch['batch']['id']}", "batch.read",
                     f"batch:{batch['batch']['id']}")
    await admin_call("GET", f"/api/images/{image_id}", "image.read", f"image:{image_id}")
    await admin_call("GET", f"/api/images/{image_id}/thumbnail", "image.file",
                     f"image:{image_id}")
    await admin_call("DELETE", f"/api/images/{image_id}", "image.delete", f"image:{image_id}")

    watcher = await connected(guarded.url, guarded.env["ADMIN_TOKEN"], sockets)
    assert (await watcher.sio.call("subscribe", {"scope": "all"}, timeout=10))["ok"]
    expected.append(("events.subscribe_all", "jobs of all users"))
    assert (await watcher.sio.call("subscribe", {"job_id": image_job}, timeout=10))["ok"]
    expected.append(("job.subscribe", f"job:{image_job}"))

    log = guarded.logs / "web.log"
    deadline = time.monotonic() + 20
    while True:
        lines = _audit_lines(log)
        missing = [(action, target) for action, target in expected
                   if not any(re.search(rf"admin \w+: {re.escape(action)} "
                                        rf"{re.escape(target)}\b", line) for line in lines)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"not audited: {missing}\n" + "\n".join(lines)
        await asyncio.sleep(0.2)
    assert all(" INFO darkroom.audit: " in line for line in lines)
    assert not any(f"job.read job:{delayed['id']}" in line for line in lines)


# -- bounded input -------------------------------------------------------------------------


async def test_json_bodies_are_capped_and_hostile_numbers_and_nesting_are_4xx(
        http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    task = {"type": "test.sleep", "payload": {"seconds": 0}}
    # The row: a 300 MB body was read whole (202 after seconds, +600 MB). Past
    # MAX_JSON_BODY_KB (256) it is refused, from its Content-Length or as it streams.
    big = json.dumps({**task, "pad": "x" * 300_000}).encode()
    for content in (big, _chunks(big)):
        refused = await http.post("/api/tasks", content=content, headers={
            **auth(token), "Content-Type": "application/json"})
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "payload_too_large"
    hook = await http.post("/api/webhooks", headers=auth(token),
                           json={"url": "https://example.com/" + "x" * 300_000})
    assert hook.status_code == 413
    # Unknown fields, and a stored payload over MAX_TASK_PAYLOAD_KB (64), are 422.
    for body, code in (({**task, "priotity": "high"}, "unknown_field"),
                       ({**task, "payload": {"seconds": 0, "pad": "x" * 70_000}},
                        "invalid_payload")):
        answer = await http.post("/api/tasks", headers=auth(token), json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (422, code)
    # Were 500s with a traceback: a 5,000-digit number, a 100,000-deep array.
    digits = "9" * 5000
    cases = [
        ("POST", "/api/tasks", b'{"type": "test.sleep", "payload": {"seconds": '
         + digits.encode() + b"}}", 422),
        ("POST", "/api/tasks", b"[" * 100_000 + b"]" * 100_000, 400),
        ("GET", f"/api/jobs?limit={digits}", None, 422),
        ("GET", f"/api/images?limit={digits}", None, 422),
    ]
    for method, path, content, status in cases:
        answer = await http.request(method, path, content=content, headers={
            **auth(token), "Content-Type": "application/json"})
        assert answer.status_code == status, (path, answer.text[:200])
        assert answer.json()["error"]["code"] in ("number_too_long", "too_deep")
    # A signed file link needs no token: the most exposed of them.
    link = await http.get(f"/api/images/abc/thumbnail?sig=abc&expires={digits}")
    assert link.status_code == 422 and link.json()["error"]["code"] == "number_too_long"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as a stream without a Content-Length (chunked)."""
    for start in range(0, len(data), 65536):
        yield data[start:start + 65536]


async def test_form_fields_are_capped_in_number(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    fields = {f"f{n}": "1" for n in range(21)}
    answer = await http.post("/api/batches", headers=auth(token), data=fields, files=[
        ("file", ("a.jpg", jpeg_bytes(40, 30), "image/jpeg"))])
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "too_many_fields"


@pytest.fixture(scope="module")
def strict_web(guarded: Stack) -> Iterator[str]:
    """A web process of the same deployment with small socket and upload limits (a web
    process alone: a stack of its own would cost its workers too), which counts loopback
    clients like any other (by default they are exempt from per-address limits)."""
    env = {**guarded.env, "SOCKET_HANDSHAKES_PER_MIN": "5", "SOCKET_CONNECT_TIMEOUT_S": "1",
           "RATE_LIMIT_UPLOADS_PER_MIN": "2", "RATE_LIMIT_EXEMPT_ADDRESSES": "none",
           "MAX_WEBHOOKS_PER_USER": "2"}
    web, url = start_web_process(env, guarded.logs / "strict-web.log")
    try:
        yield url
    finally:
        stop(web)


async def test_handshakes_are_rate_limited_and_tokenless_sessions_closed(
        strict_web: str) -> None:
    # The row: 6,000 handshakes without a token, all 200, each session held (RSS
    # +81 MB) until its ping timed out.
    async with httpx.AsyncClient(base_url=strict_web, timeout=5) as http:
        token = await new_token(http)
        handshake = "/socket.io/?EIO=4&transport=polling"
        opened = [await http.get(handshake) for _ in range(5)]
        assert [r.status_code for r in opened] == [200] * 5
        refused = await http.get(handshake)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # A WebSocket handshake past the rate is refused before it is accepted.
        assert await _refusal(strict_web, token, transports=["websocket"]) is not None
        # None of the five joined the namespace: closed after SOCKET_CONNECT_TIMEOUT_S
        # (a poll of a live session would wait up to 25 s for a packet).
        sid = json.loads(opened[0].text[1:])["sid"]
        await asyncio.sleep(2)
        gone = await http.get(f"{handshake}&sid={sid}")
        assert gone.status_code == 400


async def test_a_batch_past_the_upload_allowance_is_refused_at_that_file(
        strict_web: str) -> None:
    # RATE_LIMIT_UPLOADS_PER_MIN=2: the third file of a batch is refused as it begins,
    # while the client is still sending (the allowance was checked after the whole body).
    async with httpx.AsyncClient(base_url=strict_web, timeout=30) as http:
        token = await new_token(http)
        host, port = strict_web.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write((f"POST /api/batches HTTP/1.1\r\nHost: {host}\r\n"
                          f"Authorization: Bearer {token}\r\n"
                          "Content-Type: multipart/form-data; boundary=bb\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n").encode())
            for n in range(3):
                part = (f"--bb\r\nContent-Disposition: form-data; name=\"file\"; "
                        f"filename=\"{n}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
                        ).encode() + jpeg_bytes(40, 30, color=(n, 1, 2)) + b"\r\n"
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()  # and no closing boundary: more would follow
            status = await asyncio.wait_for(reader.readline(), timeout=10)
            assert status.split()[1] == b"429", status
        finally:
            writer.close()
        # A refused batch costs nothing: two files still fit.
        files = [("file", (f"{n}.jpg", jpeg_bytes(40, 30, color=(n, 3, 4)), "image/jpeg"))
                 for n in range(2)]
        answer = await http.post("/api/batches", headers=auth(token), files=files)
        assert answer.status_code == 202, answer.text
        assert all("job" in item for item in answer.json()["items"])


async def test_webhooks_per_user_follow_their_setting(strict_web: str) -> None:
    # MAX_WEBHOOKS_PER_USER was a constant of 20 in the store (server/store.py then).
    async with httpx.AsyncClient(base_url=strict_web, timeout=30) as http:
        token = await new_token(http)
        for n in range(2):
            made = await http.post("/api/webhooks", headers=auth(token),
                                   json={"url": f"https://hooks.example.com/{n}"})
            assert made.status_code == 201, made.text
        third = await http.post("/api/webhooks", headers=auth(token),
                                json={"url": "https://hooks.example.com/2"})
        assert third.status_code == 409, third.text
        assert third.json()["error"] == {"code": "too_many_webhooks",
                                         "message": "at most 2 webhooks per user"}


async def test_a_refused_upload_costs_none_of_the_allowance(strict_web: str) -> None:
    # RATE_LIMIT_UPLOADS_PER_MIN=2. A single upload took its allowance before the file was
    # looked at: two refused files left nothing for two good ones.
    async with httpx.AsyncClient(base_url=strict_web, timeout=30) as http:
        token = await new_token(http)
        left = 60 - time.time() % 60
        if left < 5:  # the four requests below must fall in one window
            await asyncio.sleep(left + 0.05)
        for _ in range(2):
            refused = await upload(http, token, b"not an image at all")
            assert 400 <= refused.status_code < 500 and refused.status_code != 429, refused.text
        for n in range(2):
            good = await upload(http, token, jpeg_bytes(50, 30, color=(n, 5, 6)))
            assert good.status_code == 202, good.text
        over = await upload(http, token, jpeg_bytes(50, 30, color=(9, 5, 6)))
        assert over.status_code == 429, over.text


async def test_a_batch_counts_only_the_files_it_stored(strict_web: str) -> None:
    # RATE_LIMIT_UPLOADS_PER_MIN=2. A batch took one upload per file, refused ones included.
    async with httpx.AsyncClient(base_url=strict_web, timeout=30) as http:
        token = await new_token(http)
        left = 60 - time.time() % 60
        if left < 5:  # the three requests below must fall in one window
            await asyncio.sleep(left + 0.05)
        batch = await http.post("/api/batches", headers=auth(token), files=[
            ("file", ("a.jpg", jpeg_bytes(50, 30, color=(1, 7, 8)), "image/jpeg")),
            ("file", ("b.jpg", b"not an image at all", "image/jpeg"))])
        assert batch.status_code == 202, batch.text
        first, second = batch.json()["items"]
        assert "job" in first and "error" in second
        good = await upload(http, token, jpeg_bytes(50, 30, color=(2, 7, 8)))
        assert good.status_code == 202, good.text
        over = await upload(http, token, jpeg_bytes(50, 30, color=(3, 7, 8)))
        assert over.status_code == 429, over.text
