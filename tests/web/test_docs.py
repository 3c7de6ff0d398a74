"""/docs in headless Chromium: the vendored Swagger UI shows every operation and calls the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server import openapi
from tests.conftest import Stack
from tests.web.conftest import screenshot_path

pytestmark = pytest.mark.integration

# The policy the pages are meant to get: the app's own scripts only, nothing inline.
CSP = "script-src 'self'; object-src 'none'; base-uri 'none'"


@pytest.fixture
async def docs(browser: Any, stack: Stack) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1200, "height": 1000})
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    async def with_csp(route: Any) -> None:
        answer = await route.fetch()
        await route.fulfill(response=answer,
                            headers={**answer.headers, "content-security-policy": CSP})

    await page.route(f"{stack.url}/docs", with_csp)
    await page.goto(f"{stack.url}/docs")
    yield page
    await context.close()
    assert problems == [], f"console errors (a CSP violation shows here too): {problems}"


async def test_docs_lists_every_operation(docs: Any) -> None:
    await docs.wait_for_selector(".opblock", timeout=20_000)
    wanted = {(method.upper(), path) for path, item in openapi.document()["paths"].items()
              for method in item if method != "parameters"}
    shown = await docs.eval_on_selector_all(
        ".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent,"
                    " e.querySelector('.opblock-summary-path').dataset.path])")
    assert {(method, path) for method, path in shown} == wanted
    assert "Upload an image" in await docs.inner_text("#operations-images-post_api_images")
    await docs.screenshot(path=screenshot_path("docs"), full_page=False)


async def test_docs_try_it_out_calls_the_api_with_a_token(docs: Any, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        token = (await http.post("/api/session")).json()["token"]
    await docs.click("button.authorize", timeout=20_000)
    await docs.fill(".auth-container input", token)
    await docs.click(".auth-btn-wrapper button.authorize")
    await docs.click(".auth-btn-wrapper button.btn-done")
    operation = "#operations-tasks-get_api_tasks_types"
    await docs.click(f"{operation} .opblock-summary-control")
    await docs.click(f"{operation} .try-out__btn")
    await docs.click(f"{operation} .execute")
    status = docs.locator(f"{operation} .live-responses-table tbody .response-col_status")
    await status.wait_for(timeout=10_000)
    assert (await status.inner_text()).strip() == "200"
    assert "email.send" in await docs.inner_text(f"{operation} .live-responses-table")
