"""A job's page (/admin/jobs/{id}) in headless Chromium, against real web and worker
processes: a finished image job with its worker, stages, events and image; a retried job's
two attempts, back-off and webhook delivery; a running job followed live; the actions; and
what a bad id, an unknown one or a missing token shows. No console error, no CSP violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth, jpeg_bytes, upload, wait_final
from tests.web.conftest import csp_violations, screenshot_path, wait_for_js, watch_csp

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

ADMIN_TOKEN_KEY = "darkroom.adminToken"
# A duration as the page writes it: "850 ms", "1.2 s", "2 min 5 s".
DURATION = re.compile(r"^\d+(\.\d)? (ms|s)$|^\d+ min( \d+ s)?$")


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    """A webhook receiver on 127.0.0.1 that answers 200 to every delivery; its URL."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(redis_url: str, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("job-page"),
                       ENABLE_TEST_TASKS="true", WEBHOOK_ALLOW_PRIVATE="true") as running:
        yield running


def _network_noise(text: str) -> bool:
    return "Failed to load resource" in text or "net::ERR_" in text


@contextlib.asynccontextmanager
async def _job_page(browser: Any, site: Stack, job_id: str, *,
                    signed_in: bool = True) -> AsyncIterator[Any]:
    """The page of ``job_id`` with the dashboard's admin token in this browser (as after
    signing in at /admin); no console error, CSP violation or script dialog by the end."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    await watch_csp(context)
    if signed_in:
        await context.add_init_script(
            f"localStorage.setItem({ADMIN_TOKEN_KEY!r}, {json.dumps(site.env['ADMIN_TOKEN'])})")
    page = await context.new_page()
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not _network_noise(msg.text) else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.api_calls = []
    page.on("request", lambda request: page.api_calls.append(request.url)
            if "/api/" in request.url else None)
    try:
        response = await page.goto(f"{site.url}/admin/jobs/{job_id}")
        assert response is not None and response.status == 200
        yield page
        assert problems == [], f"console errors: {problems}"
        assert await csp_violations(page) == [], "Content-Security-Policy violations"
        assert dialogs == [], f"a script ran: {dialogs}"
    finally:
        await context.close()


async def _task(http: httpx.AsyncClient, token: str, payload: dict[str, Any],
                task_type: str = "test.flaky", **options: Any) -> str:
    response = await http.post("/api/tasks", headers=auth(token),
                               json={"type": task_type, "payload": payload, **options})
    assert response.status_code == 202, response.text
    return str(response.json()["job"]["id"])


async def _texts(page: Any, selector: str) -> list[str]:
    return list(await page.eval_on_selector_all(selector, "e => e.map(x => x.textContent)"))


async def _state_is(page: Any, state: str, timeout: float = 30_000) -> None:
    await wait_for_js(page, "(s) => document.querySelector('[data-testid=job-state]')"
                            "?.textContent === s", arg=state, timeout=timeout)


async def _confirm(page: Any, button: str) -> None:
    await page.click(f"[data-testid={button}]")
    await page.wait_for_selector("[data-testid=job-confirm][open]")
    await page.click("[data-testid=confirm-yes]")


async def test_an_image_jobs_page_shows_its_attempt_stages_events_and_image(
        browser: Any, site: Stack) -> None:
    """(a) A finished upload: one attempt with its worker split out, its stages with
    durations, the events in seq order, the thumbnail and preview loaded; the dashboard's
    detail links here; Delete image asks, then removes the image."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        posted = (await upload(http, token, jpeg_bytes(1200, 800), filename="harbour.jpg")).json()
        job_id, image_id = posted["job"]["id"], posted["image"]["id"]
        assert (await wait_final(http, token, job_id))["state"] == "completed"

    async with _job_page(browser, site, job_id) as page:
        await _state_is(page, "completed")
        assert await page.get_attribute("[data-testid=job-id]", "class") == "mono"
        assert await page.inner_text("[data-testid=job-id]") == job_id
        title = await page.inner_text("[data-testid=job-title]")
        assert job_id[-8:] in title and "image.process" in title
        assert await page.eval_on_selector("[data-testid=job-progress]", "e => e.value") == 100
        assert (await page.inner_text("[data-testid=job-attempts]")).startswith("1 of ")
        await page.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)

        attempts = page.locator("[data-testid=attempt]")
        assert await attempts.count() == 1
        attempt = attempts.first
        assert await attempt.get_attribute("data-outcome") == "completed"
        host = await attempt.locator("[data-testid=attempt-host]").inner_text()
        pid = await attempt.locator("[data-testid=attempt-pid]").inner_text()
        thread = await attempt.locator("[data-testid=attempt-thread]").inner_text()
        assert host and host != "—" and pid.isdigit() and thread and thread != "—"
        assert DURATION.match(await attempt.locator("[data-testid=attempt-seconds]").inner_text())
        stages = await attempt.locator("[data-testid=attempt-stage]").evaluate_all(
            "rows => rows.map(r => [r.dataset.stage,"
            " r.querySelector('[data-testid=stage-seconds]').textContent])")
        assert {"stored", "thumbnail", "preview"} <= {name for name, _ in stages}, stages
        assert all(DURATION.match(took) for _, took in stages), stages
        assert await page.locator("[data-testid=attempt-backoff]").count() == 0

        events = await page.eval_on_selector_all(
            "[data-testid=job-event]",
            "rows => rows.map(r => [Number(r.dataset.seq), r.dataset.name])")
        seqs = [seq for seq, _ in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        names = [name for _, name in events]
        assert names[0] == "job:queued" and names[-1] == "job:completed"
        assert "job:active" in names and "job:progress" in names
        worker_cells = await _texts(page, "[data-testid=job-event][data-name='job:active'] td.mono")
        assert worker_cells == [f"{host}:{pid}:{thread}"]

        for which in ("thumbnail", "preview"):
            await wait_for_js(page,
                f"(() => {{ const i = document.querySelector('[data-testid=job-{which}]');"
                " return i && i.complete && i.naturalWidth > 0; })()", timeout=15_000)
        assert await page.is_visible("[data-testid=deliveries-empty]")
        assert '"image"' in await page.inner_text("[data-testid=job-result]")
        assert await page.is_hidden("[data-testid=job-retry]")
        assert await page.is_hidden("[data-testid=job-cancel]")
        assert await page.is_hidden("[data-testid=job-error]")
        await page.screenshot(path=screenshot_path("admin-job-image"), full_page=True)

        # The image goes only once confirmed; the page then says so.
        await page.click("[data-testid=job-delete-image]")
        await page.wait_for_selector("[data-testid=job-confirm][open]")
        await page.click("[data-testid=confirm-no]")
        await page.wait_for_selector("[data-testid=job-confirm]:not([open])", state="attached")
        await _confirm(page, "job-delete-image")
        await wait_for_js(page, "document.querySelector('[data-testid=job-action-status]')"
                                ".textContent === 'Image deleted.'")
        await page.wait_for_selector("[data-testid=job-delete-image]", state="hidden")
        await page.wait_for_selector("[data-testid=job-thumbnail]", state="hidden")
        assert "The image was deleted." in await page.inner_text("[data-testid=job-image]")
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        gone = await http.get(f"/api/images/{image_id}", headers=auth(token))
        assert gone.status_code == 404


async def test_the_dashboards_detail_links_to_the_jobs_page(browser: Any, site: Stack) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        job_id = await _task(http, token, {"seconds": 0}, "test.sleep")
        await wait_final(http, token, job_id)
    async with _job_page(browser, site, job_id) as page:
        await _state_is(page, "completed")
        await page.click("[data-testid=back-link]")
        row = f"[data-testid=job-row][data-job-id='{job_id}']"
        await page.wait_for_selector(row, timeout=20_000)
        await page.click(row)
        link = "[data-testid=job-detail] [data-testid=detail-page-link]"
        await page.wait_for_selector(link)
        assert await page.get_attribute(link, "href") == f"/admin/jobs/{job_id}"
        await page.click(link)
        await page.wait_for_url(f"{site.url}/admin/jobs/{job_id}")
        await _state_is(page, "completed")


async def test_a_retried_jobs_page_shows_both_attempts_the_backoff_and_its_delivery(
        browser: Any, site: Stack, receiver: str) -> None:
    """(b) test.flaky failing once: attempt 1 retrying with its traceback, the wait before
    attempt 2, attempt 2 completed; the webhook delivery of its end with the receiver's
    status. The screenshot is docs/admin-job.png."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        hooked = await http.post("/api/webhooks", headers=auth(token), json={"url": receiver})
        assert hooked.status_code == 201, hooked.text
        job_id = await _task(http, token, {"fail_runs": 1}, max_attempts=3)
        assert (await wait_final(http, token, job_id))["state"] == "completed"
        # The delivery of job.completed runs on the I/O worker after the job's end.
        for _ in range(200):
            timeline = (await http.get(f"/api/jobs/{job_id}/timeline",
                                       headers=auth(site.env["ADMIN_TOKEN"]))).json()
            if [d["state"] for d in timeline["deliveries"]] == ["completed"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no delivery: {timeline['deliveries']}")

    async with _job_page(browser, site, job_id) as page:
        await _state_is(page, "completed")
        assert await page.inner_text("[data-testid=job-attempts]") == "2 of 3"
        attempts = page.locator("[data-testid=attempt]")
        assert await attempts.count() == 2
        first, second = attempts.nth(0), attempts.nth(1)
        assert await first.get_attribute("data-outcome") == "retrying"
        assert await second.get_attribute("data-outcome") == "completed"
        assert "TransientError" in await first.locator("[data-testid=attempt-error]").inner_text()
        traceback = first.locator("[data-testid=attempt-traceback]")
        assert not await traceback.locator("pre").is_visible(), "collapsed at first"
        await traceback.locator("summary").click()
        assert "injected transient fault on run 1" in await traceback.locator("pre").inner_text()
        assert await second.locator("[data-testid=attempt-traceback]").count() == 0
        backoffs = await _texts(page, "[data-testid=attempt-backoff]")
        assert len(backoffs) == 1 and backoffs[0].endswith("before attempt 2"), backoffs
        assert re.match(r"^Waited \d", backoffs[0]), backoffs
        # The wait sits between the two cards.
        order = await page.eval_on_selector_all(
            "#attempts > li", "items => items.map(i => i.dataset.testid)")
        assert order == ["attempt", "attempt-backoff", "attempt"]
        names = await page.eval_on_selector_all(
            "[data-testid=job-event]", "rows => rows.map(r => r.dataset.name)")
        assert names.count("job:active") == 2 and "job:retrying" in names

        deliveries = page.locator("[data-testid=delivery]")
        assert await deliveries.count() == 1
        row = await deliveries.first.inner_text()
        assert receiver in row and "job.completed" in row
        assert await deliveries.first.locator("[data-testid=delivery-status]").inner_text() == "200"
        assert await page.is_hidden("[data-testid=deliveries-empty]")
        assert await page.is_hidden("[data-testid=job-image]"), "no image for a test task"
        assert await page.is_hidden("[data-testid=job-error]"), "the retry that failed is history"
        assert '"fail_runs": 1' in await page.inner_text("[data-testid=job-payload]")
        await page.screenshot(path=screenshot_path("admin-job"), full_page=True)


async def test_a_running_job_is_followed_live_to_its_end(browser: Any, site: Stack) -> None:
    """(c) The page of a test.sleep job opened while it runs moves to completed, 100 %,
    without a reload: the header from the pushes, attempts and events from the timeline
    loaded again."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        # Long enough that the page is open before it ends, even on a machine the rest of
        # the suite keeps busy (3 s was not, once, under coverage).
        job_id = await _task(http, token, {"seconds": 8, "steps": 4}, "test.sleep")
    async with _job_page(browser, site, job_id) as page:
        await page.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)
        await page.evaluate("window.__samePage = true")
        seen = await page.inner_text("[data-testid=job-state]")
        assert seen in ("queued", "active"), seen
        assert await page.eval_on_selector("[data-testid=job-progress]", "e => e.value") < 100
        await _state_is(page, "completed", timeout=30_000)
        assert await page.evaluate("window.__samePage === true"), "the page was reloaded"
        assert await page.eval_on_selector("[data-testid=job-progress]", "e => e.value") == 100
        await wait_for_js(page, "document.querySelector('[data-testid=attempt]')"
                                "?.dataset.outcome === 'completed'", timeout=10_000)
        await wait_for_js(page, "[...document.querySelectorAll('[data-testid=job-event]')]"
                                ".some(r => r.dataset.name === 'job:completed')", timeout=10_000)
        progress = await page.eval_on_selector_all(
            "[data-testid=job-event][data-name='job:progress']", "rows => rows.length")
        assert progress >= 3
        assert await page.is_hidden("[data-testid=job-cancel]")


