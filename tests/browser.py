"""Headless Chromium for UI tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright cannot download its own browser on these machines, so it is
pointed at the system one. Fixtures (registered in conftest.py):

- ``playwright``: one Playwright per test session (a second one in the process fails).
- ``browser``: one Chromium per test session (start-up costs about a second).
- ``page``: a fresh context and page per test (own cookies), with a
  ``shot(name)`` helper that saves a PNG under the test's tmp dir, and
  ``errors``: JavaScript errors and Content-Security-Policy violations seen by
  the page (a test should usually end with ``assert page.errors == []``), and
  ``failed_loads``: resources answered with an HTTP error status.

    def test_something(server, page):
        page.goto(server.url("/login"))
        ...
        page.shot("after-login")
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.peers import require

CHROMIUM = os.environ.get("DSMPACS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-default-apps", "--mute-audio"]


def chromium_path() -> str | None:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def playwright():
    """One Playwright per worker: its sync API runs an event loop for the whole session,
    so a second ``sync_playwright()`` in the same process fails. Tests that need a
    Chromium with other flags launch it from this one."""
    require(chromium_path() is not None, "chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright not installed (pip install playwright)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    pg = context.new_page()
    pg.set_default_timeout(15000)
    errors: list[str] = []
    failed_loads: list[str] = []

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        # A 401 login page or a 404 is an HTTP status the test checks itself;
        # what remains are script errors and CSP violations ("Refused to ...").
        (failed_loads if msg.text.startswith("Failed to load resource") else errors).append(msg.text)

    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    pg.on("console", on_console)
    shots = tmp_path / "screenshots"

    def shot(name: str, full_page: bool = True) -> Path:
        shots.mkdir(exist_ok=True)
        target = shots / f"{name}.png"
        pg.screenshot(path=str(target), full_page=full_page)
        return target

    pg.shot = shot
    pg.errors = errors
    pg.failed_loads = failed_loads
    yield pg
    context.close()


def sign_in(page, server, username: str, password: str) -> None:
    """Sign in through the login form, as a person would, and wait for the signed-in page."""
    page.goto(server.url("/"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("[data-login-form] button[type=submit]")
    page.wait_for_selector("[data-action=logout]")
