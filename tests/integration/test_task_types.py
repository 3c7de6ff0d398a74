"""Built-in task types against real peers: a local SMTP server and a local HTTP receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret"


class Mailbox:
    """aiosmtpd handler: keeps every message; refuses recipients at refused.example."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((envelope, bytes(envelope.content or b"")))
        return "250 Message accepted"


class BoundController(Controller):
    """aiosmtpd's Controller on a port the system gives it (port 0): the port is read back
    from the bound socket, so no other process can take it between choosing and binding."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0)

    def _trigger_server(self) -> None:
        # Called by start() once the server is bound, before it first connects to it.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Receiver:
    """A local HTTP server that records POSTs; ``script`` lists statuses to answer in turn."""

    port: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    # Set: a trickling answer stops (the connection closes with no status line).
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0] == path]


# Per database backend (``databases``), like the stack: when pytest-xdist runs both
# backends' tests of this module in one worker, each stack gets a fresh mailbox/receiver.
@pytest.fixture(scope="module")
def mailbox(databases: Databases) -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = BoundController(box)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def receiver(databases: Databases) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append((self.path, dict(self.headers), body))
            if self.path == "/trickle":
                self._trickle()
                return
            statuses = state.script.get(self.path) or [200]
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _trickle(self) -> None:
            """One byte of a status line every 0.5 s, for up to 30 s or until released:
            no read of the sender's ever waits long enough to time out."""
            for _ in range(60):
                try:
                    self.wfile.write(b"H")
                    self.wfile.flush()
                except OSError:  # the sender gave up
                    return
                if state.release.wait(0.5):
                    return

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Receiver(port=server.socket.getsockname()[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def tasks_stack(redis_url: str, databases: Databases, mailbox: tuple[Mailbox, int],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("tasks"),
                       SMTP_URL=f"smtp://127.0.0.1:{mailbox[1]}",
                       SMTP_FROM="darkroom@test.example", WEBHOOK_SECRET=SECRET,
                       WEBHOOK_TIMEOUT_S="3", WEBHOOK_ALLOW_PRIVATE="true",
                       WEBHOOK_DEADLINE_S="20", WEBHOOK_MAX_IN_FLIGHT_PER_USER="3",
                       EMAIL_ALLOWED_RECIPIENTS="@test.example,@refused.example",
                       EMAIL_RATE_PER_USER_PER_HOUR="3",
                       RETRY_MIN_BACKOFF_MS="200",
                       RETRY_MAX_BACKOFF_MS="1000") as running:
        yield running


@pytest.fixture
def http_stack(tasks_stack: Stack) -> Stack:
    return tasks_stack


async def _submit(http: httpx.AsyncClient, token: str, task_type: str,
                  payload: dict[str, Any]) -> httpx.Response:
    return await http.post("/api/tasks", headers=auth(token),
                           json={"type": task_type, "payload": payload})


async def test_types_are_listed_with_their_schemas(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    types = {t["type"]: t for t in
             (await http.get("/api/tasks/types", headers=auth(token))).json()["types"]}
    assert {"email.send", "webhook.deliver", "image.reprocess"} <= set(types)
    assert types["email.send"]["payload_schema"]["required"] == ["to", "subject"]


async def test_email_is_delivered_to_the_smtp_server(http: httpx.AsyncClient,
                                                     mailbox: tuple[Mailbox, int]) -> None:
    token = await new_token(http)
    response = await _submit(http, token, "email.send", {
        "to": "ana@test.example", "subject": "Your photos are ready", "body": "Hello Ana!"})
    assert response.status_code == 202, response.text
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "completed", job
    envelope, raw = next((e, r) for e, r in mailbox[0].messages
                         if "ana@test.example" in e.rcpt_tos)
    message = message_from_bytes(raw)
    assert envelope.mail_from == "darkroom@test.example"
    assert message["Subject"] == "Your photos are ready"
    assert message["X-Darkroom-Job"] == job["id"]
    assert message.get_payload().strip() == "Hello Ana!"


async def test_email_refused_for_good_fails_without_retry(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    response = await _submit(http, token, "email.send",
                             {"to": "nobody@refused.example", "subject": "x"})
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "failed" and job["attempt"] == 1
    assert job["error"]["type"] == "EmailRejected"


async def test_bad_email_payloads_are_422(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    response = await _submit(http, token, "email.send",
                             {"to": "not an address", "subject": "two\nlines"})
    assert response.status_code == 422
    assert response.json()["error"]["fields"] == {
        "payload.to": "must be an email address", "payload.subject": "must be one line"}


async def test_email_is_no_open_relay(http: httpx.AsyncClient, tasks_stack: Stack,
                                      mailbox: tuple[Mailbox, int]) -> None:
    token = await new_token(http)  # a fresh session: anyone
    listed = await _submit(http, token, "email.send",
                           {"to": "victim@ex.com,postmaster", "subject": "Hi"})
    assert listed.status_code == 422, listed.text
    assert listed.json()["error"]["fields"] == {
        "payload.to": "must be exactly one address (no list, no name)"}
    for to in ("victim@ex.com", "Victim <victim@ex.com>"):
        assert (await _submit(http, token, "email.send", {"to": to, "subject": "Hi"})
                ).status_code in (403, 422)
    refused = await http.post("/api/tasks", headers=auth(token), json={
        "type": "email.send", "payload": {"to": "victim@ex.com", "subject": "Daily"},
        "repeat": {"cron": "0 7 * * *", "timezone": "UTC"}})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "recipient_not_allowed"
    # An admin may mail anyone, one address at a time.
    admin = tasks_stack.env["ADMIN_TOKEN"]
    sent = await _submit(http, admin, "email.send", {"to": "victim@ex.com", "subject": "Hi"})
    assert sent.status_code == 202, sent.text
    job = await wait_final(http, admin, sent.json()["job"]["id"])
    assert job["state"] == "completed", job
    envelopes = [e.rcpt_tos for e, _ in mailbox[0].messages if "victim@ex.com" in e.rcpt_tos]
    assert envelopes == [["victim@ex.com"]]
    assert not any("postmaster" in e.rcpt_tos for e, _ in mailbox[0].messages)


async def test_email_send_rate_per_user(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    for n in range(3):  # EMAIL_RATE_PER_USER_PER_HOUR in this stack
        answer = await _submit(http, token, "email.send",
                               {"to": f"n{n}@test.example", "subject": "Hi"})
        assert answer.status_code == 202, answer.text
    over = await _submit(http, token, "email.send", {"to": "n3@test.example", "subject": "Hi"})
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"
    assert 3000 <= int(over.headers["Retry-After"]) <= 3600
    # Another user has an allowance of their own.
    other = await new_token(http)
    assert (await _submit(http, other, "email.send",
                          {"to": "o@test.example", "subject": "Hi"})).status_code == 202


async def test_a_slow_receiver_holds_no_image_thread(http: httpx.AsyncClient,
                                                    receiver: Receiver) -> None:
    """More deliveries to a receiver that trickles a byte every 0.5 s than the image
    worker has threads (2), each allowed 20 s (WEBHOOK_DEADLINE_S here): an upload still
    completes within 8 s, while all of them are still running. (The deadline itself:
    tests/workers/test_webhook.py.)"""
    photographer = await new_token(http)
    receiver.release.clear()
    deliveries = []
    for _ in range(3):  # three senders: no per-user cap on deliveries gets in the way
        sender = await new_token(http)
        answer = await http.post("/api/tasks", headers=auth(sender), json={
            "type": "webhook.deliver", "payload": {"url": receiver.url("/trickle")},
            "max_attempts": 1})
        assert answer.status_code == 202, answer.text
        deliveries.append((sender, answer.json()["job"]["id"]))
    try:
        for _ in range(100):  # the deliveries have begun: the receiver has them
            if len(receiver.of("/trickle")) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(receiver.of("/trickle")) == 3
        started = time.monotonic()
        body = (await upload(http, photographer, jpeg_bytes(320, 200))).json()
        done = await wait_final(http, photographer, body["job"]["id"], timeout=15)
        assert done["state"] == "completed"
        assert time.monotonic() - started < 8
        for sender, job_id in deliveries:
            job = (await http.get(f"/api/jobs/{job_id}", headers=auth(sender))).json()
            assert job["state"] == "active", job
    finally:
        receiver.release.set()  # the receiver hangs up: each delivery ends at once
    for sender, job_id in deliveries:
        job = await wait_final(http, sender, job_id, timeout=15)
        assert (job["state"], job["attempt"]) == ("failed", 1), job


async def test_deliveries_are_capped_and_attempts_have_a_ceiling(
        http: httpx.AsyncClient, receiver: Receiver) -> None:
    token = await new_token(http)
    url = receiver.url("/capped")
    waiting = []
    # WEBHOOK_MAX_IN_FLIGHT_PER_USER (3) in this stack; delayed, so unfinished. More
    # attempts than the type's ceiling (5) get the ceiling, as the answer says.
    for asked, got in ((20, 5), (2, 2), (2, 2)):
        answer = await http.post("/api/tasks", headers=auth(token), json={
            "type": "webhook.deliver", "payload": {"url": url}, "delay": 600,
            "max_attempts": asked})
        assert answer.status_code == 202, answer.text
        assert answer.json()["job"]["max_attempts"] == got
        waiting.append(answer.json()["job"]["id"])
    over = await _submit(http, token, "webhook.deliver", {"url": url})
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "too_many_deliveries"
    assert int(over.headers["Retry-After"]) >= 1
    # A job that ends while the user is at the cap still has its end delivered (every
    # final state is POSTed), with the type's own attempts.
    await http.post("/api/webhooks", headers=auth(token), json={"url": url})
    body = (await upload(http, token, jpeg_bytes(200, 100))).json()
    assert (await wait_final(http, token, body["job"]["id"]))["state"] == "completed"
    for _ in range(100):
        if receiver.of("/capped"):
            break
        await asyncio.sleep(0.1)
    assert [json.loads(raw)["job"]["id"] for _, _, raw in receiver.of("/capped")] == [
        body["job"]["id"]]
    # The job's page lists the delivery of its end, with the receiver's answer.
    for _ in range(100):
        timeline = (await http.get(f"/api/jobs/{body['job']['id']}/timeline",
                                   headers=auth(token))).json()
        if timeline["deliveries"] and timeline["deliveries"][0]["state"] == "completed":
            break
        await asyncio.sleep(0.1)
    (delivery,) = timeline["deliveries"]
    assert (delivery["url"], delivery["event"], delivery["status"]) == (
        url, "job.completed", 200)
    listed = (await http.get("/api/jobs?type=webhook.deliver",
                             headers=auth(token))).json()["items"]
    (fanned_out,) = [job for job in listed if job["id"] not in waiting]
    assert fanned_out["max_attempts"] == 5
    assert sorted(job["id"] for job in listed) == sorted([*waiting, fanned_out["id"]])
    for job_id in waiting:
        await http.post(f"/api/jobs/{job_id}/cancel", headers=auth(token))


async def test_webhook_is_signed_and_retried_on_5xx_only(http: httpx.AsyncClient,
                                                         receiver: Receiver) -> None:
    token = await new_token(http)
    receiver.script["/flaky"] = [503, 500, 200]
    body = {"hello": "world"}
    response = await _submit(http, token, "webhook.deliver",
                             {"url": receiver.url("/flaky"), "event": "ping", "body": body})
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "completed" and job["attempt"] == 3
    assert job["result"] == {"status": 200}
    calls = receiver.of("/flaky")
    assert len(calls) == 3
    _, headers, raw = calls[-1]
    assert json.loads(raw) == body
    key = (await http.get("/api/webhooks", headers=auth(token))).json()["signing_secret"]
    expected = hmac.new(key.encode(), headers["X-Darkroom-Timestamp"].encode() + b"." + raw,
                        hashlib.sha256).hexdigest()
    assert headers["X-Darkroom-Signature"] == f"sha256={expected}"
    assert headers["X-Darkroom-Event"] == "ping"
    # Another user's key differs: nobody can sign deliveries as someone else.
    other = await new_token(http)
    assert (await http.get("/api/webhooks", headers=auth(other))).json()[
        "signing_secret"] != key

    receiver.script["/moved"] = [302]
    response = await _submit(http, token, "webhook.deliver", {"url": receiver.url("/moved")})
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert (job["state"], job["attempt"]) == ("failed", 1)
    assert job["error"]["message"] == "the receiver answered 302"

    receiver.script["/gone"] = [404]
    response = await _submit(http, token, "webhook.deliver", {"url": receiver.url("/gone")})
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "failed" and job["attempt"] == 1
    assert job["error"] == {"type": "DeliveryRejected", "message": "the receiver answered 404",
                            "retryable": False}


async def test_registered_webhooks_receive_final_states(http: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
    token = await new_token(http)
    created = await http.post("/api/webhooks", headers=auth(token),
                              json={"url": receiver.url("/hook")})
    assert created.status_code == 201
    hook = created.json()["webhook"]
    listed = (await http.get("/api/webhooks", headers=auth(token))).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert (await http.post("/api/webhooks", headers=auth(token),
                            json={"url": "file:///etc/passwd"})).status_code == 422

    body = (await upload(http, token, jpeg_bytes(320, 200))).json()
    done = await wait_final(http, token, body["job"]["id"])
    assert done["state"] == "completed"
    for _ in range(100):
        deliveries = [json.loads(raw) for _, _, raw in receiver.of("/hook")]
        if any(d["job"]["id"] == done["id"] for d in deliveries):
            break
        await asyncio.sleep(0.1)
    delivery = next(d for d in deliveries if d["job"]["id"] == done["id"])
    assert delivery["event"] == "job.completed"
    assert delivery["job"]["state"] == "completed"
    assert delivery["job"]["result"]["image"]["id"] == body["image"]["id"]

    assert (await http.delete(f"/api/webhooks/{hook['id']}",
                              headers=auth(token))).status_code == 204
    assert (await http.get("/api/webhooks", headers=auth(token))).json()["items"] == []
    other = await new_token(http)
    assert (await http.delete(f"/api/webhooks/{hook['id']}",
                              headers=auth(other))).status_code == 404


async def test_reprocess_runs_the_pipeline_again(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(1000, 500))).json()
    assert (await wait_final(http, token, body["job"]["id"]))["state"] == "completed"
    image_id = body["image"]["id"]
    response = await _submit(http, token, "image.reprocess", {"image_id": image_id})
    assert response.status_code == 202, response.text
    job = await wait_final(http, token, response.json()["job"]["id"])
    assert job["state"] == "completed"
    assert job["image_id"] == image_id
    assert job["result"]["image"]["status"] == "ready"
    assert job["result"]["image"]["job_id"] == job["id"]
    assert (job["result"]["image"]["width"], job["result"]["image"]["height"]) == (1000, 500)

    stranger = await new_token(http)
    refused = await _submit(http, stranger, "image.reprocess", {"image_id": image_id})
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"] == {"payload.image_id": "no such image"}


async def test_reprocess_waits_for_the_images_own_job(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(300, 200, color=(8, 8, 8)),
                         fields={"delay": "60"})).json()
    busy = await _submit(http, token, "image.reprocess", {"image_id": body["image"]["id"]})
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "image_busy"
    schedule = await http.post("/api/tasks", headers=auth(token), json={
        "type": "image.reprocess", "payload": {"image_id": "nope"},
        "repeat": {"cron": "0 * * * *", "timezone": "UTC"}})
    assert schedule.status_code == 422
    timed = await http.post("/api/tasks", headers=auth(token), json={
        "type": "image.reprocess", "payload": {"image_id": body["image"]["id"]},
        "run_at": "2020-01-01T00:00:00Z", "repeat": {"cron": "0 * * * *", "timezone": "UTC"}})
    assert timed.status_code == 400
    await http.post(f"/api/jobs/{body['job']['id']}/cancel", headers=auth(token))
