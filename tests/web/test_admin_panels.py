"""The dashboard's Workers panel and Charts in headless Chromium, against a real stack.

Workers: the stack's own processes (image and I/O pools) alive with their threads, a job
seen on a busy thread and then gone, jobs done growing, all by push; a process that went
silent shown dead until its report is gone. Charts: points seeded into the stack's Redis
list (the service makes one a minute, too slow for a test) drawn, the window switched to
24 h in the URL, a new point pushed. No console error, no CSP violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
import redis

from server.core import keys
from server.core.wire import responses as wire
from tests.conftest import Databases, Stack, running_stack
from tests.factories import auth
from tests.web.conftest import csp_violations, screenshot_path, wait_for_js, watch_csp

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Workers report every quarter of this: every second, so a three-second job is seen.
HEARTBEAT_TIMEOUT_MS = 4000


@pytest.fixture(scope="module")
def site(redis_url: str, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("panels"),
                       ENABLE_TEST_TASKS="true",
                       WORKER_HEARTBEAT_TIMEOUT_MS=str(HEARTBEAT_TIMEOUT_MS)) as running:
        yield running


@pytest.fixture
def store(site: Stack) -> Iterator[redis.Redis]:
    """The stack's Redis, for what a test writes as the service would."""
    client = redis.Redis.from_url(site.env["REDIS_URL"])
    try:
        yield client
    finally:
        client.close()


def _network_noise(text: str) -> bool:
    return "Failed to load resource" in text or "net::ERR_" in text


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


async def _task(http: httpx.AsyncClient, payload: dict[str, Any],
                task_type: str = "test.sleep") -> str:
    token = (await http.post("/api/session")).json()["token"]
    response = await http.post("/api/tasks", headers=auth(token),
                               json={"type": task_type, "payload": payload})
    assert response.status_code == 202, response.text
    return str(response.json()["job"]["id"])


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


async def _number(page: Any, selector: str) -> int:
    return int(await page.inner_text(selector))


def _docs_copy(name: str) -> None:
    """The screenshot just taken, also as docs/<name>.png (the README shows them)."""
    DOCS.joinpath(f"{name}.png").write_bytes(Path(screenshot_path(name)).read_bytes())


# ---------- workers ----------

ROW = "[data-testid=worker-row][data-worker-id='{}']"


async def _alive_workers(http: httpx.AsyncClient, site: Stack) -> list[dict[str, Any]]:
    """GET /api/workers' living processes, once both pools have reported (they boot
    after the web process answers)."""
    deadline = time.monotonic() + 30
    while True:
        response = await http.get("/api/workers", headers=auth(site.env["ADMIN_TOKEN"]))
        assert response.status_code == 200, response.text
        alive = [w for w in response.json()["workers"] if w["alive"]]
        if {w["pool"] for w in alive} >= {"images", "io"} or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.2)


