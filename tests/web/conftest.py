"""A real headless Chromium (Debian's), driven by Playwright; skipped without one unless CI."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# As the probe of this machine kind starts it: quiet, no sandbox (root), no network chatter.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def chromium_path() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[object]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium found; .ci/run installs Debian's chromium")
        pytest.skip("no Chromium on this machine (install Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


# Records every Content-Security-Policy violation the page reports, from the first script on.
_CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`);
});
"""


async def watch_csp(context: Any) -> None:
    """Have every page of ``context`` record CSP violations (read them with csp_violations)."""
    await context.add_init_script(_CSP_WATCH)


async def csp_violations(page: Any) -> list[str]:
    return list(await page.evaluate("window.__cspViolations || []"))


async def wait_for_js(page: Any, expression: str, arg: Any = None,
                      timeout: float = 30_000) -> Any:
    """``page.wait_for_function``, polled from the test instead.

    Playwright evaluates a wait_for_function predicate with eval inside the page, which
    the pages' Content-Security-Policy forbids; ``page.evaluate`` goes through the
    DevTools protocol, which it does not.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = await page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} ms: {expression}")
        await asyncio.sleep(0.1)


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / f"{name}.png")
