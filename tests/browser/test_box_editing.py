"""Editing fracture boxes on the review screen in a real browser, under the real CSP: the model's
marks are offered as suggestions; the reader accepts one, moves it (mouse and keyboard), deletes a
box, adds and draws their own, and the saved read keeps every box with its origin. Keyboard only
and axe-clean."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from diagnosis.models import Prediction, Review
from diagnosis.services.reviews import review_claim
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, wait_for_js, watch_errors
from tests.browser.test_accessibility import axe_violations
from tests.browser.test_review_viewer import two_image_case  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct-horse-battery-9"  # factories.UserFactory


def _boxes(page) -> list[dict]:
    raw = page.locator(".region-input").first.input_value()
    return json.loads(raw) if raw else []


def _open(browser, live_server, reader, case):
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    return page, errors


@pytest.fixture
def marked_case(two_image_case):  # noqa: F811
    """The first image's prediction marks two suspected sites (canonical-image pixels)."""
    prediction = Prediction.objects.get(image__case=two_image_case, image__position=0)
    w, h = prediction.image.width, prediction.image.height
    prediction.candidates = [
        {"x0": 0.2 * w, "y0": 0.2 * h, "x1": 0.3 * w, "y1": 0.3 * h, "score": 0.81},
        {"x0": 0.6 * w, "y0": 0.6 * h, "x1": 0.7 * w, "y1": 0.75 * h, "score": 0.33},
    ]
    prediction.save(update_fields=["candidates"])
    version = prediction.model_version  # a version that localises: its marks are drawn too
    version.card = {**(version.card or {}), "localisation": {"output": "loc"}}
    version.save(update_fields=["card"])
    return two_image_case


