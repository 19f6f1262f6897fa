"""The review screen keeps the reader's work safe (issue #16) in a real browser: image tabs show
which images are decided, the missing-decision message follows the reader, a "No fracture" answer
drops the box, destructive actions ask first (a CSP-safe dialog), and leaving with work the server
has not kept yet asks before the page goes."""

from __future__ import annotations

import pytest
from django.urls import reverse

from diagnosis.models import Case
from diagnosis.services.reviews import review_claim, review_release
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, watch_errors
from tests.browser.test_review_viewer import two_image_case  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery-9"


def _open(browser, live_server, reader, case):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    return context, page, errors


def _draw(page) -> None:
    box = page.locator("#viewer-stage").bounding_box()
    page.keyboard.press("b")
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.up()


def test_tabs_messages_and_the_no_fracture_box_rule(
    live_server,
    two_image_case,  # noqa: F811
    browser,
    screenshots,
):
    case = two_image_case
    reader = factories.RadiologistFactory(username="rad_tabs")
    review_claim(case=case, user=reader)
    context, page, errors = _open(browser, live_server, reader, case)
    thumbs = page.locator(".thumb .thumb-state")
    assert [thumbs.nth(i).inner_text() for i in range(2)] == ["to do", "to do"]

    # Saving with nothing decided names image 1; deciding it moves the message on to image 2.
    page.click("#save")
    error = page.locator("#form-error")
    assert "Image 1" in error.inner_text()
    page.locator("#viewer").focus()
    page.keyboard.press("c")  # image 1: the model flags a fracture; confirm it
    assert "Image 2" in error.inner_text()
    assert [thumbs.nth(i).inner_text() for i in range(2)] == ["done", "to do"]

    # A box marks a fracture: reading image 1 as "No fracture" drops the box and the draw tool.
    _draw(page)
    assert page.locator("#viewer-box").get_attribute("visibility") == "visible"
    page.keyboard.press("x")  # correct the model: no fracture
    assert page.locator("#viewer-box").get_attribute("visibility") == "hidden"
    assert page.locator("#draw-toggle").is_disabled()
    assert "no box" in page.locator("[data-testid=region-readout]").first.inner_text()
    assert page.locator(".region-input").first.input_value() == ""
    page.keyboard.press("c")
    assert page.locator("#draw-toggle").is_enabled()

    page.keyboard.press("]")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.keyboard.press("x")
    assert error.is_hidden()
    assert [thumbs.nth(i).inner_text() for i in range(2)] == ["done", "done"]
    screenshots(page, "tabs-done")
    assert errors == [], errors
    context.close()


def test_release_asks_first_and_leaving_unkept_work_warns(
    live_server,
    two_image_case,  # noqa: F811
    browser,
    screenshots,
):
    case = two_image_case
    reader = factories.RadiologistFactory(username="rad_confirm")
    review_claim(case=case, user=reader)
    context, page, errors = _open(browser, live_server, reader, case)

    # Release: the dialog opens; "Keep reading" keeps the claim, "Release the case" releases.
    page.click("#release")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "Release this case" in dialog.inner_text()
    screenshots(page, "confirm-release")
    page.click("#confirm-no")
    assert dialog.is_hidden()
    case.refresh_from_db()
    assert case.claimed_by_id == reader.pk

    # Work the server cannot keep (the claim was released elsewhere) makes leaving ask first.
    page.locator("#viewer").focus()
    page.keyboard.press("c")
    page.wait_for_selector("#review-form[data-draft-state=saved]")
    review_release(case=Case.objects.get(pk=case.pk), user=reader)
    page.fill("textarea[name^=comment_]", "not kept")
    page.wait_for_selector("#review-form[data-draft-state=error]")
    assert "no longer hold this case" in page.locator("#draft-status").inner_text()
    dialogs: list[str] = []

    def on_dialog(d) -> None:
        dialogs.append(d.type)
        d.dismiss()  # stay on the page

    page.on("dialog", on_dialog)
    page.click("a[href$='/review/']")
    page.wait_for_timeout(300)
    assert dialogs == ["beforeunload"]
    assert "/review/cases/" in page.url
    # The release itself, confirmed.
    review_claim(case=Case.objects.get(pk=case.pk), user=reader)
    page.remove_listener("dialog", on_dialog)
    page.on("dialog", lambda d: d.accept())
    page.click("#release")
    page.click("#confirm-yes")
    page.wait_for_url(f"**{reverse('review:queue')}")
    case.refresh_from_db()
    assert case.claimed_by_id is None
    assert [e for e in errors if "409" not in e] == [], errors
    context.close()


