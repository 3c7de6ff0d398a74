"""The web client at / in headless Chromium, against real web and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth, jpeg_bytes, wait_final
from tests.web.conftest import csp_violations, screenshot_path, wait_for_js, watch_csp

# Its subject is the pages in a browser, not the database (the API under them is tested on
# both): SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"


@pytest.fixture(scope="module")
def site(redis_url: str, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("site"),
                       ENABLE_TEST_TASKS="true") as running:
        yield running


@pytest.fixture
async def page(browser: Any, site: Stack) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    await watch_csp(context)
    opened = await context.new_page()
    problems: list[str] = []
    dialogs: list[str] = []
    # The browser itself logs refused requests (4xx answers) and, while the server is
    # down, refused connections; anything else logged as an error is the page's fault.
    opened.on("console", lambda msg: problems.append(msg.text)
              if msg.type == "error" and not _network_noise(msg.text) else None)
    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    opened.on("dialog", lambda dialog: dialogs.append(dialog.message))
    opened.problems, opened.dialogs = problems, dialogs
    await opened.goto(site.url)
    await opened.wait_for_selector("#conn[data-state=connected]", timeout=15_000)
    yield opened
    violations = await csp_violations(opened)
    await context.close()
    assert violations == [], f"Content-Security-Policy violations: {violations}"
    assert problems == [], f"console errors: {problems}"
    assert dialogs == [], f"a script ran: {dialogs}"


def _network_noise(text: str) -> bool:
    return "Failed to load resource" in text or "net::ERR_" in text


def _file(name: str, data: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


async def test_three_dropped_images_show_live_progress_and_thumbnails(page: Any) -> None:
    await page.set_input_files("#file-input", [
        _file("red.jpg", jpeg_bytes(1600, 1200, color=(200, 30, 30))),
        _file("green.jpg", jpeg_bytes(900, 1400, color=(30, 200, 30))),
        _file("blue.jpg", jpeg_bytes(640, 480, color=(30, 30, 200))),
    ])
    await wait_for_js(page,
        "document.querySelectorAll('li.card[data-state=completed]').length === 3",
        timeout=30_000)
    # Each card's thumbnail is a real 200x200 image, loaded from its signed URL.
    await wait_for_js(page,
        "[...document.querySelectorAll('li.card .card-thumb img')]"
        ".filter(i => i.complete && i.naturalWidth === 200).length === 3", timeout=15_000)
    await wait_for_js(page,
        "document.querySelectorAll('#gallery li.gallery-item img').length >= 3")
    titles = await page.eval_on_selector_all("li.card .card-title",
                                             "e => e.map(x => x.textContent)")
    assert sorted(titles) == ["blue.jpg", "green.jpg", "red.jpg"]
    bars = await page.eval_on_selector_all("li.card progress", "e => e.map(x => x.value)")
    assert bars == [100, 100, 100]
    await page.screenshot(path=screenshot_path("client-three-done"), full_page=True)


async def test_a_failing_upload_shows_its_reason(page: Any) -> None:
    whole = jpeg_bytes(800, 600)
    await page.set_input_files("#file-input", [
        _file("cut.jpg", whole[: len(whole) // 3]),
        _file("notes.jpg", b"plain text, not a photo", "text/plain"),
    ])
    await wait_for_js(page,
        "document.querySelectorAll('li.card .card-error:not([hidden])').length === 2",
        timeout=30_000)
    errors = await page.eval_on_selector_all("li.card .card-error:not([hidden])",
                                             "e => e.map(x => x.textContent)")
    assert any("damaged or incomplete" in text for text in errors), errors
    assert any("not an image type we accept" in text for text in errors), errors
    await page.screenshot(path=screenshot_path("client-failures"), full_page=True)


async def test_a_hostile_filename_is_shown_as_text(page: Any) -> None:
    await page.set_input_files("#file-input", [_file(XSS_NAME, jpeg_bytes(300, 200))])
    await page.wait_for_selector("li.card[data-state=completed]", timeout=30_000)
    assert await page.inner_text("li.card .card-title") == XSS_NAME
    assert await page.eval_on_selector_all("img[src='x']", "e => e.length") == 0
    await page.wait_for_selector("#gallery li.gallery-item")
    assert XSS_NAME in await page.inner_text("#gallery")


async def test_after_a_web_restart_the_page_reconnects_and_shows_the_true_end(
        page: Any, site: Stack) -> None:
    token = await page.evaluate("localStorage.getItem('darkroom.token')")
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        job = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "test.sleep", "payload": {"seconds": 4, "steps": 4}})).json()["job"]
    card = f"li.card[data-job-id='{job['id']}']"
    await page.wait_for_selector(f"{card}[data-state=active]", timeout=15_000)
    site.web.terminate()
    await page.wait_for_selector("#conn[data-state=reconnecting], #conn[data-state=offline]",
                                 timeout=15_000)
    await page.screenshot(path=screenshot_path("client-reconnecting"), full_page=True)
    site.restart_web()
    await page.wait_for_selector("#conn[data-state=connected]", timeout=30_000)
    await page.wait_for_selector(f"{card}[data-state=completed]", timeout=30_000)


async def test_admin_dashboard_retries_a_dead_letter_and_counts_move_live(
        browser: Any, site: Stack) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    await watch_csp(context)
    admin = await context.new_page()
    problems: list[str] = []
    admin.on("console", lambda msg: problems.append(msg.text)
             if msg.type == "error" and not _network_noise(msg.text) else None)
    admin.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        await admin.goto(f"{site.url}/admin")
        await admin.fill("[data-testid=token-input]", site.env["ADMIN_TOKEN"])
        await admin.press("[data-testid=token-input]", "Enter")
        await admin.wait_for_selector("[data-testid=conn][data-state=connected]",
                                      timeout=15_000)
        completed = ("[data-testid=queue-row][data-queue=default] "
                     "[data-state=completed]")
        await admin.wait_for_selector(completed, timeout=15_000)
        before = int(await admin.inner_text(completed))

        async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
            token = (await http.post("/api/session")).json()["token"]
            job = (await http.post("/api/tasks", headers=auth(token), json={
                "type": "test.flaky", "payload": {"fail_runs": 1, "error": "permanent"}},
            )).json()["job"]
        item = f"[data-testid=dlq-item][data-job-id='{job['id']}']"
        await admin.wait_for_selector(item, timeout=20_000)
        await admin.screenshot(path=screenshot_path("admin-dead-letter"), full_page=True)
        await admin.click(f"{item} [data-testid=dlq-retry]")
        await admin.wait_for_selector(item, state="detached", timeout=20_000)
        await wait_for_js(admin,
            "([sel, n]) => Number(document.querySelector(sel)?.textContent) > n",
            arg=[completed, before], timeout=20_000)
        await admin.screenshot(path=screenshot_path("admin-after-retry"), full_page=True)
        assert problems == [], problems
        assert await csp_violations(admin) == []
    finally:
        await context.close()


async def test_total_bar_detail_view_and_delete(page: Any, site: Stack) -> None:
    await page.set_input_files("#file-input", [
        _file("first.jpg", jpeg_bytes(1200, 800, color=(90, 20, 20))),
        _file("second.jpg", jpeg_bytes(800, 1200, color=(20, 90, 20))),
    ])
    await wait_for_js(page,
        "document.querySelector('[data-testid=total-progress]')?.value === 100",
        timeout=30_000)
    assert "2 of 2 done" in await page.inner_text("[data-testid=total-text]")
    item = "#gallery [data-testid=gallery-item]"
    await wait_for_js(page, f"document.querySelectorAll('{item}').length >= 2")
    first = await page.get_attribute(item, "data-image-id")
    await page.click(f"{item}[data-image-id='{first}'] button, {item}[data-image-id='{first}'] a")
    dialog = "[data-testid=image-detail]"
    await page.wait_for_selector(f"{dialog}[open]")
    await wait_for_js(page,
        f"(() => {{ const i = document.querySelector('{dialog} img');"
        " return i && i.complete && i.naturalWidth > 0; })()")
    meta = await page.inner_text(f"{dialog} [data-testid=image-meta]")
    assert "JPEG" in meta
    href = await page.get_attribute("[data-testid=download-original]", "href")
    async with httpx.AsyncClient(base_url=site.url) as http:
        assert (await http.get(href)).status_code == 200
    await page.screenshot(path=screenshot_path("client-detail"), full_page=True)
    await page.click("[data-testid=image-delete]")
    await page.click("[data-testid=image-delete-confirm]")
    await page.wait_for_selector(f"{item}[data-image-id='{first}']", state="detached")
    token = await page.evaluate("localStorage.getItem('darkroom.token')")
    async with httpx.AsyncClient(base_url=site.url) as http:
        assert (await http.get(f"/api/images/{first}", headers=auth(token))).status_code == 404


async def test_files_dropped_on_the_page_are_uploaded(page: Any) -> None:
    await page.evaluate("""async () => {
        const canvas = document.createElement('canvas');
        canvas.width = 320; canvas.height = 240;
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#3a7'; ctx.fillRect(0, 0, 320, 240);
        const jpeg = await new Promise((done) => canvas.toBlob(done, 'image/jpeg', 0.9));
        const transfer = new DataTransfer();
        transfer.items.add(new File([jpeg], 'dropped.jpg', {type: 'image/jpeg'}));
        const zone = document.querySelector('#dropzone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                    dataTransfer: transfer}));
        }
    }""")
    await page.wait_for_selector("li.card[data-state=completed]", timeout=30_000)
    assert await page.inner_text("li.card .card-title") == "dropped.jpg"


async def test_admin_pages_show_hostile_text_as_text(browser: Any, site: Stack) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        job = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "webhook.deliver",
            "payload": {"url": "http://127.0.0.1:9/x", "event": hostile}})).json()["job"]
        delayed = (await http.post("/api/tasks", headers=auth(token), json={
            "type": "test.sleep", "payload": {"seconds": 0}, "delay": 600})).json()["job"]
        listed = (await http.get("/api/jobs?state=delayed",
                                 headers=auth(site.env["ADMIN_TOKEN"]))).json()["items"]
        assert delayed["id"] in [j["id"] for j in listed]
    context = await browser.new_context()
    admin = await context.new_page()
    dialogs: list[str] = []
    admin.on("dialog", lambda dialog: dialogs.append(dialog.message))
    try:
        await admin.goto(f"{site.url}/admin")
        await admin.fill("[data-testid=token-input]", site.env["ADMIN_TOKEN"])
        await admin.press("[data-testid=token-input]", "Enter")
        row = f"[data-testid=job-row][data-job-id='{job['id']}']"
        await admin.wait_for_selector(row, timeout=20_000)
        await admin.click(row)
        await admin.wait_for_selector("[data-testid=job-detail]")
        await wait_for_js(admin,
            f"document.querySelector('[data-testid=job-detail]').textContent"
            f".includes({hostile!r})")
        assert await admin.eval_on_selector_all("img[src='x']", "e => e.length") == 0
        assert dialogs == []
    finally:
        await context.close()


async def test_web_stopped_mid_upload_then_the_page_shows_the_true_end(
        browser: Any, site: Stack) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(site.url)
        await page.wait_for_selector("#conn[data-state=connected]", timeout=15_000)
        # A slow uplink (≈100 kB/s), so the web process can be stopped while bytes flow.
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 20, "downloadThroughput": -1,
            "uploadThroughput": 100_000})
        buf = io.BytesIO()  # noise does not compress: about 1 MB of real JPEG
        Image.frombytes("RGB", (700, 500), os.urandom(700 * 500 * 3)).save(buf, "JPEG",
                                                                         quality=95)
        await page.set_input_files("#file-input", [_file("slow.jpg", buf.getvalue())])
        await page.wait_for_selector("li.card[data-state=uploading]", timeout=10_000)
        await asyncio.sleep(1.5)
        # Stopped hard: a graceful stop would let the upload in flight finish first.
        site.web.kill()
        await page.wait_for_selector("#conn[data-state=reconnecting], #conn[data-state=offline]",
                                     timeout=15_000)
        await page.wait_for_selector("li.card[data-state=upload-failed]", timeout=30_000)
        await page.screenshot(path=screenshot_path("client-upload-interrupted"), full_page=True)
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        await asyncio.to_thread(site.restart_web)
        await page.wait_for_selector("#conn[data-state=connected]", timeout=30_000)
        token = await page.evaluate("localStorage.getItem('darkroom.token')")
        async with httpx.AsyncClient(base_url=site.url) as http:
            images = (await http.get("/api/images", headers=auth(token))).json()["items"]
        assert images == [], "the interrupted upload left nothing behind"
        await page.click("li.card[data-state=upload-failed] button:has-text('Retry upload')")
        await page.wait_for_selector("li.card[data-state=completed]", timeout=30_000)
    finally:
        await context.close()


@pytest.mark.parametrize("path", ["/", "/admin"])
async def test_pages_work_under_their_content_security_policy(
        browser: Any, site: Stack, path: str) -> None:
    context = await browser.new_context()
    await watch_csp(context)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        response = await page.goto(f"{site.url}{path}")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        if path == "/admin":
            await page.fill("[data-testid=token-input]", site.env["ADMIN_TOKEN"])
            await page.press("[data-testid=token-input]", "Enter")
            await page.wait_for_selector("[data-testid=queue-row]", timeout=15_000)
        await page.wait_for_selector("#conn[data-state=connected]", timeout=15_000)
        assert await csp_violations(page) == [], "the page itself needs nothing the policy bans"
        assert problems == []
        # The policy is in force: an injected inline script and handler do not run.
        ran = await page.evaluate("""async () => {
            window.__ran = false;
            const s = document.createElement('script');
            s.textContent = 'window.__ran = true';
            document.body.append(s);
            const img = document.createElement('img');
            img.setAttribute('onerror', 'window.__ran = true');
            const failed = new Promise((done) => img.addEventListener('error', done));
            img.src = '/static/no-such-image.png';
            document.body.append(img);
            await failed;  // listeners run in order: the inline handler had its turn
            return window.__ran;
        }""")
        assert ran is False
        assert any(v.startswith("script-src") for v in await csp_violations(page))
    finally:
        await context.close()


# ---------- the dashboard's search ----------

ROWS_ARE = """([selector, want]) => JSON.stringify(
    [...document.querySelectorAll(selector)].map((e) => e.dataset.jobId).sort())
    === JSON.stringify(want)"""


@contextlib.asynccontextmanager
async def _dashboard(browser: Any, site: Stack, path: str = "/admin") -> AsyncIterator[Any]:
    """The admin page at ``path``, signed in; no console error or CSP violation by the end."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    await watch_csp(context)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not _network_noise(msg.text) else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        await page.goto(f"{site.url}{path}")
        await page.fill("[data-testid=token-input]", site.env["ADMIN_TOKEN"])
        await page.press("[data-testid=token-input]", "Enter")
        await page.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)
        yield page
        assert problems == [], problems
        assert await csp_violations(page) == []
    finally:
        await context.close()


