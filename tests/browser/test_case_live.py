"""The case page while the model works: progress from the polled status JSON, then the results with
the heat-map overlay (toggle, opacity), in headless Chromium under the real Content-Security-Policy."""

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

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct-horse-battery-9"  # factories.UserFactory


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("live-model") / "tiny", size=64)


def test_case_page_follows_the_prediction_live(
    live_server, transactional_db, browser, screenshots, tiny_model, sample_paths
):
    model_version_register(artifact_dir=tiny_model, activate=True)
    owner = factories.ClinicianFactory(username="clin_live")
    with mock.patch(
        "diagnosis.services.predictions.prediction_run_batch_task.apply_async"
    ) as dispatch:  # no worker here: the test runs the prediction itself, below
        case = case_create(
            user=owner,
            patient_ref="LIVE-1",
            body_part="hand",
            clinical_question="",
            files=[
                SimpleUploadedFile(p.name, p.read_bytes(), "image/jpeg") for p in sample_paths[:2]
            ],
        )
    dispatch.assert_called_once()
    assert Case.objects.get(pk=case.pk).status == Case.Status.QUEUED

    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, owner.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('diagnosis:case_detail', args=[case.uuid])}")
    page.wait_for_selector("#prediction-progress-bar")
    assert page.locator("#case-results").get_attribute("data-in-flight") == "1"
    assert "Queued for the model" in page.locator("#prediction-progress-text").inner_text()
    with page.expect_response(lambda r: "/status" in r.url and r.status == 200):
        pass  # the page polls the status JSON
    screenshots(page, "queued")

    counts = prediction_run_batch(
        prediction_ids=list(case.images.values_list("predictions", flat=True))
    )
    assert counts["done"] == 2

    # The next poll sees `predicted` and the page reloads with the results.
    page.wait_for_selector("img.heatmap", timeout=20_000)
    assert page.locator("#case-results").get_attribute("data-in-flight") == "0"
    heatmaps = page.locator("img.heatmap")
    assert heatmaps.count() == 2
    wait_for_js(
        page,
        "() => [...document.querySelectorAll('img.heatmap, img.radiograph')]"
        ".every(img => img.complete && img.naturalWidth > 0)",
    )
    assert "Grad-CAM localisation is approximate" in page.content()
    first = page.locator("figure.result").first
    probability = Prediction.objects.filter(image__case=case).order_by("image__position").first()
    assert f"{100 * probability.probability:.1f} %" in first.inner_text()

    first.locator(".heatmap-opacity").fill("20")
    assert first.locator("img.heatmap").evaluate("img => img.style.opacity") == "0.2"
    first.locator(".heatmap-toggle").uncheck()
    assert "hidden" in (first.locator("img.heatmap").get_attribute("class") or "")
    first.locator(".heatmap-toggle").check()
    assert "hidden" not in (first.locator("img.heatmap").get_attribute("class") or "")
    screenshots(page, "predicted")
    assert errors == [], errors  # no script errors, no CSP violations