async def test_workers_panel_lists_the_processes_and_follows_a_job_live(
        browser: Any, site: Stack) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as http:
        alive = await _alive_workers(http, site)
        assert sorted(w["pool"] for w in alive) == ["images", "io"], alive
        images = next(w for w in alive if w["pool"] == "images")
        assert images["pid"] in site.worker_processes()

        async with _dashboard(browser, site) as admin:
            for worker in alive:
                row = ROW.format(worker["id"])
                await admin.wait_for_selector(f"{row}[data-alive=true]", timeout=15_000)
                assert await admin.inner_text(f"{row} [data-field=pool]") == worker["pool"]
                assert await admin.inner_text(f"{row} .roster-host") == worker["host"]
                assert await admin.inner_text(f"{row} .roster-pid") == f"pid {worker['pid']}"
                busy = await _number(admin, f"{row} [data-field=busy]")
                idle = await _number(admin, f"{row} [data-field=idle]")
                assert busy + idle == worker["threads"] > 0
                assert await admin.is_hidden(f"{row} [data-testid=worker-dead]")
                assert (await admin.inner_text(f"{row} [data-field=memory]")).endswith(" MB")
            # The heartbeat's age ticks between pushes: "N s ago", changing.
            heartbeat = f"{ROW.format(alive[0]['id'])} [data-field=heartbeat]"
            seen = set()
            for _ in range(4):
                seen.add(await admin.inner_text(heartbeat))
                await admin.wait_for_timeout(700)
            assert len(seen) >= 2 and all(s.endswith(" s ago") for s in seen), seen

            await admin.evaluate("window.__samePage = true")  # a reload would lose it
            job_id = await _task(http, {"seconds": 3, "steps": 3})
            job = f"[data-testid=worker-job][data-job-id='{job_id}']"
            await admin.wait_for_selector(job, timeout=15_000)
            worker_id = await admin.eval_on_selector(job, "e => e.closest('tr').dataset.workerId")
            row = ROW.format(worker_id)
            assert await admin.get_attribute(row, "data-pool") == "images"
            assert await admin.inner_text(f"{job} .roster-job [aria-hidden=true]") == job_id[-8:]
            assert await admin.get_attribute(f"{job} a", "href") == f"/admin/jobs/{job_id}"
            assert await admin.inner_text(f"{job} .roster-type") == "test.sleep"
            assert (await admin.inner_text(f"{job} .roster-thread")).strip()
            assert await _number(admin, f"{row} [data-field=busy]") >= 1
            await wait_for_js(admin, "(sel) => /^for \\d+ s$/.test("
                                     "document.querySelector(sel)?.textContent || '')",
                              arg=f"{job} .roster-since")
            done = await _number(admin, f"{row} [data-field=done]")
            await admin.locator("[data-testid=workers-panel]").screenshot(
                path=screenshot_path("admin-workers-busy"))

            # Done: the thread goes idle and the process counts one more job.
            await admin.wait_for_selector(job, state="detached", timeout=20_000)
            await wait_for_js(admin, "([sel, n]) => Number(document.querySelector(sel)"
                                     "?.textContent) > n", arg=[f"{row} [data-field=done]", done],
                              timeout=20_000)
            threads = next(w["threads"] for w in alive if w["id"] == worker_id)
            await wait_for_js(admin, "([sel, n]) => document.querySelector(sel)?.textContent"
                                     " === String(n)", arg=[f"{row} [data-field=idle]", threads],
                              timeout=20_000)
            assert await admin.evaluate("window.__samePage === true")


async def test_a_silent_worker_shows_dead_until_it_is_gone(
        browser: Any, site: Stack, store: redis.Redis) -> None:
    prefix = site.env["REDIS_PREFIX"]
    ghost_id = "ghost-host:4242"
    silent_for_s = 60  # past the heartbeat timeout, well before WORKER_FORGET_S
    reported = time.time() - silent_for_s
    ghost = wire.Worker(
        id=ghost_id, host="ghost-host", pid=4242, pool="images", queues=["default", "images"],
        threads=2, busy=1, running=[wire.RunningJob(
            thread="Thread-1", job_id="0" * 24 + "deadbeef", type="image.process",
            since=_iso(reported - 5))],
        memory_bytes=150 * 1024 * 1024, jobs_done=17, jobs_failed=2,
        started_at=_iso(reported - 3600), reported_at=_iso(reported), heartbeat_age_s=0.0,
        alive=True)
    store.set(keys.worker_report(prefix, ghost_id), msgspec.json.encode(ghost), ex=600)
    store.zadd(keys.worker_roster(prefix), {ghost_id: int(reported * 1000)})
    try:
        async with httpx.AsyncClient(base_url=site.url, timeout=30) as http, \
                _dashboard(browser, site) as admin:
            row = ROW.format(ghost_id)
            await admin.wait_for_selector(f"{row}[data-alive=false]", timeout=15_000)
            assert await admin.is_visible(f"{row} [data-testid=worker-dead]")
            assert await admin.inner_text(f"{row} [data-testid=worker-dead]") == "Dead"
            # Greyed, and after the living.
            grey = await admin.eval_on_selector(
                f"{row} td[data-field=pool]", "e => getComputedStyle(e).backgroundColor")
            assert grey != "rgba(0, 0, 0, 0)", grey
            ids = await admin.eval_on_selector_all(
                "[data-testid=worker-row]", "rows => rows.map(r => r.dataset.alive)")
            assert ids[-1] == "false" and "true" in ids
            age = await admin.inner_text(f"{row} [data-field=heartbeat]")
            assert age.startswith("1 min"), age
            assert await admin.inner_text(f"{row} [data-field=done]") == "17"
            assert await admin.inner_text(f"{row} [data-field=memory]") == "150 MB"
            assert "1 dead" in await admin.inner_text("[data-testid=roster-summary]")

            # The picture for the README: a busy thread, idle ones and the dead process.
            job_id = await _task(http, {"seconds": 3, "steps": 3})
            await admin.wait_for_selector(f"[data-testid=worker-job][data-job-id='{job_id}']",
                                          timeout=15_000)
            await admin.locator("[data-testid=workers-panel]").screenshot(
                path=screenshot_path("admin-workers"))
            _docs_copy("admin-workers")

            # Its report expires (WORKER_FORGET_S): it leaves the panel, by push.
            store.delete(keys.worker_report(prefix, ghost_id))
            await admin.wait_for_selector(row, state="detached", timeout=15_000)
            assert "dead" not in await admin.inner_text("[data-testid=roster-summary]")
    finally:
        store.delete(keys.worker_report(prefix, ghost_id))
        store.zrem(keys.worker_roster(prefix), ghost_id)