async def test_cancel_from_the_page_ends_a_running_job(browser: Any, site: Stack) -> None:
    """(d) Cancel, confirmed, ends a long test.sleep job; the page shows it at once."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        job_id = await _task(http, token, {"seconds": 60, "steps": 60}, "test.sleep")
        async with _job_page(browser, site, job_id) as page:
            await _state_is(page, "active")
            assert await page.is_hidden("[data-testid=job-retry]")
            await _confirm(page, "job-cancel")
            await _state_is(page, "cancelled", timeout=10_000)
            assert await page.inner_text("[data-testid=job-action-status]") == "Cancelled."
            await page.wait_for_selector("[data-testid=job-cancel]", state="hidden")
            job = (await http.get(f"/api/jobs/{job_id}", headers=auth(token))).json()
            assert job["state"] == "cancelled"
            await wait_for_js(page, "[...document.querySelectorAll('[data-testid=job-event]')]"
                                    ".some(r => r.dataset.name === 'job:cancelled')")


async def test_retry_from_the_page_runs_a_failed_job_again(browser: Any, site: Stack) -> None:
    """A failed job shows its final error and traceback and a Retry button; retried, it
    runs again and completes, live."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        job_id = await _task(http, token, {"fail_runs": 1}, max_attempts=1)
        assert (await wait_final(http, token, job_id))["state"] == "failed"
    async with _job_page(browser, site, job_id) as page:
        await _state_is(page, "failed")
        assert "TransientError" in await page.inner_text("[data-testid=job-error]")
        assert "injected transient fault on run 1" in await page.inner_text(
            "[data-testid=job-traceback]")
        assert await page.is_hidden("[data-testid=job-cancel]")
        await page.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)
        await _confirm(page, "job-retry")
        await _state_is(page, "completed", timeout=30_000)
        # The pushes may bring the end before the retry's own answer reaches the page.
        await wait_for_js(page, "document.querySelector('[data-testid=job-action-status]')"
                                "?.textContent === 'Queued again.'", timeout=10_000)
        await page.wait_for_selector("[data-testid=job-retry]", state="hidden")
        await wait_for_js(page, "document.querySelectorAll('[data-testid=attempt]').length === 2"
                                " && document.querySelectorAll('[data-testid=attempt]')[1]"
                                ".dataset.outcome === 'completed'", timeout=10_000)