def test_viewer_measures_in_mm_with_pixel_spacing_and_in_pixels_without(
    live_server,
    two_image_case,  # noqa: F811
    browser,
    screenshots,
):
    """Image 1 carries DICOM pixel spacing (0.5 mm rows, 0.25 mm columns); image 2 has none. Also
    1:1 zoom, window presets and drag-to-window, and the overlay layer for extra boxes."""
    case = two_image_case
    first = case.images.order_by("position").first()
    first.dicom_metadata = {"PixelSpacing": [0.5, 0.25]}
    first.save(update_fields=["dicom_metadata"])
    reader = factories.RadiologistFactory(username="rad_measure")
    context, page, errors = _open(browser, live_server, reader, case)
    stage = page.locator("#viewer-stage").bounding_box()
    width = first.width

    def drag(fx0, fy0, fx1, fy1):
        box = page.locator("#viewer-stage").bounding_box()
        page.mouse.move(box["x"] + box["width"] * fx0, box["y"] + box["height"] * fy0)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * fx1, box["y"] + box["height"] * fy1, steps=4)
        page.mouse.up()

    page.locator("#viewer").focus()
    page.keyboard.press("m")
    assert page.locator("#measure-toggle").get_attribute("aria-pressed") == "true"
    drag(0.2, 0.5, 0.6, 0.5)  # horizontal: 40 % of the width, 0.25 mm per column
    text = page.locator("#measure-readout").inner_text()
    expected = 0.4 * width * 0.25
    value = float(text.split("Distance: ")[1].split(" mm")[0])
    assert value == pytest.approx(expected, rel=0.03), text
    assert page.locator("#measure-line").get_attribute("visibility") == "visible"
    screenshots(page, "measure-mm")

    page.keyboard.press("]")  # image 2: no spacing, so pixels, labelled as such
    page.wait_for_selector("#viewer[data-loaded='1']")
    drag(0.5, 0.2, 0.5, 0.7)
    text = page.locator("#measure-readout").inner_text()
    assert "px (image pixels: no pixel spacing" in text
    pixels = float(text.split("Distance: ")[1].split(" px")[0])
    assert pixels == pytest.approx(0.5 * case.images.order_by("position").last().height, rel=0.05)

    # 1:1: the stage is as wide on screen as the image has pixels.
    page.click('[data-action="actual"]')
    assert page.locator("#viewer-stage").bounding_box()["width"] == pytest.approx(
        case.images.order_by("position").last().width, rel=0.01
    )
    page.click('[data-action="reset"]')
    # Presets and drag-to-window move the level/window and show them.
    page.select_option("#wl-preset", "150,140")
    assert page.locator("#wl-level").input_value() == "150"
    assert page.locator("#wl-window").input_value() == "140"
    page.locator("#viewer").focus()
    page.keyboard.press("w")
    drag(0.5, 0.5, 0.6, 0.4)  # right widens, up raises the level
    assert int(page.locator("#wl-window").input_value()) > 140
    assert int(page.locator("#wl-level").input_value()) > 150
    assert (
        "level " + page.locator("#wl-level").input_value()
        in page.locator("#viewer-status").inner_text()
    )
    # One more overlay layer of boxes (image pixels), e.g. model candidates.
    page.evaluate(
        "() => window.reviewViewer.setBoxLayer('candidates', [{x0: 10, y0: 10, x1: 50, y1: 40, score: 0.9}], 'box-candidate')"
    )
    assert page.locator("#viewer-layers rect.box-candidate").count() == 1
    assert stage["width"] > 0
    assert errors == [], errors
    context.close()
