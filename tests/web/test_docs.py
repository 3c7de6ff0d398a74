"""/docs in headless Chromium, under the Content-Security-Policy the server really sends.

The policy is read from the response to the page's own request, never set by the test, and
the browser enforces it: the vendored Swagger UI shows every operation and calls the API
with no CSP violation (``securitypolicyviolation`` events, console errors) and no error.
A control at the end shows violations would be seen: an inline script is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.web.http import openapi
from server.web.http.headers import content_security_policy
from tests.conftest import Stack
from tests.web.conftest import csp_violations, screenshot_path, wait_for_js, watch_csp

# Its subject is the API docs page in a browser, not the database: SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]


@pytest.fixture
async def docs(browser: Any, stack: Stack) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1200, "height": 1000})
    await watch_csp(context)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    response = await page.goto(f"{stack.url}/docs")
    assert response is not None and response.status == 200
    # What the browser enforces is what the server sent: the page policy, nothing looser.
    policy = (await response.all_headers())["content-security-policy"]
    assert policy == content_security_policy(stack.env.get("PUBLIC_URL", ""))
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    yield page
    try:
        assert await csp_violations(page) == []
        assert problems == [], f"console errors (a CSP violation shows here too): {problems}"
        # Control: the policy is enforced and its violations are seen.
        await page.evaluate("""() => {
            const script = document.createElement('script');
            script.textContent = 'window.__inlineRan = true';
            document.body.append(script);
        }""")
        await wait_for_js(page, "window.__cspViolations.length > 0", timeout=5_000)
        assert await page.evaluate("window.__inlineRan === undefined")
        assert await csp_violations(page) == ["script-src-elem blocked inline"]
    finally:
        await context.close()


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
