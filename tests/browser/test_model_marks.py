"""The model's suspected fracture sites in a real browser, under the real Content-Security-Policy:
the case page shows them as the prediction arrives (no reload), with the sentence, the scores and a
keyboard-operable toggle, and without serious accessibility violations."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import Case, Prediction
from diagnosis.services.cases import case_create
from diagnosis.services.models import model_version_register
from diagnosis.services.prediction_results import prediction_run_batch
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, wait_for_js, watch_errors
from tests.browser.test_accessibility import axe_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct-horse-battery-9"  # factories.UserFactory


@pytest.fixture(scope="module")
def tiny_locator(tmp_path_factory):
    from ml.testing import make_tiny_locator_artifact

    return make_tiny_locator_artifact(tmp_path_factory.mktemp("marks-model") / "loc", size=64)


def _visible(page, selector: str) -> bool:
    return page.locator(selector).first.is_visible()


def test_case_page_shows_the_marks_as_the_prediction_arrives_and_toggles_them(
    live_server, transactional_db, browser, screenshots, tiny_locator, sample_paths
):
    model_version_register(artifact_dir=tiny_locator, activate=True)
    owner = factories.ClinicianFactory(username="clin_marks")
    with mock.patch(
        "diagnosis.services.predictions.prediction_run_batch_task.apply_async"
    ) as dispatch:  # no worker here: the test runs the prediction itself, below
        case = case_create(
            user=owner,
            patient_ref="MARKS-1",
            body_part="hand",
            clinical_question="",
            files=[SimpleUploadedFile(sample_paths[0].name, sample_paths[0].read_bytes())],
        )
    dispatch.assert_called_once()

    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, owner.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('diagnosis:case_detail', args=[case.uuid])}")
    page.wait_for_selector("#prediction-progress-bar")
    assert page.locator("svg.model-marks").count() == 0
    with page.expect_response(lambda r: "/status" in r.url and r.status == 200):
        pass  # the page polls the status JSON
    page.evaluate("() => { window.loadedOnce = 'yes'; }")  # gone if the page reloads

    counts = prediction_run_batch(
        prediction_ids=list(case.images.values_list("predictions", flat=True))
    )
    assert counts["done"] == 1
    prediction = Prediction.objects.get(image__case=case)
    stored = prediction.candidates
    assert 1 <= len(stored) <= 3  # the tiny locator's card: at most 3, no score cut

    # The next poll sees the result; the page swaps it in without reloading.
    page.wait_for_selector("svg.model-marks", timeout=20_000)
    assert page.evaluate("() => window.loadedOnce") == "yes"
    assert page.locator("#case-results").get_attribute("data-in-flight") == "0"
    assert page.locator("#prediction-progress").count() == 0
    assert Case.objects.get(pk=case.pk).status == Case.Status.PREDICTED
    assert "No final reading yet" in page.locator("#case-headline").inner_text()
    wait_for_js(
        page,
        "() => [...document.querySelectorAll('img.heatmap, img.radiograph')]"
        ".every(img => img.complete && img.naturalWidth > 0)",
    )

    # One dashed box per stored candidate, best first, each labelled with its score.
    marks = page.locator("svg.model-marks g.model-mark")
    assert marks.count() == len(stored)
    labels = page.locator("svg.model-marks text.mark-label").all_text_contents()
    assert labels == [f"{c['score']:.2f}" for c in stored]
    first = page.locator("svg.model-marks rect.mark-box").first
    assert float(first.get_attribute("x")) == pytest.approx(stored[0]["x0"])
    assert float(first.get_attribute("y")) == pytest.approx(stored[0]["y0"])
    dash = first.evaluate("el => getComputedStyle(el).strokeDasharray")
    assert dash not in ("", "none")  # dashed, unlike the radiologists' solid boxes
    sentence = page.locator("[data-testid=marks-sentence]").inner_text()
    n = len(stored)
    assert sentence.startswith(f"The model marks {n} suspected site{'s' if n != 1 else ''}"), (
        sentence
    )
    legend = page.locator("[data-testid=overlay-legend]").inner_text()
    assert "not an outline of the fracture" in legend
    assert "Model marks" in legend

    # The toggle sits beside the heat-map toggle and works from the keyboard.
    toggle = page.locator(".marks-toggle")
    controls = page.locator(".heatmap-controls")
    assert controls.locator(".heatmap-toggle").count() == 1
    assert controls.locator(".marks-toggle").count() == 1
    screenshots(page, "marks-shown")
    toggle.focus()
    page.keyboard.press("Space")
    assert not toggle.is_checked()
    assert not _visible(page, "svg.model-marks")
    assert _visible(page, "img.heatmap")  # the heat-map has its own toggle
    screenshots(page, "marks-hidden")
    page.keyboard.press("Space")
    assert toggle.is_checked()
    assert _visible(page, "svg.model-marks")

    assert axe_violations(page) == []
    assert errors == [], errors  # no script errors, no CSP violations
