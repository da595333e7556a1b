"""A headless Chromium (Debian's, driven by Playwright) over the fake-model app of tests/api.

The tests skip, saying what to install, when Playwright or Chromium is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.api.conftest import (  # noqa: F401  (fixtures)
    app,
    claims_db,
    client,
    context,
    make_app,
    release,
    settings,
)

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.skip("Playwright is missing: pip install -e '.[dev]' -c constraints.txt")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium is missing at {CHROMIUM}: make chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's own sandbox refuses to run as root (the CI container)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh tab (its own sessionStorage) that fails the test on any console error, such as a
    Content-Security-Policy violation or an uncaught script error."""
    tab = browser.new_context(viewport={"width": 1280, "height": 900})
    tab.set_default_timeout(TIMEOUT_MS)
    page = tab.new_page()
    problems: list[str] = []

    def console(message) -> None:
        # the browser logs every API answer of 4xx or 5xx, which the pages show themselves, and
        # a poll cut off when the test's server stops at the end (not a page error)
        expected = ("the server responded with a status of", "net::ERR_CONNECTION_")
        if message.type == "error" and not any(text in message.text for text in expected):
            problems.append(message.text)

    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", console)
    yield page
    tab.close()
    assert problems == []


def damage_tag(damage: dict, agreement: dict) -> tuple[str, str]:
    """The class and tag assess.js gives a damage row's part cell, from the API's agreement:
    both found it, both found it at different severities, or only this approach did."""
    key = f"{damage['part']}:{damage['type']}"
    if key in agreement["damages"]["severity_differs"]:
        return "differ", " (both found; severity differs)"
    if key in agreement["damages"]["shared"]:
        return "agree", " (both agree)"
    return "differ", " (only this approach)"