# ---------- charts ----------

def _point(minute: int, finished: int, scale: float = 1.0) -> wire.ChartPoint:
    """The point of the minute ``minute`` (epoch minutes), every chart given something;
    ``scale`` stretches its durations."""
    def q(p50: float, p95: float, count: int = 4) -> wire.Quantiles:
        return wire.Quantiles(p50=round(p50 * scale, 4), p95=round(p95 * scale, 4), count=count)

    return wire.ChartPoint(
        at=_iso(minute * 60), finished=finished, failed=finished % 3, retried=1,
        uploads_accepted=finished + 2, uploads_refused=1,
        queue_depth={"default": 1, "images": finished // 2},
        wait={"images": q(0.4, 1.5), "default": q(0.05, 0.2)},
        run={"images": q(1.2, 3.5), "default": q(0.01, 0.02)},
        stages={"decode": q(0.05, 0.1), "resize": q(0.2, 0.45), "encode": q(0.1, 0.3)},
        push=q(0.004, 0.02, 40))


LEGEND = """([chart, label]) => {
  const rows = [...document.querySelectorAll(`[data-chart=${chart}] .u-legend .u-series`)];
  const row = rows.find((r) => r.querySelector('.u-label')?.textContent === label);
  return row ? row.querySelector('.u-value').textContent : null;
}"""


async def test_charts_draw_the_points_switch_to_a_day_and_take_a_pushed_one(
        browser: Any, site: Stack, store: redis.Redis) -> None:
    prefix = site.env["REDIS_PREFIX"]
    if time.time() % 60 < 5:
        await asyncio.sleep(5)  # the service makes its point of the minute just ended about now
    now_minute = int(time.time() // 60)
    # The service's own point of a minute would come after ours and be the newest: a web
    # process skips a minute another has claimed, so claim the few this test spans.
    for minute in range(now_minute - 1, now_minute + 4):
        store.set(keys.chart_minute(prefix, minute), "1", ex=300)
    points = keys.chart_points(prefix)
    store.delete(points)
    # Nor the minute so far until this test asks for it: it counts from this snapshot.
    store.delete(keys.chart_snapshot(prefix))

    async with _dashboard(browser, site, "/admin?type=test.sleep") as admin:
        # No points yet: the empty state says when the first comes.
        empty = "[data-testid=charts-empty]"
        await admin.wait_for_selector(f"{empty}:visible", timeout=15_000)
        assert "first point appears a minute after" in await admin.inner_text(empty)
        assert await admin.is_hidden("[data-testid=charts]")

        # Forty minutes back, with four missing (no web process ran): a gap, not zeros.
        # The newest, the minute before this one, is the legend's.
        ago = [m for m in range(40, 0, -1) if not 22 <= m <= 25]
        for m in ago:
            wave = 1 if m == 1 else 1 + 0.6 * math.sin(m / 4)
            store.rpush(points, msgspec.json.encode(
                _point(now_minute - m, 13 if m == 1 else round(9 * wave) + m % 3, wave)))
        await admin.reload()
        await admin.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)
        charts = "[data-testid=charts]"
        await wait_for_js(admin, f"document.querySelector('{charts}').dataset.points === "
                                 f"'{len(ago)}'")
        assert await admin.get_attribute(charts, "data-newest") == _iso((now_minute - 1) * 60)
        assert await admin.is_hidden(empty)
        assert await admin.get_attribute("[data-testid=charts-1h]", "aria-pressed") == "true"
        ids = await admin.eval_on_selector_all("[data-testid=chart]",
                                               "e => e.map(f => f.dataset.chart)")
        assert ids == ["jobs", "uploads", "depth", "wait", "run", "stages", "push"]
        # Every chart drawn: a canvas with a size, a legend with the newest minute's values.
        await wait_for_js(admin, "[...document.querySelectorAll('[data-testid=chart]')]"
                                 ".every(f => f.dataset.drawn === 'true')")
        sizes = await admin.eval_on_selector_all(
            "[data-testid=chart] canvas", "e => e.map(c => [c.width, c.height])")
        assert len(sizes) == 7 and all(w > 100 and h > 50 for w, h in sizes), sizes
        assert await admin.evaluate(LEGEND, ["jobs", "Finished"]) == "13"
        assert await admin.evaluate(LEGEND, ["jobs", "Failed"]) == "1"
        assert await admin.evaluate(LEGEND, ["uploads", "Accepted"]) == "15"
        assert await admin.evaluate(LEGEND, ["depth", "images"]) == "6"
        assert await admin.evaluate(LEGEND, ["wait", "default p50"]) == "0.05 s"
        assert await admin.evaluate(LEGEND, ["run", "images p95"]) == "3.5 s"
        assert await admin.evaluate(LEGEND, ["stages", "resize p50"]) == "200 ms"
        assert await admin.evaluate(LEGEND, ["push", "p95"]) == "20 ms"
        assert await admin.inner_text("[data-chart=push] .chart-unit") == "ms"
        assert await admin.inner_text("[data-chart=run] .chart-unit") == "s"
        await admin.locator("[data-testid=charts-panel]").screenshot(
            path=screenshot_path("admin-charts"))
        _docs_copy("admin-charts")

        # 24 h: in the URL beside the jobs' filter, and kept by a reload.
        await admin.click("[data-testid=charts-24h]")
        await wait_for_js(admin, "new URLSearchParams(location.search).get('charts') === '24h'")
        assert _query(admin) == {"type": ["test.sleep"], "charts": ["24h"]}
        assert await admin.get_attribute("[data-testid=charts-24h]", "aria-pressed") == "true"
        assert await admin.get_attribute("[data-testid=charts-1h]", "aria-pressed") == "false"
        assert await admin.get_attribute(charts, "data-window") == "24h"
        await admin.reload()
        await admin.wait_for_selector("[data-testid=conn][data-state=connected]", timeout=15_000)
        await admin.wait_for_selector("[data-testid=charts-24h][aria-pressed=true]")
        await wait_for_js(admin, "document.querySelector('[data-chart=jobs]')"
                                 "?.dataset.drawn === 'true'")
        assert await admin.evaluate(LEGEND, ["jobs", "Finished"]) == "13"
        assert await admin.input_value("[data-testid=jobs-type]") == "test.sleep"

        # The minute still running, counted so far from the snapshot its start left (set
        # here as a web process sets it when the minute turns): pushed within ~10 s, idle,
        # so not late in a minute (the next one has no snapshot: this test claimed it).
        if time.time() % 60 > 40:
            await asyncio.sleep(61 - time.time() % 60)
        store.set(keys.chart_snapshot(prefix), json.dumps(
            {"minute": int(time.time() // 60) - 1, "samples": {}}))
        await wait_for_js(admin, f"document.querySelector('{charts}').dataset.partial === "
                                 "'true'", timeout=15_000)
        so_far = await admin.get_attribute(charts, "data-newest")
        assert so_far is not None and so_far >= _iso(now_minute * 60)
        assert (await admin.inner_text("#charts-at")).endswith("(so far)")
        assert (await admin.evaluate(LEGEND, ["jobs", "Minute"])).endswith("(so far)")
        assert await admin.get_attribute(charts, "data-points") == str(len(ago) + 1)
        store.delete(keys.chart_snapshot(prefix))

        # A new point: the pusher sends the newest when it changes (idle, within ~10 s);
        # the minute's own point replaces what was counted of it so far.
        pushed = _point(int(datetime.fromisoformat(so_far).timestamp()) // 60, 77)
        store.rpush(points, msgspec.json.encode(pushed))
        await wait_for_js(admin, f"document.querySelector('{charts}').dataset.partial === "
                                 "'false'", timeout=15_000)
        assert await admin.get_attribute(charts, "data-newest") == pushed.at
        assert await admin.get_attribute(charts, "data-points") == str(len(ago) + 1)
        assert await admin.evaluate(LEGEND, ["jobs", "Finished"]) == "77"
        assert not (await admin.evaluate(LEGEND, ["jobs", "Minute"])).endswith("(so far)")
        assert not (await admin.inner_text("#charts-at")).endswith("(so far)")

        # Back to an hour: the parameter leaves the URL, the filter stays.
        await admin.click("[data-testid=charts-1h]")
        await wait_for_js(admin, "!new URLSearchParams(location.search).has('charts')")
        assert _query(admin) == {"type": ["test.sleep"]}
        await wait_for_js(admin, "document.querySelector('[data-chart=jobs]')"
                                 "?.dataset.drawn === 'true'")
        assert await admin.evaluate(LEGEND, ["jobs", "Finished"]) == "77"