async def _rows_are(page: Any, selector: str, ids: list[str]) -> None:
    await wait_for_js(page, ROWS_ARE, arg=[selector, sorted(ids)], timeout=20_000)


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


async def _task(http: httpx.AsyncClient, token: str, payload: dict[str, Any],
                task_type: str = "test.flaky", **options: Any) -> str:
    response = await http.post("/api/tasks", headers=auth(token),
                               json={"type": task_type, "payload": payload, **options})
    assert response.status_code == 202, response.text
    return str(response.json()["job"]["id"])


async def _dead_letters(http: httpx.AsyncClient, site: Stack, query: str) -> set[str]:
    response = await http.get(f"/api/dlq?limit=200&{query}",
                              headers=auth(site.env["ADMIN_TOKEN"]))
    assert response.status_code == 200, response.text
    return {item["job"]["id"] for item in response.json()["items"]}


async def test_admin_job_search_keeps_its_filters_in_the_url(browser: Any, site: Stack) -> None:
    """Jobs found by state and error text, by short id, live, after a reload; a refused
    filter shows the server's own message."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        sleeps = [await _task(http, token, {"seconds": 0}, "test.sleep") for _ in range(2)]
        permanent = await _task(http, token, {"fail_runs": 1, "error": "permanent"})
        transient = await _task(http, token, {"fail_runs": 1}, max_attempts=1)
        for job_id in [*sleeps, permanent, transient]:
            await wait_final(http, token, job_id)
        refused = await http.get("/api/jobs?sha256=xyz", headers=auth(site.env["ADMIN_TOKEN"]))
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_filter"
        message = refused.json()["error"]["message"]

        rows = "[data-testid=job-row]"
        async with _dashboard(browser, site, "/admin?state=failed&error=injected") as admin:
            # A copied link opens the same search: the form is filled from the URL.
            assert await admin.input_value("[data-testid=jobs-state]") == "failed"
            assert await admin.input_value("[data-testid=jobs-error]") == "injected"
            await _rows_are(admin, rows, [permanent, transient])
            assert await admin.inner_text("#jobs-heading") == "Jobs"
            await admin.screenshot(path=screenshot_path("admin-search"), full_page=True)

            # Typing narrows it; the URL follows.
            await admin.fill("[data-testid=jobs-error]", "injected transient")
            await _rows_are(admin, rows, [transient])
            assert _query(admin) == {"state": ["failed"], "error": ["injected transient"]}
            # A new match (checked on the pushed job itself) joins live.
            later = await _task(http, token, {"fail_runs": 1}, max_attempts=1)
            await _rows_are(admin, rows, [transient, later])

            # Short ids: the random end, in monospace, the whole id as its title.
            await admin.click("[data-testid=jobs-clear]")
            await wait_for_js(admin, "location.search === ''")
            await wait_for_js(admin, f"document.querySelectorAll('{rows}').length >= 5")
            short = sleeps[0][-8:]
            tag = f"{rows}[data-job-id='{sleeps[0]}'] .row-id"
            assert await admin.inner_text(f"{tag} [aria-hidden=true]") == short
            assert await admin.get_attribute(tag, "title") == sleeps[0]
            assert sleeps[0][:8] == sleeps[1][:8] and short != sleeps[1][-8:]
            await admin.fill("[data-testid=jobs-id]", short)
            await _rows_are(admin, rows, [sleeps[0]])
            assert _query(admin) == {"id": [short]}

            # A reload keeps the search; a row still opens the job's details.
            await admin.reload()
            await admin.wait_for_selector("[data-testid=conn][data-state=connected]",
                                          timeout=15_000)
            assert await admin.input_value("[data-testid=jobs-id]") == short
            await _rows_are(admin, rows, [sleeps[0]])
            await admin.click(f"{rows}[data-job-id='{sleeps[0]}']")
            await admin.wait_for_selector("[data-testid=job-detail][open]")
            assert short in await admin.inner_text("#detail-title")
            await admin.click("#detail-close")

            # A filter the server refuses: its message by the form, the field marked.
            await admin.click("#jobs-more-filters summary")
            await admin.fill("[data-testid=jobs-sha256]", "xyz")
            await admin.press("[data-testid=jobs-sha256]", "Enter")
            error = "[data-testid=jobs-filter-error]"
            await wait_for_js(admin, f"document.querySelector('{error}').textContent === "
                                     f"{message!r}")
            assert await admin.get_attribute("[data-testid=jobs-sha256]", "aria-invalid") == "true"
            assert await admin.eval_on_selector_all(rows, "e => e.length") == 0
            assert _query(admin) == {"id": [short], "sha256": ["xyz"]}
            # A link with a filter among "More filters" opens them by itself.
            await admin.reload()
            await admin.wait_for_selector("#jobs-more-filters[open]", timeout=15_000)
            await wait_for_js(admin, f"document.querySelector('{error}').textContent === "
                                     f"{message!r}")


async def test_admin_dead_letters_retry_and_delete_all_that_match(
        browser: Any, site: Stack) -> None:
    """"Delete all that match" and "Retry all that match" act on the search's dead letters
    only, after a confirmation that names the search."""
    # This test's dead letters only: the jobs are made from the next whole second on (the
    # filter takes whole seconds, and the tests before this one used the same server).
    now = datetime.now(UTC)
    since = now.replace(microsecond=0) + timedelta(seconds=1)
    await asyncio.sleep((since - now).total_seconds())
    since_q = f"from={since.isoformat().replace('+00:00', 'Z')}"
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        token = (await http.post("/api/session")).json()["token"]
        permanent = [await _task(http, token, {"fail_runs": 1, "error": "permanent"})
                     for _ in range(2)]
        transient = [await _task(http, token, {"fail_runs": 1}, max_attempts=1)
                     for _ in range(2)]
        for job_id in [*permanent, *transient]:
            await wait_final(http, token, job_id)
        assert await _dead_letters(http, site, since_q) == {*permanent, *transient}

        items = "[data-testid=dlq-item]"
        async with _dashboard(browser, site, f"/admin?dlq.{since_q}&dlq.error=transient") as admin:
            await _rows_are(admin, items, transient)
            assert await admin.is_visible("[data-testid=dlq-from]"), "More filters opened"
            retry_all, delete_all = "[data-testid=dlq-retry-all]", "[data-testid=dlq-delete-all]"
            assert await admin.inner_text(delete_all) == "Delete all that match"
            assert await admin.inner_text(retry_all) == "Retry all that match"

            await admin.click(delete_all)
            await admin.wait_for_selector("#confirm[open]")
            text = await admin.inner_text("#confirm-text")
            assert text.startswith('Delete every dead letter with error containing "transient" '
                                   "and created at or after ")
            await admin.click("[data-testid=confirm-yes]")
            await _rows_are(admin, items, [])
            await admin.wait_for_selector("[data-testid=dlq-empty]:has-text('match this search')")
            assert await _dead_letters(http, site, since_q) == set(permanent)

            # Another search in the same form: one dead letter by its short id.
            await admin.fill("[data-testid=dlq-error]", "")
            await admin.fill("[data-testid=dlq-id]", permanent[0][-8:])
            await _rows_are(admin, items, [permanent[0]])
            assert _query(admin) == {"dlq.from": [since.isoformat().replace("+00:00", ".000Z")],
                                     "dlq.id": [permanent[0][-8:]]}
            await admin.click(retry_all)
            await admin.wait_for_selector("#confirm[open]")
            assert permanent[0][-8:] in await admin.inner_text("#confirm-text")
            await admin.click("[data-testid=confirm-yes]")
            await _rows_are(admin, items, [])
            # The list is loaded again after the retry ("Loading…"), then the outcome shows.
            await admin.wait_for_selector("#dlq-status:has-text('Retried 1 job.')")
            assert (await wait_final(http, token, permanent[0]))["state"] == "completed"
            assert await _dead_letters(http, site, since_q) == {permanent[1]}

            # Without a filter the buttons act on everything again, and say so.
            await admin.click("[data-testid=dlq-filter-clear]")
            await wait_for_js(admin, "!location.search.includes('dlq.')")
            await admin.wait_for_selector(f"{items}[data-job-id='{permanent[1]}']")
            assert await admin.inner_text(delete_all) == "Delete all"
            assert await admin.inner_text(retry_all) == "Retry all"
            shown = await admin.eval_on_selector_all(items, "e => e.map(x => x.dataset.jobId)")
            assert not {permanent[0], *transient} & set(shown)
