"""Headless Debian chromium driven by Playwright (it cannot download its own browsers here), and a page that
records what would be a problem: console errors, page errors, and every request it makes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs the browser: marked so that `make test` leaves them to `make test-browser`."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: make test-browser installs it (apt-get install chromium)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    yield browser
    browser.close()


@dataclass
class Opened:
    """A report open in the browser, and what the page did meanwhile."""

    page: Page
    url: str
    problems: list[str] = field(default_factory=list)  # console errors (a CSP violation is one), page errors
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def open_report(browser: Browser) -> Iterator[Callable[[Path], Opened]]:
    """Opens a written report file (file:// URL) in a fresh context; the context is closed after the test."""
    contexts = []

    def open_file(path: Path) -> Opened:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        opened = Opened(page, path.resolve().as_uri())

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                opened.problems.append(f"console {message.type}: {message.text}")

        def on_request(request: Request) -> None:
            opened.requests.append(request.url)

        page.on("console", on_console)
        page.on("pageerror", lambda error: opened.problems.append(f"page error: {error}"))
        page.on("request", on_request)
        page.goto(opened.url, wait_until="load")
        return opened

    yield open_file
    for context in contexts:
        context.close()
