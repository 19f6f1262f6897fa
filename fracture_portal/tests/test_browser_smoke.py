"""The "done when" path in a real browser: sign in -> upload a radiograph -> the case page; then
sign out, and the session is gone. Headless Debian Chromium via Playwright against the live server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from diagnosis.models import AuditEvent, Case
from diagnosis.tests import factories

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "fracatlas_IMG0000472.jpg"
PASSWORD = "correct-horse-battery-9"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def page(live_server, monkeypatch) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium")
    # Playwright's sync API runs an event loop in this thread; the test body itself is synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_sign_in_upload_and_see_the_case_page(live_server, page, transactional_db):
    factories.ClinicianFactory(username="browser_clin")
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url  # anonymous users are sent to sign in
    page.fill("#id_username", "browser_clin")
    page.fill("#id_password", "not-the-password-1")
    page.click("button[type=submit]")
    assert "Please enter a correct username and password" in page.inner_text("#login-errors")
    page.fill("#id_username", "browser_clin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "No cases yet." in page.content()

    page.goto(f"{live_server.url}/cases/new/")
    page.fill("#id_patient_ref", "PSN-BROWSER-1")
    page.select_option("#id_body_part", "leg")
    page.set_input_files("input[type=file]", [str(SAMPLE)])
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/cases/[0-9a-f-]{36}/$"))

    case = Case.objects.get(patient_ref="PSN-BROWSER-1")
    assert str(case.uuid) in page.url
    assert "PSN-BROWSER-1" in page.inner_text("dl.facts")
    assert case.images.count() == 1
    # The canonical image is served to its owner through the permission-checked view.
    image = page.locator("img").first
    image.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", image.element_handle())

    page.goto(f"{live_server.url}/")
    assert "PSN-BROWSER-1" in page.inner_text("table.grid")

    page.click("form[action='/accounts/logout/'] button")
    page.wait_for_url(re.compile(r".*/accounts/login/$"))
    page.goto(f"{live_server.url}/cases/{case.uuid}/")
    assert "/accounts/login/" in page.url
    # Content-Security-Policy allows no inline script: nothing the pages run may be blocked.
    assert not [e for e in errors if "Content Security Policy" in e], errors
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions.count("auth.login_failed") == 1
    assert actions.count("auth.login") == 1
    assert actions.count("case.create") == 1
    assert actions.count("case.view") == 1
    assert actions.count("auth.logout") == 1
    # ORM calls made while Playwright's event loop runs use their own connection (Django keys
    # connections by thread and async context); close it, or it blocks the test database's drop.
    connections.close_all()