def test_accept_move_delete_add_and_save(live_server, marked_case, browser, screenshots):
    case = marked_case
    reader = factories.RadiologistFactory(username="rad_boxes")
    review_claim(case=case, user=reader)
    page, errors = _open(browser, live_server, reader, case)
    accept = page.locator(".accept-mark")
    assert accept.count() == 2
    assert "0.81" in accept.first.inner_text()
    # the same marks are drawn read-only on the image, apart from the reader's boxes
    wait_for_js(
        page, "() => document.querySelectorAll('g[data-layer=\"model\"] rect').length === 2"
    )
    page.locator("#viewer").focus()
    page.keyboard.press("c")  # the model's fracture, confirmed

    # Accept both marks: each becomes a box of the reader's, the last one selected.
    accept.nth(0).click()
    accept.nth(1).click()
    boxes = _boxes(page)
    assert [b["origin"] for b in boxes] == ["model_accepted", "model_accepted"]
    coords = {k: boxes[0][k] for k in ("x", "y", "w", "h")}
    assert coords == pytest.approx({"x": 0.2, "y": 0.2, "w": 0.1, "h": 0.1}, abs=1e-3)
    assert page.locator("[data-testid=reader-box]").count() == 2
    assert "accepted" in accept.nth(0).inner_text()

    # Move the first accepted box by dragging inside it: it becomes the reader's "moved" box.
    stage = page.locator("#viewer-stage").bounding_box()
    x = stage["x"] + stage["width"] * 0.25
    y = stage["y"] + stage["height"] * 0.25
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + stage["width"] * 0.05, y + stage["height"] * 0.05, steps=5)
    page.mouse.up()
    boxes = _boxes(page)
    assert boxes[0]["origin"] == "model_moved"
    assert boxes[0]["x"] == pytest.approx(0.25, abs=0.01)
    assert boxes[0]["y"] == pytest.approx(0.25, abs=0.01)
    assert boxes[0]["w"] == pytest.approx(0.1, abs=1e-3)  # moved, not resized
    assert boxes[1]["origin"] == "model_accepted"

    # Resize it by its lower-right corner.
    corner_x = stage["x"] + stage["width"] * (boxes[0]["x"] + boxes[0]["w"])
    corner_y = stage["y"] + stage["height"] * (boxes[0]["y"] + boxes[0]["h"])
    page.mouse.move(corner_x, corner_y)
    page.mouse.down()
    page.mouse.move(corner_x + stage["width"] * 0.05, corner_y, steps=5)
    page.mouse.up()
    resized = _boxes(page)[0]
    assert resized["w"] == pytest.approx(0.15, abs=0.01)
    assert resized["x"] == pytest.approx(boxes[0]["x"], abs=1e-4)

    # Delete the second box with its button; draw a new one with the mouse.
    page.locator(".delete-box").nth(1).click()
    assert [b["origin"] for b in _boxes(page)] == ["model_moved"]
    page.locator("#viewer").focus()
    page.keyboard.press("b")
    page.mouse.move(stage["x"] + stage["width"] * 0.5, stage["y"] + stage["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(stage["x"] + stage["width"] * 0.6, stage["y"] + stage["height"] * 0.2, steps=5)
    page.mouse.up()
    page.keyboard.press("b")  # draw mode off
    boxes = _boxes(page)
    assert [b["origin"] for b in boxes] == ["model_moved", "reader"]
    assert boxes[1]["x"] == pytest.approx(0.5, abs=0.01)
    assert page.locator("#viewer-edit-boxes rect").count() == 1  # the unselected box
    assert page.locator("#viewer-box").get_attribute("visibility") == "visible"
    screenshots(page, "boxes-edited")

    # The draft keeps the boxes: leave and come back.
    page.wait_for_selector("#review-form[data-draft-state=saved]")
    page.reload()
    page.wait_for_selector("#viewer[data-loaded='1']")
    assert [b["origin"] for b in _boxes(page)] == ["model_moved", "reader"]
    assert page.locator("[data-testid=reader-box]").count() == 2

    page.locator("#viewer").focus()
    page.keyboard.press("]")  # image 2: the model says no fracture
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.keyboard.press("c")
    page.click("#save")
    page.wait_for_url(f"**{reverse('review:queue')}")
    assert not errors, errors
    first = Review.objects.get(image__case=case, image__position=0)
    assert [b["origin"] for b in first.boxes] == ["model_moved", "reader"]
    assert first.boxes[0]["w"] == pytest.approx(0.15, abs=0.01)
    assert Review.objects.get(image__case=case, image__position=1).boxes == []


def test_boxes_with_the_keyboard_alone_and_axe_clean(live_server, marked_case, browser):
    case = marked_case
    reader = factories.RadiologistFactory(username="rad_boxes_kb")
    review_claim(case=case, user=reader)
    page, errors = _open(browser, live_server, reader, case)
    page.locator("#viewer").focus()
    page.keyboard.press("c")

    # Tab to the first suggestion and accept it with Enter.
    page.locator(".accept-mark").first.focus()
    page.keyboard.press("Enter")
    assert [b["origin"] for b in _boxes(page)] == ["model_accepted"]

    # Arrows move the selected box (it becomes "moved"); Shift+arrows resize it.
    page.locator("#viewer").focus()
    before = _boxes(page)[0]
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    after = _boxes(page)[0]
    assert after["origin"] == "model_moved"
    assert after["x"] == pytest.approx(before["x"] + 0.03, abs=1e-4)
    assert after["h"] == pytest.approx(before["h"] + 0.01, abs=1e-4)

    # A adds a box of the reader's in the centre; Del deletes the selected (new) box.
    page.keyboard.press("a")
    assert [b["origin"] for b in _boxes(page)] == ["model_moved", "reader"]
    assert "added" in page.locator(".box-status").first.inner_text()
    page.keyboard.press("Delete")
    assert [b["origin"] for b in _boxes(page)] == ["model_moved"]

    # Selecting a box from its list item, then deleting it from the keyboard.
    page.locator(".select-box").first.focus()
    page.keyboard.press("Enter")
    assert page.locator(".select-box").first.get_attribute("aria-pressed") == "true"
    violations = axe_violations(page)
    assert not violations, violations

    # Reading the image as "No fracture" drops the boxes and turns the box tools off.
    page.locator("#viewer").focus()
    page.keyboard.press("x")
    assert _boxes(page) == []
    assert page.locator(".accept-mark").first.is_disabled()
    assert page.locator(".add-box").first.is_disabled()
    page.keyboard.press("a")
    assert _boxes(page) == []
    wait_for_js(page, "() => document.querySelectorAll('[data-testid=reader-box]').length === 0")
    assert not errors, errors
