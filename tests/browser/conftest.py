"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's sync API, against
pytest-django's live server. Screenshots go to test-artifacts/browser/ (git-ignored)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture
def browser(live_server, monkeypatch) -> Iterator[object]:
    """Chromium for one test (after the live server and its database are up). A missing browser
    is an error, never a skip.

    Playwright's sync API keeps an event loop in this thread while it runs, and Django refuses ORM
    calls from a thread with a running loop; the test body is synchronous, so allow them for the
    browser's lifetime only. Stopping Playwright closes the loop, so later tests are unaffected.
    Django keeps database connections per context, and the test body's ORM calls run in the
    loop's context: close that context's connections before the loop goes, or the session stays
    open and the test database cannot be dropped at the end of the run.
    """
    from django.db import connections
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            connections.close_all()
            browser.close()


def watch_errors(page) -> list[str]:
    """Collect the page's script errors, console errors (CSP violations included) and failed
    requests (the favicon included) into the returned list as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    return errors


def wait_for_js(page, function: str, arg=None, *, timeout_ms: int = 20_000, interval_ms: int = 50):
    """Wait until the JavaScript `function` (e.g. "() => ...") returns a truthy value in the page.

    Playwright's own `page.wait_for_function` compiles its predicate inside the page with
    `new Function`, which the product's Content-Security-Policy (`script-src 'self'`, no
    `unsafe-eval`) refuses, so it fails intermittently under the real CSP. This polls from Python
    with `page.evaluate`, which Playwright runs through the DevTools protocol, outside the page's
    CSP. Returns the truthy value; raises AssertionError with the last value on timeout.
    """
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        value = page.evaluate(function) if arg is None else page.evaluate(function, arg)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_ms} ms waiting for {function!r} (last: {value!r})"
            )
        page.wait_for_timeout(interval_ms)


def sign_in(page, base_url: str, username: str, password: str) -> None:
    """Sign in through the login page."""
    from django.urls import reverse

    page.goto(f"{base_url}{reverse('login')}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture
def screenshots(request) -> object:
    """shot(page, name): a full-page PNG under test-artifacts/browser/<test name>/."""
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    counter = {"n": 0}

    def shot(page, name: str) -> Path:
        counter["n"] += 1
        path = folder / f"{counter['n']:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot
