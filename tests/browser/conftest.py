"""Browser tests: Playwright for Python driving Debian's ``chromium`` against a real server.

Playwright's own browser download cannot be reached here, so the system binary is launched by
path. Without ``chromium`` on the PATH the tests are skipped on a developer's machine and fail
under CI (``CI`` set), where ``.ci/run`` installs it. Screenshots go to ``.artifacts/screenshots``
(CI keeps them); each test names its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from realtime_messaging.demo import Demo, create_demo
from tests.conftest import RunningServer

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".artifacts" / "screenshots"
#: A phone-sized viewport, and a desktop one.
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def demo(pool: asyncpg.Pool, server: RunningServer) -> Demo:
    """A staff user, a customer and their conversation, as ``rtm demo`` makes them."""
    async with pool.acquire() as conn:
        return await create_demo(conn, server.secret)


async def open_page(
    browser: Browser, url: str, viewport: dict[str, int] = DESKTOP
) -> tuple[BrowserContext, Page]:
    """A page in a context of its own (a separate user, as a separate browser would be)."""
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(url)
    return context, page


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