@pytest.mark.parametrize(("path", "message"), [
    ("not-a-job", "“not-a-job” is not a job id"),
    ("%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", "“<img src=x onerror=alert(1)>” is not a job id"),
    (f"{'A' * 32}", "is not a job id"),
    (f"{'0' * 32}", f"No job has the id {'0' * 32}."),
])
async def test_a_bad_or_unknown_id_says_so(browser: Any, site: Stack, path: str,
                                           message: str) -> None:
    """(e) A malformed id is refused before any request; an unknown one after the 404."""
    async with _job_page(browser, site, path) as page:
        await page.wait_for_selector("[data-testid=job-notice]:not([hidden])")
        assert message in await page.inner_text("[data-testid=job-notice]")
        assert await page.is_hidden("#job")
        assert await page.eval_on_selector_all("img[src='x']", "e => e.length") == 0
        if "not a job id" in message:
            assert page.api_calls == []
        assert await page.get_attribute("[data-testid=conn]", "data-state") == "offline"


async def test_without_a_token_the_page_sends_you_to_sign_in(browser: Any, site: Stack) -> None:
    async with _job_page(browser, site, "0" * 32, signed_in=False) as page:
        await page.wait_for_selector("[data-testid=job-sign-in]:not([hidden])")
        assert await page.get_attribute("[data-testid=sign-in-link]", "href") == "/admin"
        assert page.api_calls == []


async def test_the_page_is_served_like_the_dashboard(site: Stack) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        page = await http.get(f"/admin/jobs/{'a' * 32}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert "/static/js/admin-job-page.js" in page.text
        # The path is not echoed into the page: it is the same file for any id.
        other = await http.get("/admin/jobs/%3Cscript%3E")
        assert other.status_code == 200 and other.text == page.text
        assert (await http.get("/admin/jobs/a/b")).status_code == 404
