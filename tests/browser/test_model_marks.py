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
from tests.browser.test_review_viewer import two_image_case  # noqa: F401 (fixture)

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
    assert "Waiting for a radiologist" in page.locator("#review-result").inner_text()
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


@pytest.fixture
def marked_case(two_image_case):  # noqa: F811
    """The review viewer's two-image case, predicted by a model that localises: two sites on the
    first image, none on the second."""
    from diagnosis.models import ModelVersion

    first, second = two_image_case.images.order_by("position")
    ModelVersion.objects.filter(predictions__image__case=two_image_case).update(
        card={"localisation": {"output": "loc", "stride": 16, "max_candidates": 5}}
    )
    w, h = first.width, first.height
    sites = [
        {"x0": 0.2 * w, "y0": 0.3 * h, "x1": 0.35 * w, "y1": 0.4 * h, "score": 0.734},
        {"x0": 0.6 * w, "y0": 0.0, "x1": 0.7 * w, "y1": 0.1 * h, "score": 0.21},
    ]
    Prediction.objects.filter(image=first).update(candidates=sites)
    Prediction.objects.filter(image=second).update(candidates=[])
    return two_image_case, sites


def test_review_viewer_draws_the_marks_read_only_with_a_toggle(
    live_server, marked_case, browser, screenshots
):
    from diagnosis.services.reviews import review_claim

    case, sites = marked_case
    reader = factories.RadiologistFactory(username="rad_marks")
    review_claim(case=case, user=reader)
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")

    layer = "#viewer-layers g[data-layer='model']"
    page.wait_for_selector(f"{layer} rect.box-candidate", state="attached")
    rects = page.locator(f"{layer} rect.box-candidate")
    assert rects.count() == 2
    assert page.evaluate("() => !!window.FractureModelMarks && !!window.reviewViewer")
    x = float(rects.first.get_attribute("x"))
    y = float(rects.first.get_attribute("y"))
    image = case.images.order_by("position").first()
    assert x == pytest.approx(sites[0]["x0"] / image.width, abs=1e-6)  # fractions of the image
    assert y == pytest.approx(sites[0]["y0"] / image.height, abs=1e-6)
    assert page.locator(f"{layer} text.box-label").all_text_contents() == ["0.73", "0.21"]
    sentence = page.locator(".image-panel").first.locator("[data-testid=marks-sentence]")
    assert sentence.inner_text().startswith("The model marks 2 suspected sites (scores 0.73, 0.21")
    assert "Model marks" in page.locator("[data-testid=marks-legend]").inner_text()

    # The toggle hides and shows the layer (keyboard: Tab to it and press Enter).
    toggle = page.locator("#marks-toggle")
    assert toggle.get_attribute("aria-pressed") == "true"
    screenshots(page, "review-marks-shown")
    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-pressed") == "false"
    assert page.locator(layer).get_attribute("visibility") == "hidden"
    assert not rects.first.is_visible()
    page.keyboard.press("Enter")
    assert page.locator(layer).get_attribute("visibility") == "visible"
    assert rects.first.is_visible()
    page.locator("#viewer").focus()
    page.keyboard.press("k")  # the shortcut, as H is the heat-map's
    assert toggle.get_attribute("aria-pressed") == "false"
    assert not rects.first.is_visible()
    page.keyboard.press("k")
    assert rects.first.is_visible()

    # The second image has no marks: no layer and a disabled toggle; back on the first, they return.
    page.locator("#thumb-1").click()
    page.wait_for_selector("#viewer[data-loaded='1']")
    assert page.locator(layer).count() == 0
    assert toggle.is_disabled()
    page.locator("#thumb-0").click()
    page.wait_for_selector(f"{layer} rect.box-candidate", state="attached")
    assert page.locator(f"{layer} rect.box-candidate").count() == 2
    assert not toggle.is_disabled()

    assert axe_violations(page) == []
    assert errors == [], errors


def test_reviewed_case_page_toggles_readers_boxes_and_model_marks_apart(
    live_server, marked_case, browser, settings
):
    from diagnosis.services.reviews import ImageRead, review_claim, review_submit

    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    case, _ = marked_case
    owner = factories.ClinicianFactory(username="clin_reviewed_marks")
    Case.objects.filter(pk=case.pk).update(created_by=owner)
    reader = factories.RadiologistFactory(username="rad_reviewed_marks")
    first, second = case.images.order_by("position")
    review_claim(case=case, user=reader)
    review_submit(
        case=case,
        user=reader,
        reads=[
            ImageRead(
                image_id=first.pk,
                decision="confirm",
                boxes=[{"x": 0.25, "y": 0.3, "w": 0.1, "h": 0.1}],
            ),
            ImageRead(image_id=second.pk, decision="confirm"),
        ],
    )
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, owner.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('diagnosis:case_detail', args=[case.uuid])}")
    figure = page.locator("figure.result").first
    assert figure.locator("svg.reader-boxes rect.reader-box").count() == 1
    assert figure.locator("svg.model-marks rect.mark-box").count() == 2
    figure.locator(".reader-toggle").uncheck()
    assert not figure.locator("svg.reader-boxes").is_visible()
    assert figure.locator("svg.model-marks").is_visible()  # each overlay has its own toggle
    figure.locator(".marks-toggle").uncheck()
    assert not figure.locator("svg.model-marks").is_visible()
    figure.locator(".reader-toggle").check()
    assert figure.locator("svg.reader-boxes").is_visible()
    assert axe_violations(page) == []
    assert errors == [], errors
