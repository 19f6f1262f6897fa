"""End to end in a real browser: a clinician uploads a radiograph and sees the model's result and
heat-map; a radiologist claims the case and corrects it with a box; a second radiologist, blind to
the first read, disagrees; an adjudicator sees both reads and decides; the clinician sees the final
result, the box and a notification."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from diagnosis.models import Case, Label, Review
from diagnosis.tests import factories
from tests.browser.conftest import wait_for_js, watch_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery-9"  # the factories' password
WAIT_MS = 120_000  # the first prediction imports TensorFlow in the live server's thread


@pytest.fixture
def eager_predictions(settings):
    """Predictions run in-process (the embedded mode) for this test only."""
    from fracture_portal.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def tiny_model(transactional_db, tmp_path):
    from diagnosis.services.models import model_version_register
    from ml.testing import make_tiny_artifact

    artifact = make_tiny_artifact(tmp_path / "tiny-model", size=64, seed=0)
    version, _ = model_version_register(artifact_dir=artifact, activate=True)
    # Random weights answer about 0.5: a high threshold makes the model call "no fracture", so the
    # first reader's correction is a fracture with its region.
    version.thresholds = {"balanced": 0.99, "high_sensitivity": 0.95}
    version.save(update_fields=["thresholds"])
    return version


@pytest.fixture
def second_read_rule(settings):
    settings.SECOND_READ_MODEL_POSITIVE = True
    settings.SECOND_READ_ON_DISAGREEMENT = True
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


def sign_in(browser, live_server, username: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(f"{live_server.url}{reverse('login')}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
    page.js_errors = errors  # checked at the end of each step
    return page


def no_js_errors(page) -> None:
    assert page.js_errors == [], page.js_errors


def claim_from_queue(page, live_server, case: Case) -> None:
    page.goto(f"{live_server.url}{reverse('review:queue')}")
    row = page.locator(f'tr[data-case="{case.uuid}"]')
    row.locator("button.claim").click()
    page.wait_for_url(f"**{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")


def draw_box(page, *, start=(0.3, 0.35), end=(0.55, 0.6)) -> None:
    page.keyboard.press("b")  # draw mode
    viewer = page.locator("#viewer-stage").bounding_box()
    x0 = viewer["x"] + viewer["width"] * start[0]
    y0 = viewer["y"] + viewer["height"] * start[1]
    x1 = viewer["x"] + viewer["width"] * end[0]
    y1 = viewer["y"] + viewer["height"] * end[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


@pytest.mark.usefixtures("eager_predictions", "second_read_rule")
def test_upload_predict_review_second_read_adjudicate(
    live_server, tiny_model, browser, screenshots, sample_paths
):
    clinician = factories.ClinicianFactory(username="clin_browser", email="clin@example.org")
    factories.RadiologistFactory(username="rad_first", first_name="Ada", last_name="First")
    factories.RadiologistFactory(username="rad_second", first_name="Bo", last_name="Second")
    factories.AdminFactory(username="adjudicator", first_name="Cy", last_name="Third")

    # 1. The clinician uploads a sample radiograph and sees the prediction and heat-map.
    clin = sign_in(browser, live_server, clinician.username)
    clin.goto(f"{live_server.url}{reverse('diagnosis:case_new')}")
    clin.fill("#id_patient_ref", "PSN-BROWSER-1")
    clin.select_option("#id_body_part", "hand")
    clin.fill("#id_clinical_question", "Fall on outstretched hand")
    clin.set_input_files("#id_images", str(sample_paths[0]))
    clin.click("#submit-button")
    clin.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"), timeout=WAIT_MS)
    clin.wait_for_selector(".verdict", timeout=WAIT_MS)
    clin.wait_for_selector("img.heatmap", state="attached", timeout=WAIT_MS)
    assert clin.locator("img.heatmap").evaluate("img => img.complete && img.naturalWidth > 0")
    shot = screenshots(clin, "clinician-prediction")
    case = Case.objects.get(patient_ref="PSN-BROWSER-1")
    assert case.status == Case.Status.PREDICTED
    assert case.images.get().predictions.get().label == Label.NOT_FRACTURED
    corrected = Label.FRACTURED
    no_js_errors(clin)

    # 2. The first radiologist claims it, corrects the model and draws the fracture region.
    first = sign_in(browser, live_server, "rad_first")
    claim_from_queue(first, live_server, case)
    assert first.locator("#viewer-heatmap").is_visible()
    first.keyboard.press("x")
    assert first.locator('input[data-decision="correct"]').is_checked()
    first.keyboard.press("i")  # invert, then back: the viewer tools respond to the keyboard
    assert first.locator('[data-action="invert"]').get_attribute("aria-pressed") == "true"
    first.keyboard.press("i")
    first.click('[data-action="zoom-in"]')
    first.click('[data-action="reset"]')
    draw_box(first)
    readout = first.locator("[data-testid=region-readout]").inner_text()
    assert readout.startswith("Box:"), readout
    first.fill("textarea[name^=comment_]", "Cortical step at the distal radius")
    screenshots(first, "first-read-with-box")
    # The work in progress is kept on the server: leave the page and come back to it.
    first.wait_for_selector("#review-form[data-draft-state=saved]")
    first.goto(f"{live_server.url}{reverse('review:queue')}")
    first.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    first.wait_for_selector("#viewer[data-loaded='1']")
    assert first.locator('input[data-decision="correct"]').is_checked()
    assert first.locator("textarea[name^=comment_]").input_value().startswith("Cortical step")
    assert first.locator("[data-testid=region-readout]").inner_text() == readout
    assert first.locator("#viewer-box").get_attribute("visibility") == "visible"
    assert "restored" in first.locator("#draft-status").inner_text()
    first.locator("#viewer").focus()  # shortcuts are off while typing in the comment
    first.keyboard.press("n")  # save and next
    first.wait_for_url(f"**{reverse('review:queue')}")
    no_js_errors(first)
    review = Review.objects.get(image__case=case, read_number=1)
    assert review.decision == "correct"
    assert review.final_label == corrected
    (box,) = review.boxes
    assert 0.0 <= box["x"] < box["x"] + box["w"] <= 1.0
    assert box["w"] > 0.05
    assert box["origin"] == "reader"
    case.refresh_from_db()
    assert case.needs_second_read  # the reader disagreed with the model

    # 3. The second radiologist does not see the first read, and confirms the model: disagreement.
    second = sign_in(browser, live_server, "rad_second")
    claim_from_queue(second, live_server, case)
    body = second.content()
    assert "rad_first" not in body
    assert "Ada First" not in body
    assert "Cortical step" not in body
    assert second.locator('g[data-layer="read-1"]').count() == 0
    second.keyboard.press("c")
    screenshots(second, "second-read-blind")
    second.click("#save")
    second.wait_for_url(f"**{reverse('review:queue')}")
    no_js_errors(second)
    case.refresh_from_db()
    assert case.needs_adjudication

    # 4. The adjudicator sees both reads (and the first reader's box) and decides.
    adjudicator = sign_in(browser, live_server, "adjudicator")
    claim_from_queue(adjudicator, live_server, case)
    reads = adjudicator.locator(".read-choices")
    assert "Ada First" in reads.inner_text()
    assert "Bo Second" in reads.inner_text()
    assert adjudicator.locator("input[data-decision]").count() == 0  # not framed against the model
    wait_for_js(
        adjudicator, "() => document.querySelectorAll('g[data-layer=\"read-1\"] rect').length === 1"
    )
    adjudicator.keyboard.press("1")  # sides with the first reader: a fracture
    assert adjudicator.locator('input[data-choice="1"]').is_checked()
    # the chosen read's box becomes the adjudicator's, to keep, edit or delete
    assert adjudicator.locator("[data-testid=reader-box]").count() == 1
    screenshots(adjudicator, "adjudication")
    adjudicator.click("#save")
    adjudicator.wait_for_url(f"**{reverse('review:queue')}")
    no_js_errors(adjudicator)
    case.refresh_from_db()
    assert case.status == Case.Status.REVIEWED
    assert case.final_label == corrected
    final = Review.objects.get(image__case=case, read_number=3)
    assert final.boxes == Review.objects.get(image__case=case, read_number=1).boxes

    # 5. The clinician sees the final result beside the model's, with the box, and a notification.
    clin.goto(f"{live_server.url}{reverse('diagnosis:case_detail', args=[case.uuid])}")
    clin.wait_for_selector("#review-result")
    assert clin.locator("#final-label").inner_text() == Label(corrected).label
    assert clin.locator(".result-region rect").count() == 1
    readers = clin.locator("#review-readers").inner_text()
    for reader in ("Ada First", "Bo Second", "Cy Third"):
        assert reader in readers
    assert clin.locator("#notification-badge").inner_text() == "1"
    screenshots(clin, "clinician-final-result")
    clin.click("#nav-notifications")
    clin.wait_for_selector("#notification-list .notification.unread")
    clin.locator("#notification-list .open-case").first.click()
    clin.wait_for_selector("#review-result")
    assert clin.locator("#notification-badge").count() == 0
    no_js_errors(clin)
    assert shot.exists()
