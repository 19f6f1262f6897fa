"""The clinician's large viewer in a real browser, under the real Content-Security-Policy: the
case page's "Open viewer" button opens it for that image, the canvas loads, zoom and window change
what is shown, the heat-map, the model's marks and the radiologists' final boxes toggle, Esc goes
back to the case page with the focus on the same button, a DICOM image is windowed on its full
depth, and axe finds no serious violation."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import Case, Prediction
from diagnosis.services.cases import case_create
from diagnosis.services.reviews import ImageRead, review_claim, review_submit
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders
from tests.browser.conftest import sign_in, wait_for_js, watch_errors
from tests.browser.test_accessibility import axe_violations
from tests.browser.test_review_viewer import two_image_case  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct-horse-battery-9"  # factories.UserFactory
LOCATOR_CARD = {"localisation": {"output": "loc", "stride": 16, "max_candidates": 5}}


@pytest.fixture
def reviewed_case(two_image_case, settings):  # noqa: F811
    """The two-image case, the clinician's, with a model mark on image 1, read and final (one
    fracture box on image 1)."""
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    clinician = factories.ClinicianFactory(username="clin_viewer")
    Case.objects.filter(pk=two_image_case.pk).update(created_by=clinician)
    first, second = two_image_case.images.order_by("position")
    prediction = first.predictions.get()
    w, h = first.width, first.height
    Prediction.objects.filter(pk=prediction.pk).update(
        candidates=[{"x0": w * 0.1, "y0": h * 0.1, "x1": w * 0.3, "y1": h * 0.25, "score": 0.81}]
    )
    version = prediction.model_version
    version.card = {**(version.card or {}), **LOCATOR_CARD}
    version.save(update_fields=["card"])
    reader = factories.RadiologistFactory(username="rad_viewer_final")
    review_claim(case=two_image_case, user=reader)
    review_submit(
        case=two_image_case,
        user=reader,
        reads=[
            ImageRead(
                image_id=first.pk,
                decision="confirm",
                boxes=[{"x": 0.5, "y": 0.5, "w": 0.2, "h": 0.2}],
            ),
            ImageRead(image_id=second.pk, decision="confirm"),
        ],
    )
    assert Case.objects.get(pk=two_image_case.pk).status == Case.Status.REVIEWED
    return two_image_case, clinician, first


def _pixels(page) -> list[int]:
    return page.evaluate(
        """() => {
            const c = document.getElementById('viewer-canvas');
            const ctx = c.getContext('2d');
            return [[0.5, 0.5], [0.3, 0.6], [0.7, 0.4]].map(([fx, fy]) =>
                ctx.getImageData(Math.floor(c.width * fx), Math.floor(c.height * fy), 1, 1).data[0]);
        }"""
    )


def _layer_visible(page, name: str) -> str | None:
    return page.evaluate(
        "(n) => { const g = document.querySelector(`#viewer-layers g[data-layer='${n}']`);"
        " return g ? g.getAttribute('visibility') + ':' + g.querySelectorAll('rect').length : null; }",
        name,
    )


def test_the_clinician_opens_the_viewer_from_the_case_page(
    live_server, reviewed_case, browser, screenshots
):
    case, clinician, image = reviewed_case
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, clinician.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('diagnosis:case_detail', args=[case.uuid])}")

    # One labelled button per image, reached and pressed with the keyboard.
    buttons = page.locator("a.open-viewer")
    assert buttons.count() == 2
    assert buttons.nth(0).get_attribute("aria-label") == "Open viewer: radiograph 1"
    assert buttons.nth(1).get_attribute("aria-label") == "Open viewer: radiograph 2"
    button = page.locator(f"#open-viewer-{image.pk}")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{reverse('diagnosis:image_viewer', args=[case.uuid, image.pk])}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.wait_for_selector("#viewer-heatmap:not([hidden])")
    assert page.evaluate("() => document.activeElement.id") == "viewer"
    # The canvas fills most of the window.
    box = page.locator("#viewer").bounding_box()
    assert box["width"] > 1000
    assert box["height"] > 600

    # Zoom: the stage grows; Fit restores it.
    stage = page.locator("#viewer-stage")
    before = stage.bounding_box()
    page.keyboard.press("+")
    page.keyboard.press("+")
    assert stage.bounding_box()["width"] == pytest.approx(before["width"] * 1.5625, rel=0.01)
    page.locator("[data-action='actual']").click()
    assert stage.bounding_box()["width"] == pytest.approx(image.width, rel=0.01)
    page.keyboard.press("0")
    assert stage.bounding_box()["width"] == pytest.approx(before["width"], rel=0.01)

    # Window: a preset and the sliders change the pixels; invert flips them.
    original = _pixels(page)
    page.select_option("#wl-preset", label="Bone (high contrast)")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('150')")
    page.wait_for_timeout(100)
    assert _pixels(page) != original
    page.locator("#wl-window").fill("255")
    page.locator("#wl-level").fill("128")
    page.wait_for_timeout(100)
    assert _pixels(page) == original
    page.locator("#viewer").focus()
    page.keyboard.press("i")
    page.wait_for_selector("#viewer-status:has-text('inverted')")
    assert _pixels(page) == [255 - v for v in original]
    page.keyboard.press("i")

    # Heat-map: opacity and toggle (button and H).
    page.locator("#heatmap-opacity").fill("80")
    assert page.locator("#viewer-heatmap").evaluate("el => el.style.opacity") == "0.8"
    page.locator("#heatmap-toggle").click()
    assert page.locator("#viewer-heatmap").is_hidden()
    assert page.locator("#heatmap-toggle").get_attribute("aria-pressed") == "false"
    page.locator("#viewer").focus()
    page.keyboard.press("h")
    assert page.locator("#viewer-heatmap").is_visible()

    # The model's mark and the radiologists' final box: drawn, each toggled on its own.
    assert _layer_visible(page, "model") == "visible:1"
    assert _layer_visible(page, "final") == "visible:1"
    assert page.locator("#viewer-layers rect.box-candidate").count() == 1
    assert page.locator("#viewer-layers rect.box-final").count() == 1
    page.locator("#marks-toggle").click()
    assert _layer_visible(page, "model") == "hidden:1"
    assert page.locator("#marks-toggle").get_attribute("aria-pressed") == "false"
    page.locator("#viewer").focus()
    page.keyboard.press("k")
    assert _layer_visible(page, "model") == "visible:1"
    page.keyboard.press("r")
    assert _layer_visible(page, "final") == "hidden:1"
    assert page.locator("#final-toggle").get_attribute("aria-pressed") == "false"
    page.locator("#final-toggle").click()
    assert _layer_visible(page, "final") == "visible:1"
    screenshots(page, "case-image-viewer")

    assert axe_violations(page) == []

    # Esc: back to the case page, the focus on this image's button.
    page.locator("#viewer").focus()
    page.keyboard.press("Escape")
    page.wait_for_url(
        f"**{reverse('diagnosis:case_detail', args=[case.uuid])}#open-viewer-{image.pk}"
    )
    wait_for_js(page, f"() => document.activeElement.id === 'open-viewer-{image.pk}'")

    # The close button does the same.
    page.locator(f"#open-viewer-{image.pk}").click()
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.locator("#viewer-close").click()
    wait_for_js(page, f"() => document.activeElement.id === 'open-viewer-{image.pk}'")
    assert errors == []
    context.close()


def test_a_dicom_image_is_windowed_on_its_full_depth(live_server, browser, transactional_db):
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    clinician = factories.ClinicianFactory(username="clin_viewer_depth")
    case = case_create(
        user=clinician,
        patient_ref="REF-VIEWER",
        body_part="hand",
        clinical_question="",
        files=[SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/dicom")],
    )
    Case.objects.filter(pk=case.pk).update(status=Case.Status.PREDICTED)
    image = case.images.get()
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, clinician.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('diagnosis:image_viewer', args=[case.uuid, image.pk])}")
    page.wait_for_selector("#viewer[data-loaded='1'][data-depth='1']")
    # The file's own window, in the file's values.
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('1424')")
    assert "Full depth" in page.locator("#wl-readout").inner_text()
    assert page.locator("#heatmap-toggle").is_disabled()
    assert page.locator("#marks-toggle").is_disabled()
    assert page.locator("#final-toggle").count() == 0
    before = _pixels(page)
    page.select_option("#wl-preset", label="Full range")
    wait_for_js(page, "() => !document.getElementById('wl-readout').textContent.includes('1424')")
    page.wait_for_timeout(100)
    assert _pixels(page) != before
    assert errors == []
    context.close()
