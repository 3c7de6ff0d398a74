"""Upload → Dramatiq worker → Pillow → Redis pub/sub → Socket.IO, with real processes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import socketio
from PIL import Image

from tests.conftest import (
    Databases,
    Stack,
    running_stack,
    stack_env,
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
    wait_final,
)

pytestmark = pytest.mark.integration


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


async def test_owner_sees_every_stage_live_and_others_see_nothing(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    owner, stranger = await new_token(http), await new_token(http)
    owner_socket = await connected(stack.url, owner, sockets)
    stranger_socket = await connected(stack.url, stranger, sockets)

    response = await upload(http, owner, jpeg_bytes(3000, 2000), filename="big.jpg")
    assert response.status_code == 202, response.text
    body = response.json()
    job_id, image_id = body["job"]["id"], body["image"]["id"]
    assert body["job"]["state"] == "queued"
    assert body["image"]["status"] == "queued"
    assert body["image"]["job_id"] == job_id

    name, final = await owner_socket.wait_final(job_id)
    assert name == "job:completed", final
    # Events travel two paths (web and worker both publish); order them by seq, as clients do.
    events = sorted(owner_socket.of_job(job_id), key=lambda e: e[1]["seq"])
    names = [n for n, _ in events]
    assert names[0] == "job:queued"
    assert "job:active" in names
    assert names.count("job:progress") >= 3
    assert names[-1] == "job:completed"
    await assert_each_change_once(http, owner, job_id, events)
    assert all(data["seq"] == data["job"]["seq"] for _, data in events)
    progress = [data["job"]["progress"] for n, data in events if n == "job:progress"]
    assert progress == sorted(progress) and progress[-1] < 100
    stages = [data["job"]["stage"] for n, data in events if n == "job:progress"]
    # The last stage (metadata) only stores what the others found: it is stored with
    # job:completed, not pushed as a step of its own.
    assert stages == ["decoding", "thumbnail", "preview"]

    image = final["job"]["result"]["image"]
    assert (image["width"], image["height"]) == (3000, 2000)
    assert image["status"] == "ready"
    assert image["metadata"]["format"] == "JPEG"

    thumb = await http.get(f"/api/images/{image_id}/thumbnail", headers=auth(owner))
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/webp"
    assert _open(thumb.content).size == (200, 200)
    assert _open(thumb.content).format == "WEBP"
    preview = await http.get(f"/api/images/{image_id}/preview", headers=auth(owner))
    assert preview.headers["content-type"] == "image/webp"
    assert _open(preview.content).size == (800, 533)
    original = await http.get(f"/api/images/{image_id}/original", headers=auth(owner))
    assert original.headers["content-type"] == "image/jpeg"
    assert _open(original.content).size == (3000, 2000)

    polled = (await http.get(f"/api/jobs/{job_id}", headers=auth(owner))).json()
    for key in ("id", "state", "stage", "progress", "seq", "attempt", "finished_at", "error"):
        assert polled[key] == final["job"][key], key
    assert polled["result"]["image"]["id"] == image_id

    assert stranger_socket.of_job(job_id) == []
    assert [n for n, _ in stranger_socket.events if n.startswith("job:")] == []
    for path in (f"/api/images/{image_id}", f"/api/jobs/{job_id}",
                 f"/api/images/{image_id}/thumbnail"):
        denied = await http.get(path, headers=auth(stranger))
        assert denied.status_code == 404, path
        assert denied.json()["error"]["code"] == "not_found"


async def test_signed_urls_work_without_headers_and_refuse_tampering(
        stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(400, 300))).json()
    job = await wait_final(http, token, body["job"]["id"])
    image = job["result"]["image"]
    for kind in ("thumbnail_url", "preview_url", "original_url"):
        assert (await http.get(image[kind])).status_code == 200, kind
    tampered = image["thumbnail_url"].replace("sig=", "sig=0")
    refused = await http.get(tampered)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    # A link for one file does not open another.
    other = image["thumbnail_url"].replace("/thumbnail?", "/original?")
    assert (await http.get(other)).status_code == 403


async def test_socket_refuses_missing_and_bad_tokens(stack: Stack) -> None:
    for token in (None, "not-a-token"):
        client = socketio.AsyncClient(reconnection=False)
        reasons: list[object] = []
        client.on("connect_error", lambda data, reasons=reasons: reasons.append(data))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(stack.url, auth={"token": token} if token else None,
                                 transports=["websocket"], wait_timeout=5)
        assert reasons, "no connect_error received"
        message = reasons[0]["message"] if isinstance(reasons[0], dict) else str(reasons[0])
        assert message.startswith("unauthorized"), message


async def test_reconnect_gets_snapshot_with_the_final_state(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(640, 480))).json()
    job = await wait_final(http, token, body["job"]["id"])
    assert job["state"] == "completed"

    client = await connected(stack.url, token, sockets)
    first_name, snapshot = client.events[0]
    assert first_name == "jobs:snapshot"
    by_id = {j["id"]: j for j in snapshot["jobs"]}
    assert by_id[job["id"]]["state"] == "completed"
    assert by_id[job["id"]]["seq"] == job["seq"]
    assert by_id[job["id"]]["result"]["image"]["thumbnail_url"]


async def test_subscribe_acknowledges_with_the_snapshot_or_an_error(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    owner, stranger = await new_token(http), await new_token(http)
    body = (await upload(http, owner, jpeg_bytes(320, 240))).json()
    job = await wait_final(http, owner, body["job"]["id"])
    owner_socket = await connected(stack.url, owner, sockets)
    stranger_socket = await connected(stack.url, stranger, sockets)

    ack = await owner_socket.sio.call("subscribe", {"job_id": job["id"]}, timeout=10)
    assert ack["ok"] is True
    assert ack["job"]["id"] == job["id"] and ack["job"]["state"] == "completed"
    denied = await stranger_socket.sio.call("subscribe", {"job_id": job["id"]}, timeout=10)
    assert denied["ok"] is False and denied["error"]["code"] == "not_found"
    garbage = await owner_socket.sio.call("subscribe", "nonsense", timeout=10)
    assert garbage["ok"] is False
    # PostgreSQL refuses a NUL in text: still an answer, never a hung call.
    nul = await owner_socket.sio.call("subscribe", {"job_id": "a\x00b"}, timeout=10)
    assert nul["ok"] is False and nul["error"]["code"] in ("bad_request", "not_found")


async def test_admin_token_reads_any_users_job(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(300, 200))).json()
    admin = auth(stack.env["ADMIN_TOKEN"])
    seen = await http.get(f"/api/jobs/{body['job']['id']}", headers=admin)
    assert seen.status_code == 200
    assert seen.json()["id"] == body["job"]["id"]


@pytest.mark.parametrize(("data", "filename", "status", "code"), [
    (b"", "empty.jpg", 400, "empty_file"),
    (b"just some text pretending to be a photo\n" * 4, "notes.jpg", 415, "unsupported_type"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "doc.jpg", 415, "unsupported_type"),
])
async def test_not_images_are_refused_with_json(stack: Stack, http: httpx.AsyncClient,
                                                data: bytes, filename: str, status: int,
                                                code: str) -> None:
    token = await new_token(http)
    response = await upload(http, token, data, filename=filename)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert (await http.get("/api/images", headers=auth(token))).json()["items"] == []


async def test_request_errors_are_json(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    cases = [
        await http.get("/api/images"),
        await http.get("/api/images", headers=auth("wrong")),
        await http.post("/api/images", headers=auth(token), data={"x": "1"},
                        files={"other": ("a.jpg", b"123", "image/jpeg")}),
        await http.post("/api/images", headers=auth(token), json={"file": "x"}),
        await upload(http, token, jpeg_bytes(10, 10), fields={"priority": "urgent"}),
        await http.get("/api/nothing-here", headers=auth(token)),
        await http.get(f"/api/jobs/{'0' * 32}", headers=auth(token)),
    ]
    assert [c.status_code for c in cases] == [401, 401, 400, 400, 400, 404, 404]
    for case in cases:
        assert case.headers["content-type"].startswith("application/json")
        assert set(case.json()["error"]) == {"code", "message"}


async def test_truncated_jpeg_fails_with_reason_and_worker_keeps_working(
        stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    whole = jpeg_bytes(1600, 1200)
    broken = await upload(http, token, whole[: len(whole) // 3], filename="cut.jpg")
    assert broken.status_code == 202, broken.text
    failed = await wait_final(http, token, broken.json()["job"]["id"])
    assert failed["state"] == "failed"
    assert failed["error"]["message"]
    assert failed["attempt"] == 1, "a corrupt file must not be retried"
    image = (await http.get(f"/api/images/{failed['image_id']}", headers=auth(token))).json()
    assert image["status"] == "failed"

    healthy = await upload(http, token, jpeg_bytes(800, 600, color=(1, 2, 3)))
    assert (await wait_final(http, token, healthy.json()["job"]["id"]))["state"] == "completed"


async def test_same_bytes_again_is_a_duplicate(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    data = jpeg_bytes(500, 400, color=(9, 9, 9))
    first = await upload(http, token, data)
    again = await upload(http, token, data, filename="again.jpg")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["image"]["id"] == first.json()["image"]["id"]
    assert again.json()["job"]["id"] == first.json()["job"]["id"]


async def test_list_is_newest_first_and_paged(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    ids = []
    for shade in range(3):
        response = await upload(http, token, jpeg_bytes(64, 64, color=(shade, 50, 50)))
        ids.append(response.json()["image"]["id"])
    page1 = (await http.get("/api/images?limit=2", headers=auth(token))).json()
    assert [i["id"] for i in page1["items"]] == ids[::-1][:2]
    page2 = (await http.get(f"/api/images?limit=2&before={page1['next_before']}",
                            headers=auth(token))).json()
    assert [i["id"] for i in page2["items"]] == ids[:1]


async def test_delete_removes_record_and_files(stack: Stack, http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(300, 300))).json()
    await wait_final(http, token, body["job"]["id"])
    image_id = body["image"]["id"]
    assert (await http.delete(f"/api/images/{image_id}", headers=auth(token))).status_code == 204
    assert (await http.get(f"/api/images/{image_id}", headers=auth(token))).status_code == 404
    assert (await http.get(f"/api/images/{image_id}/original",
                           headers=auth(token))).status_code == 404
    assert not list(Path(stack.data_dir).rglob(f"*{image_id}*"))
    assert (await http.delete(f"/api/images/{image_id}", headers=auth(token))).status_code == 404


async def test_health_reports_redis_and_database(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "database": "ok", "relay": "ok"}


async def test_web_client_is_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    assert (await http.get("/static/vendor/socket.io.min.js")).status_code == 200


# -- limits, on a web process of their own with small caps ------------------------------------

@pytest.fixture(scope="module")
def small_limits(redis_url: str, databases: Databases,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("small")
    env = stack_env(redis_url, databases.new(), data_dir, 0, MAX_UPLOAD_MB="1",
                    MAX_IMAGE_PIXELS="1000000", RATE_LIMIT_UPLOADS_PER_MIN="3")
    web, url = start_web_process(env, data_dir / "web.log")
    try:
        yield url
    finally:
        stop(web)


async def test_over_size_cap_is_413_with_or_without_content_length(small_limits: str) -> None:
    async with httpx.AsyncClient(base_url=small_limits, timeout=30) as http:
        token = await new_token(http)
        big = b"\xff\xd8\xff\xe0" + b"\0" * (2 * 1024 * 1024)
        declared = await upload(http, token, big, filename="big.jpg")
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "file_too_large"

        boundary = "darkroomboundary"

        async def chunked() -> AsyncIterator[bytes]:
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   f"filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
            for _ in range(64):
                yield b"\xff" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        try:
            streamed = await http.post(
                "/api/images", content=chunked(),
                headers={**auth(token),
                         "Content-Type": f"multipart/form-data; boundary={boundary}"})
        except httpx.HTTPError:
            pytest.fail("the server should answer 413, not drop the connection")
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "file_too_large"


async def test_over_pixel_cap_is_413(small_limits: str) -> None:
    async with httpx.AsyncClient(base_url=small_limits, timeout=30) as http:
        token = await new_token(http)
        response = await upload(http, token, jpeg_bytes(2000, 1000))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "image_too_large"


async def test_cancelled_delayed_job_never_runs(stack: Stack, http: httpx.AsyncClient,
                                                sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(stack.url, token, sockets)
    response = await upload(http, token, jpeg_bytes(200, 100), fields={"delay": "2"})
    assert response.status_code == 202
    job = response.json()["job"]
    assert job["state"] == "queued" and job["run_at"] is not None
    cancelled = await http.post(f"/api/jobs/{job['id']}/cancel", headers=auth(token))
    assert cancelled.status_code == 202
    assert cancelled.json()["job"]["state"] == "cancelled"
    name, _ = await client.wait_final(job["id"])
    assert name == "job:cancelled"
    await asyncio.sleep(4)  # past run_at: the worker must skip the message
    assert "job:active" not in [n for n, _ in client.of_job(job["id"])]
    assert (await http.get(f"/api/jobs/{job['id']}", headers=auth(token))).json()["state"] \
        == "cancelled"
    again = await http.post(f"/api/jobs/{job['id']}/cancel", headers=auth(token))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    stranger = await new_token(http)
    assert (await http.post(f"/api/jobs/{job['id']}/cancel",
                            headers=auth(stranger))).status_code == 404


async def test_test_task_types_exist_only_when_enabled(stack: Stack,
                                                       http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    types = (await http.get("/api/tasks/types", headers=auth(token))).json()["types"]
    assert not [t for t in types if t["type"].startswith("test.")]
    refused = await http.post("/api/tasks", headers=auth(token),
                              json={"type": "test.crash", "payload": {}})
    assert refused.status_code == 400


async def test_body_without_its_closing_boundary_is_refused(stack: Stack,
                                                            http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    data = jpeg_bytes(300, 200)
    cut = (b"--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
           b"Content-Type: image/jpeg\r\n\r\n" + data[: len(data) // 2])
    response = await http.post("/api/images", content=cut, headers={
        **auth(token), "Content-Type": "multipart/form-data; boundary=bb"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the multipart body is incomplete"
    assert (await http.get("/api/images", headers=auth(token))).json()["items"] == []


async def test_parallel_uploads_of_the_same_bytes_make_one_job(stack: Stack,
                                                              http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    data = jpeg_bytes(420, 300, color=(7, 7, 70))
    responses = await asyncio.gather(*(upload(http, token, data) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 202]
    assert len({r.json()["image"]["id"] for r in responses}) == 1
    assert len({r.json()["job"]["id"] for r in responses}) == 1
    items = (await http.get("/api/images", headers=auth(token))).json()["items"]
    assert len(items) == 1


async def test_deleting_an_image_before_it_runs_cancels_its_job(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(stack.url, token, sockets)
    body = (await upload(http, token, jpeg_bytes(500, 300), fields={"delay": "1"})).json()
    assert (await http.delete(f"/api/images/{body['image']['id']}",
                              headers=auth(token))).status_code == 204
    name, final = await client.wait_final(body["job"]["id"])
    assert name == "job:cancelled"
    assert final["job"]["error"]["message"] == "the image was deleted before it was processed"


async def test_uploads_past_the_rate_limit_get_429(small_limits: str) -> None:
    async with httpx.AsyncClient(base_url=small_limits, timeout=30) as http:
        token, other = await new_token(http), await new_token(http)
        codes = [(await upload(http, token, jpeg_bytes(20, 20, color=(n, 0, 0)))).status_code
                 for n in range(3)]
        assert codes == [202, 202, 202]
        limited = await upload(http, token, jpeg_bytes(20, 20, color=(9, 9, 9)))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 61
        assert (await upload(http, other, jpeg_bytes(20, 20))).status_code == 202


async def test_batch_reports_each_file_and_its_progress(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(stack.url, token, sockets)
    files = [
        ("file", ("one.jpg", jpeg_bytes(300, 200, color=(1, 1, 1)), "image/jpeg")),
        ("file", ("notes.jpg", b"not an image at all", "image/jpeg")),
        ("file", ("two.jpg", jpeg_bytes(200, 300, color=(2, 2, 2)), "image/jpeg")),
    ]
    response = await http.post("/api/batches", headers=auth(token), files=files)
    assert response.status_code == 202, response.text
    body = response.json()
    batch_id = body["batch"]["id"]
    assert body["batch"]["total"] == 2 and body["batch"]["files"] == 3
    good, bad, other = body["items"]
    assert good["job"]["batch_id"] == batch_id and other["image"]["filename"] == "two.jpg"
    assert bad == {"error": {"code": "unsupported_type", "message": bad["error"]["message"]},
                   "filename": "notes.jpg"}
    _, final = await client.wait_for(
        lambda n, d: n == "batch:progress" and d["batch"]["id"] == batch_id
        and d["batch"]["done"] == 2)
    assert final["batch"]["progress"] == 100 and final["batch"]["failed"] == 0
    steps = [d["batch"]["progress"] for n, d in client.events
             if n == "batch:progress" and d["batch"]["id"] == batch_id]
    assert len(steps) >= 4 and steps[-1] == 100
    polled = (await http.get(f"/api/batches/{batch_id}", headers=auth(token))).json()
    assert polled["batch"]["done"] == 2
    assert {j["state"] for j in polled["jobs"]} == {"completed"}
    stranger = await new_token(http)
    assert (await http.get(f"/api/batches/{batch_id}",
                           headers=auth(stranger))).status_code == 404


async def test_admins_can_follow_every_job_and_users_cannot(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    user = await new_token(http)
    admin = await connected(stack.url, stack.env["ADMIN_TOKEN"], sockets)
    snooper = await connected(stack.url, await new_token(http), sockets)
    assert (await admin.sio.call("subscribe", {"scope": "all"}, timeout=10))["ok"] is True
    refused = await snooper.sio.call("subscribe", {"scope": "all"}, timeout=10)
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    body = (await upload(http, user, jpeg_bytes(120, 90, color=(3, 4, 5)))).json()
    name, _ = await admin.wait_final(body["job"]["id"])
    assert name == "job:completed"
    assert snooper.of_job(body["job"]["id"]) == []


async def test_batch_survives_an_oversize_file_and_refused_batches_cost_nothing(
        small_limits: str) -> None:
    async with httpx.AsyncClient(base_url=small_limits, timeout=30) as http:
        token = await new_token(http)
        big = b"\xff\xd8\xff\xe0" + b"\0" * (2 * 1024 * 1024)
        response = await http.post("/api/batches", headers=auth(token), files=[
            ("file", ("big.jpg", big, "image/jpeg")),
            ("file", ("ok.jpg", jpeg_bytes(30, 20), "image/jpeg"))])
        assert response.status_code == 202, response.text
        too_big, ok = response.json()["items"]
        assert too_big == {"error": {"code": "file_too_large",
                                     "message": too_big["error"]["message"]},
                           "filename": "big.jpg"}
        assert ok["job"]["state"] == "queued"

        other = await new_token(http)
        four = [("file", (f"{n}.jpg", jpeg_bytes(20, 20, color=(n, 1, 1)), "image/jpeg"))
                for n in range(4)]
        refused = await http.post("/api/batches", headers=auth(other), files=four)
        assert refused.status_code == 429
        assert (await upload(http, other, jpeg_bytes(20, 20))).status_code == 202


async def test_metrics_in_prometheus_text_format(http: httpx.AsyncClient) -> None:
    token = await new_token(http)
    body = (await upload(http, token, jpeg_bytes(90, 60, color=(6, 6, 6)))).json()
    await wait_final(http, token, body["job"]["id"])
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    completed = next(line for line in lines
                     if line.startswith('darkroom_jobs{queue="images",state="completed"}'))
    # Values are Prometheus floats (prometheus_client writes 1.0 for one).
    assert float(completed.split()[-1]) >= 1
    assert any(line.startswith("darkroom_workers ") and float(line.split()[-1]) >= 1
               for line in lines)
    assert "# TYPE darkroom_dead_letters gauge" in lines


@pytest.mark.one_database
async def test_quick_stages_are_folded_into_the_next_report_with_their_outputs(
        redis_url: str, databases: Databases, tmp_path: Path,
        sockets: list[LiveClient]) -> None:
    with running_stack(redis_url, databases.new(), tmp_path,
                       PROGRESS_INTERVAL_MS="60000", io_worker=False) as folded:
        async with httpx.AsyncClient(base_url=folded.url, timeout=30) as http:
            token = await new_token(http)
            # Closed before its stack stops (not left reconnecting to a stopped process).
            client = await connected(folded.url, token, sockets)
            try:
                body = (await upload(http, token, jpeg_bytes(640, 480))).json()
                job_id = body["job"]["id"]
                name, final = await client.wait_final(job_id)
            finally:
                await client.close()
            assert name == "job:completed"
            events = sorted(client.of_job(job_id), key=lambda e: e[1]["seq"])
            stages = [data["job"]["stage"] for n, data in events if n == "job:progress"]
            # Every stage followed job:active quickly; the last is stored with the end.
            assert stages == []
            assert [n for n, _ in events][-2:] == ["job:active", "job:completed"]
            await assert_each_change_once(http, token, job_id, events)
            # What the folded stages made was stored all the same.
            image = final["job"]["result"]["image"]
            assert image["thumbnail_url"] and image["preview_url"]
            assert image["metadata"]["width"] == 640
            polled = (await http.get(f"/api/images/{image['id']}", headers=auth(token))).json()
            assert polled["thumbnail_url"] and polled["metadata"]["format"] == "JPEG"
            # A decode known to be slow (a PNG over 4 MP decodes in full) is shown as it
            # starts, however soon after job:active.
            big = io.BytesIO()
            Image.linear_gradient("L").resize((2400, 2000)).convert("RGB").save(big, "PNG")
            client = await connected(folded.url, token, sockets)
            try:
                png = (await upload(http, token, big.getvalue(), filename="big.png",
                                    content_type="image/png")).json()["job"]["id"]
                name, _ = await client.wait_final(png)
            finally:
                await client.close()
            assert name == "job:completed"
            png_stages = [d["job"]["stage"] for n, d in sorted(
                client.of_job(png), key=lambda e: e[1]["seq"]) if n == "job:progress"]
            assert png_stages == ["decoding"], png_stages
            # Folded stages are still timed for /metrics.
            scrape = (await http.get("/metrics")).text
            for stage in ("decoding", "thumbnail", "preview", "metadata"):
                line = next(line for line in scrape.splitlines() if line.startswith(
                    "darkroom_job_stage_duration_seconds_count{")
                    and f'stage="{stage}"' in line)
                assert float(line.rsplit(" ", 1)[1]) >= 1, line
