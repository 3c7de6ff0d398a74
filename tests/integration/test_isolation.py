"""Two users: B, with B's token and A's ids, tries every endpoint and event. Nothing leaks.

The routes are read from the app itself, and a test fails when one has no case here, so a
route added later cannot be forgotten.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from server.infra.settings import Settings
from server.web.app import create_app
from tests.conftest import Databases, Stack, running_stack
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token, upload, wait_final

pytestmark = pytest.mark.integration

ADMIN_ONLY = 403


@pytest.fixture(scope="module")
def shared(redis_url: str, databases: Databases,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("isolation"),
                       ENABLE_TEST_TASKS="true") as running:
        yield running


@dataclass
class Alice:
    """User A and everything A owns; ``secrets`` are strings B must never see."""

    token: str
    user_id: str
    image: dict[str, Any]
    image_bytes: bytes
    batch_id: str
    image_job: str
    batch_job: str
    delayed_job: str
    failed_job: str
    schedule_id: str
    webhook_id: str
    secrets: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
async def alice(shared: Stack) -> Alice:
    tag = secrets.token_hex(4)
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as http:
        session = (await http.post("/api/session")).json()
        token, user_id = session["token"], session["user_id"]
        data = jpeg_bytes(500, 400, color=(11, 22, 33))
        posted = (await upload(http, token, data, filename=f"alice-{tag}.jpg")).json()
        image_job = posted["job"]["id"]
        batch = (await http.post("/api/batches", headers=auth(token), files=[
            ("file", (f"alice-batch-{tag}.jpg", jpeg_bytes(300, 200, color=(5, 6, 7)),
                      "image/jpeg"))])).json()
        batch_job = batch["items"][0]["job"]["id"]
        delayed = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "test.sleep", "payload": {"seconds": 0}, "delay": 600})).json()["job"]
        failing = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "test.flaky", "payload": {"fail_runs": 1, "error": "permanent"}},
        )).json()["job"]
        schedule = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "test.sleep", "payload": {"seconds": 0},
            "repeat": {"cron": "0 0 1 1 *", "timezone": "UTC"}})).json()["schedule"]
        for job_id in (image_job, batch_job, failing["id"]):
            await wait_final(http, token, job_id)
        assert (await wait_final(http, token, failing["id"]))["state"] == "failed"
        # Registered once the jobs above ended: no deliveries to a dead address.
        hook_url = f"http://127.0.0.1:9/alice-hook-{tag}"
        hook = (await http.post("/api/webhooks", headers=auth(token),
                                json={"url": hook_url})).json()
        image = (await http.get(f"/api/images/{posted['image']['id']}",
                                headers=auth(token))).json()
        assert image["thumbnail_url"] and image["preview_url"]
    alice = Alice(token=token, user_id=user_id, image=image, image_bytes=data,
                  batch_id=batch["batch"]["id"], image_job=image_job, batch_job=batch_job,
                  delayed_job=delayed["id"], failed_job=failing["id"],
                  schedule_id=schedule["id"], webhook_id=hook["webhook"]["id"])
    alice.secrets = {token, user_id, image["id"], alice.batch_id, image_job, batch_job,
                     alice.delayed_job, alice.failed_job, alice.schedule_id, alice.webhook_id,
                     batch["items"][0]["image"]["id"], f"alice-{tag}", f"alice-batch-{tag}",
                     hook_url}
    if hook.get("signing_secret"):
        alice.secrets.add(hook["signing_secret"])
    return alice


@dataclass
class Attempt:
    """B's side: B's token and a client whose every answer is checked for A's data."""

    http: httpx.AsyncClient
    token: str
    alice: Alice

    async def call(self, method: str, path: str, *statuses: int,
                   bearer: bool = True, **kwargs: Any) -> httpx.Response:
        headers = auth(self.token) if bearer else {}
        response = await self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code in statuses, (method, path, response.status_code,
                                                  response.text[:300])
        self.no_leak(response)
        return response

    def no_leak(self, response: httpx.Response) -> None:
        text = response.text if not response.headers.get("content-type", "").startswith(
            "image/") else ""
        seen = " ".join([text, *response.headers.values()])
        leaked = [s for s in self.alice.secrets if s in seen]
        assert not leaked, (response.request.url, leaked)


