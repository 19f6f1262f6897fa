"""The README's pictures, taken from real pages with the shipped model's real output.

The bundled model (settings.FRACTURE_MODEL_DIR) predicts three sample radiographs in this process;
a radiologist reads one of them, accepting the model's best mark as the fracture box; the pictures
are the clinician's case page and image viewer, the review queue and the review screen. With DOCS_SCREENSHOTS=1 they
are written to docs/img/, otherwise only under test-artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import Case, Prediction
from diagnosis.selectors.predictions import prediction_candidates
from diagnosis.services.cases import case_create
from diagnosis.services.models import model_version_register
from diagnosis.services.prediction_results import prediction_run_batch
from diagnosis.services.reviews import ImageRead, review_claim, review_submit
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, watch_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct-horse-battery-9"  # factories.UserFactory
ROOT = Path(__file__).resolve().parents[2]
DOCS_IMG = ROOT / "docs" / "img"
SAMPLES_DIR = ROOT / "samples"


def _predicted_case(owner, sample: str, body_part: str, question: str) -> Case:
    path = SAMPLES_DIR / f"{sample}.jpg"
    with mock.patch("diagnosis.services.predictions.prediction_run_batch_task.apply_async"):
        case = case_create(
            user=owner,
            patient_ref=f"PSN-{sample[-4:]}",
            body_part=body_part,
            clinical_question=question,
            files=[SimpleUploadedFile(path.name, path.read_bytes())],
        )
    ids = list(Prediction.objects.filter(image__case=case).values_list("pk", flat=True))
    assert prediction_run_batch(prediction_ids=ids)["done"] == 1
    return Case.objects.get(pk=case.pk)


@pytest.fixture
def shipped_world(transactional_db, settings):
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    model_version_register(artifact_dir=Path(settings.FRACTURE_MODEL_DIR), activate=True)
    clinician = factories.ClinicianFactory(username="clin_docs", first_name="Cleo", last_name="Lin")
    reader = factories.RadiologistFactory(username="rad_docs", first_name="Ray", last_name="Dio")
    other = factories.RadiologistFactory(username="rad_docs2", first_name="Ola", last_name="Two")
    reviewed = _predicted_case(clinician, "fracatlas_IMG0000470", "hand", "Fall on the hand")
    to_read = _predicted_case(clinician, "fracatlas_IMG0000479", "leg", "Twisted ankle")
    _predicted_case(clinician, "fracatlas_IMG0000145", "hand", "")
    image = reviewed.images.get()
    prediction = image.predictions.get()
    best = prediction_candidates(prediction.candidates, width=image.width, height=image.height)[0]
    mark = {
        "x": best["x0"] / image.width,
        "y": best["y0"] / image.height,
        "w": (best["x1"] - best["x0"]) / image.width,
        "h": (best["y1"] - best["y0"]) / image.height,
        "origin": "model_accepted",
    }
    review_claim(case=reviewed, user=other)
    review_submit(
        case=reviewed,
        user=other,
        reads=[ImageRead(image_id=image.pk, decision="confirm", boxes=[mark], comment="")],
    )
    review_claim(case=to_read, user=reader)
    return {"clinician": clinician, "reader": reader, "reviewed": reviewed, "to_read": to_read}


def test_documentation_screenshots(live_server, shipped_world, browser, screenshots):
    world = shipped_world
    assert Path(settings.FRACTURE_MODEL_DIR).name == "locate-256-v1"
    target = DOCS_IMG if os.environ.get("DOCS_SCREENSHOTS") == "1" else None
    shots = []
    for role, url, name, full in (
        (
            "clinician",
            reverse("diagnosis:case_detail", kwargs={"case_uuid": world["reviewed"].uuid}),
            "case-page",
            True,
        ),
        (
            "clinician",
            reverse(
                "diagnosis:image_viewer",
                kwargs={
                    "case_uuid": world["reviewed"].uuid,
                    "pk": world["reviewed"].images.get().pk,
                },
            ),
            "viewer",
            False,
        ),
        ("reader", reverse("review:queue"), "queue", True),
        (
            "reader",
            reverse("review:case", kwargs={"case_uuid": world["to_read"].uuid}),
            "review",
            False,
        ),
    ):
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        errors = watch_errors(page)
        sign_in(page, live_server.url, world[role].username, PASSWORD)
        page.goto(f"{live_server.url}{url}")
        if name == "case-page":
            page.wait_for_selector("svg.model-marks")
            assert "suspected site" in page.inner_text("#case-results")
        if name == "viewer":
            page.wait_for_selector("#viewer[data-loaded='1']")
        elif page.locator("#viewer").count():
            page.wait_for_selector("#viewer[data-loaded='1']")
            page.locator(".accept-mark").first.click()  # the best mark becomes the reader's box
            page.locator("#viewer").focus()
            page.keyboard.press("c")  # confirm
            page.keyboard.press("m")  # measure a distance
            box = page.locator("#viewer-stage").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.75)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.75, steps=3)
            page.mouse.up()
            assert "accepted" in page.locator(".accept-mark").first.inner_text()
        path = screenshots(page, name)
        if target is not None:
            page.screenshot(path=str(target / f"{name}.png"), full_page=full)
        shots.append(path)
        assert errors == [], errors
        context.close()
    assert all(p.exists() and p.stat().st_size > 10_000 for p in shots)
