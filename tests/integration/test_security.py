"""Hardening against real processes: headers, CORS, socket limits, floods, the audit trail."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import socketio

from server.headers import content_security_policy
from tests.conftest import Databases, Stack, running_stack, start_web_process, stop
from tests.factories import auth, connected, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration

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