@pytest.fixture
async def bob(shared: Stack, alice: Alice) -> AsyncIterator[Attempt]:
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as http:
        yield Attempt(http, await new_token(http), alice)


Case = Callable[[Attempt], Awaitable[None]]
CASES: dict[tuple[str, str], Case] = {}


def case(method: str, path: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[(method, path)] = fn
        return fn
    return register


def api_routes() -> set[tuple[str, str]]:
    """(method, path) of every /api route the app serves (HEAD comes with GET)."""
    settings = Settings(redis_url="redis://unused", data_dir=Path("unused"))
    http_app = create_app(settings).app.other_asgi_app
    return {(method, route.path) for route in http_app.routes
            if isinstance(route, Route) and route.path.startswith("/api")
            for method in (route.methods or set()) - {"HEAD"}}


# -- the cases -----------------------------------------------------------------------------


@case("POST", "/api/session")
async def _session(b: Attempt) -> None:
    await b.call("POST", "/api/session", 201, bearer=False)


@case("DELETE", "/api/session")
async def _revoke(b: Attempt) -> None:
    # B can revoke only the token B calls with; A's stays good.
    await b.call("DELETE", "/api/session", 204)
    await b.call("GET", "/api/images", 401)
    mine = await b.http.get(f"/api/images/{b.alice.image['id']}", headers=auth(b.alice.token))
    assert mine.status_code == 200


@case("POST", "/api/images")
async def _upload(b: Attempt) -> None:
    # The very bytes A uploaded: a new image of B's, never A's as a "duplicate".
    body = (await b.call("POST", "/api/images", 202, files={
        "file": ("mine.jpg", b.alice.image_bytes, "image/jpeg")})).json()
    assert "duplicate" not in body and body["image"]["id"] != b.alice.image["id"]


@case("GET", "/api/images")
async def _list_images(b: Attempt) -> None:
    await b.call("GET", "/api/images", 200)
    await b.call("GET", f"/api/images?before={b.alice.image['id']}", 200)


@case("GET", "/api/images/{image_id}")
async def _get_image(b: Attempt) -> None:
    await b.call("GET", f"/api/images/{b.alice.image['id']}", 404)


@case("DELETE", "/api/images/{image_id}")
async def _delete_image(b: Attempt) -> None:
    await b.call("DELETE", f"/api/images/{b.alice.image['id']}", 404)
    still = await b.http.get(f"/api/images/{b.alice.image['id']}", headers=auth(b.alice.token))
    assert still.status_code == 200


@case("GET", "/api/images/{image_id}/{kind}")
async def _image_files(b: Attempt) -> None:
    image = b.alice.image
    for kind in ("thumbnail", "preview", "original", "nonsense"):
        await b.call("GET", f"/api/images/{image['id']}/{kind}", 404)
        await b.call("HEAD", f"/api/images/{image['id']}/{kind}", 404)
    # A signed link names one file: it opens nothing else.
    signed = httpx.URL(image["thumbnail_url"])
    query = signed.query.decode()
    await b.call("GET", f"/api/images/{image['id']}/original?{query}", 403, bearer=False)
    await b.call("GET", f"/api/images/{image['id']}/preview?{query}", 403, bearer=False)
    mine = (await b.call("POST", "/api/images", 202, files={
        "file": ("other.jpg", jpeg_bytes(64, 64, color=(1, 1, 1)), "image/jpeg")})).json()
    await b.call("GET", f"/api/images/{mine['image']['id']}/thumbnail?{query}", 403,
                 bearer=False)
    # With B's token beside a link that does not fit, B's own rights apply: none to A's.
    await b.call("GET", f"/api/images/{image['id']}/original?{query}", 404)
    # The link itself works for whoever holds it (that is what it is for).
    assert (await b.http.get(image["thumbnail_url"])).status_code == 200


@case("POST", "/api/batches")
async def _batch_upload(b: Attempt) -> None:
    body = (await b.call("POST", "/api/batches", 202, files=[
        ("file", ("same.jpg", b.alice.image_bytes, "image/jpeg"))])).json()
    assert "duplicate" not in body["items"][0]


@case("GET", "/api/batches/{batch_id}")
async def _batch(b: Attempt) -> None:
    await b.call("GET", f"/api/batches/{b.alice.batch_id}", 404)


def _alice_jobs(b: Attempt) -> list[str]:
    a = b.alice
    return [a.image_job, a.batch_job, a.delayed_job, a.failed_job]


@case("GET", "/api/jobs")
async def _list_jobs(b: Attempt) -> None:
    for query in ("", "?state=failed", "?state=delayed", "?type=test.flaky",
                  f"?before={b.alice.delayed_job}"):
        await b.call("GET", f"/api/jobs{query}", 200)


@case("GET", "/api/jobs/{job_id}")
async def _get_job(b: Attempt) -> None:
    for job_id in _alice_jobs(b):
        await b.call("GET", f"/api/jobs/{job_id}", 404)


@case("GET", "/api/jobs/{job_id}/timeline")
async def _timeline(b: Attempt) -> None:
    for job_id in _alice_jobs(b):
        await b.call("GET", f"/api/jobs/{job_id}/timeline", 404)


@case("POST", "/api/jobs/{job_id}/cancel")
async def _cancel(b: Attempt) -> None:
    for job_id in _alice_jobs(b):
        await b.call("POST", f"/api/jobs/{job_id}/cancel", 404)
    job = await b.http.get(f"/api/jobs/{b.alice.delayed_job}", headers=auth(b.alice.token))
    assert job.json()["state"] == "queued"


@case("POST", "/api/jobs/{job_id}/retry")
async def _retry(b: Attempt) -> None:
    for job_id in _alice_jobs(b):
        await b.call("POST", f"/api/jobs/{job_id}/retry", 404)
    job = await b.http.get(f"/api/jobs/{b.alice.failed_job}", headers=auth(b.alice.token))
    assert job.json()["state"] == "failed"


@case("POST", "/api/tasks")
async def _tasks(b: Attempt) -> None:
    # A's image is answered exactly like an image that does not exist.
    for extra in ({}, {"repeat": {"cron": "0 0 1 1 *", "timezone": "UTC"}}):
        theirs = await b.call("POST", "/api/tasks", 422, json={
            "type": "image.reprocess", "payload": {"image_id": b.alice.image["id"]}, **extra})
        nothing = await b.call("POST", "/api/tasks", 422, json={
            "type": "image.reprocess", "payload": {"image_id": "0" * 32}, **extra})
        assert theirs.json() == nothing.json()


@case("GET", "/api/tasks/types")
async def _types(b: Attempt) -> None:
    await b.call("GET", "/api/tasks/types", 200)


@case("GET", "/api/schedules")
async def _schedules(b: Attempt) -> None:
    await b.call("GET", "/api/schedules", 200)


@case("DELETE", "/api/schedules/{schedule_id}")
async def _delete_schedule(b: Attempt) -> None:
    await b.call("DELETE", f"/api/schedules/{b.alice.schedule_id}", 404)
    listed = await b.http.get("/api/schedules", headers=auth(b.alice.token))
    assert b.alice.schedule_id in listed.text


@case("POST", "/api/webhooks")
async def _create_webhook(b: Attempt) -> None:
    await b.call("POST", "/api/webhooks", 201, json={"url": "https://example.com/bob"})


@case("GET", "/api/webhooks")
async def _webhooks(b: Attempt) -> None:
    await b.call("GET", "/api/webhooks", 200)


@case("DELETE", "/api/webhooks/{webhook_id}")
async def _delete_webhook(b: Attempt) -> None:
    await b.call("DELETE", f"/api/webhooks/{b.alice.webhook_id}", 404)
    listed = await b.http.get("/api/webhooks", headers=auth(b.alice.token))
    assert b.alice.webhook_id in listed.text


@case("GET", "/api/dlq")
async def _dlq(b: Attempt) -> None:
    await b.call("GET", "/api/dlq", ADMIN_ONLY)


@case("DELETE", "/api/dlq")
async def _dlq_clear(b: Attempt) -> None:
    await b.call("DELETE", "/api/dlq", ADMIN_ONLY)


@case("POST", "/api/dlq/retry")
async def _dlq_retry_all(b: Attempt) -> None:
    await b.call("POST", "/api/dlq/retry", ADMIN_ONLY)


@case("POST", "/api/dlq/{job_id}/retry")
async def _dlq_retry(b: Attempt) -> None:
    await b.call("POST", f"/api/dlq/{b.alice.failed_job}/retry", ADMIN_ONLY)


@case("DELETE", "/api/dlq/{job_id}")
async def _dlq_delete(b: Attempt) -> None:
    await b.call("DELETE", f"/api/dlq/{b.alice.failed_job}", ADMIN_ONLY)


@case("GET", "/api/queues")
async def _queues(b: Attempt) -> None:
    await b.call("GET", "/api/queues", ADMIN_ONLY)


@case("GET", "/api/workers")
async def _workers(b: Attempt) -> None:
    await b.call("GET", "/api/workers", ADMIN_ONLY)


@case("GET", "/api/charts")
async def _charts(b: Attempt) -> None:
    await b.call("GET", "/api/charts", ADMIN_ONLY)


@case("POST", "/api/queues/{name}/pause")
async def _pause(b: Attempt) -> None:
    await b.call("POST", "/api/queues/images/pause", ADMIN_ONLY)


@case("POST", "/api/queues/{name}/resume")
async def _resume(b: Attempt) -> None:
    await b.call("POST", "/api/queues/images/resume", ADMIN_ONLY)


@case("POST", "/api/queues/{name}/clean")
async def _clean(b: Attempt) -> None:
    await b.call("POST", "/api/queues/images/clean", ADMIN_ONLY, json={"older_than_s": 0})


# Below every case, so that CASES is complete when the tests are parametrized.
def test_every_api_route_has_a_case() -> None:
    routes = api_routes()
    assert routes - set(CASES) == set(), "routes without an isolation case"
    assert set(CASES) - routes == set(), "cases for routes that no longer exist"


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_b_gets_nothing_of_a(route: tuple[str, str], bob: Attempt) -> None:
    await CASES[route](bob)


async def test_pages_and_operations_carry_nothing_of_a(bob: Attempt) -> None:
    for path in ("/", "/admin", "/healthz", "/metrics", "/static/app.js"):
        await bob.call("GET", path, 200)
    # A's data is still all there after every attempt above and below.
    a = bob.alice
    for job_id in _alice_jobs(bob):
        assert (await bob.http.get(f"/api/jobs/{job_id}", headers=auth(a.token))).status_code \
            == 200


# -- events --------------------------------------------------------------------------------


async def test_b_socket_never_sees_a_jobs(shared: Stack, bob: Attempt,
                                          sockets: list[LiveClient]) -> None:
    a = bob.alice
    own = (await bob.http.post("/api/tasks", headers=auth(bob.token), json={
        "type": "test.sleep", "payload": {"seconds": 0}})).json()["job"]
    await wait_final(bob.http, bob.token, own["id"])
    watcher = await connected(shared.url, a.token, sockets)
    spy = await connected(shared.url, bob.token, sockets)
    _, snapshot = await spy.wait_for(lambda name, _data: name == "jobs:snapshot")
    assert [j["id"] for j in snapshot["jobs"]] == [own["id"]]
    for job_id in _alice_jobs(bob):
        ack = await spy.sio.call("subscribe", {"job_id": job_id}, timeout=10)
        assert ack == {"ok": False, "error": {"code": "not_found",
                                              "message": "job not found"}}
        assert await spy.sio.call("unsubscribe", {"job_id": job_id}, timeout=10) == \
            {"ok": True}
    refused = await spy.sio.call("subscribe", {"scope": "all"}, timeout=10)
    assert refused["error"]["code"] == "forbidden"

    # A's jobs run to the end while B listens; then a job of B's, so B's socket has
    # had every chance to receive anything the relay sent it before.
    started = [(await bob.http.post("/api/tasks", headers=auth(a.token), json={
        "type": "test.sleep", "payload": {"seconds": 0.3, "steps": 3}})).json()["job"]
        for _ in range(2)]
    started.append((await upload(bob.http, a.token, jpeg_bytes(200, 150, color=(7, 7, 7)),
                                 filename="alice-live.jpg")).json()["job"])
    for job in started:
        name, _ = await watcher.wait_final(job["id"])
        assert name == "job:completed"
    last = (await bob.http.post("/api/tasks", headers=auth(bob.token), json={
        "type": "test.sleep", "payload": {"seconds": 0}})).json()["job"]
    await spy.wait_final(last["id"])

    heard = json.dumps(spy.events)
    for secret in a.secrets | {job["id"] for job in started} | {"alice-live"}:
        assert secret not in heard, secret
    assert all(data["job"]["id"] in (own["id"], last["id"])
               for name, data in spy.events if name.startswith("job:"))
