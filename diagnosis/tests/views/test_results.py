"""Case results pages: status JSON, heat-map files, staff retry, the case page partial."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from diagnosis.models import AuditEvent, Case, Prediction
from diagnosis.services import prediction_files as pred_files
from diagnosis.tests import factories
from diagnosis.tests.test_access_matrix import (
    Endpoint,
    check_endpoint,
    everyone,
    matrix_params,
    world,  # noqa: F401 (fixture)
)

DISPATCH = "diagnosis.services.predictions.prediction_run_batch_task.apply_async"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
def predicted(clinician):
    """A predicted case of clinician A: two images, both with a finished prediction and files."""
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    version = factories.ModelVersionFactory()
    for position in range(2):
        image = factories.XrayImageFactory(case=case, position=position)
        prediction = factories.PredictionFactory(
            image=image, model_version=version, probability=0.7 - 0.5 * position
        )
        rgba, overlay = pred_files.heatmap_names(prediction.pk)
        pred_files.prediction_file_store(rgba, PNG)
        pred_files.prediction_file_store(overlay, PNG)
        Prediction.objects.filter(pk=prediction.pk).update(heatmap=rgba)
    return case


def _failed_case(owner) -> Case:
    case = factories.CaseFactory(
        created_by=owner, status=Case.Status.FAILED, status_reason="Prediction failed: boom"
    )
    image = factories.XrayImageFactory(case=case)
    factories.PredictionFactory(
        image=image, status="failed", probability=None, label="", labels={}, error="boom"
    )
    return case


# --- status JSON -----------------------------------------------------------------------------------


def test_status_json_reports_progress_without_clinical_content(client_for, clinician):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTING)
    version = factories.ModelVersionFactory()
    for position, status in enumerate(["done", "running", "pending"]):
        image = factories.XrayImageFactory(case=case, position=position)
        factories.PredictionFactory(image=image, model_version=version, status=status)
    response = client_for(clinician).get(reverse("diagnosis:case_status", args=[case.uuid]))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["status"] == "predicting"
    assert data["in_flight"] is True
    assert data["progress"] == {"done": 1, "failed": 0, "total": 3, "percent": 33}
    assert [i["prediction"] for i in data["images"]] == ["done", "running", "pending"]
    assert "probability" not in response.content.decode()
    assert case.patient_ref not in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="case.status").exists()


def test_status_json_is_404_for_a_foreign_case_and_redirects_anonymous(
    client, client_for, clinician_b, predicted
):
    url = reverse("diagnosis:case_status", args=[predicted.uuid])
    assert client_for(clinician_b).get(url).status_code == 404
    assert client.get(url).status_code == 302


# --- heat-map files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["", "?kind=overlay"])
def test_heatmap_file_is_private_nosniff_png_and_audited(client_for, clinician, predicted, kind):
    image = predicted.images.get(position=0)
    url = reverse("diagnosis:heatmap_file", args=[predicted.uuid, image.pk]) + kind
    response = client_for(clinician).get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"].startswith("private")
    assert b"".join(response.streaming_content) == PNG
    events = AuditEvent.objects.filter(action="heatmap.view")
    assert events.count() == 1
    assert events.get().object_id == str(predicted.uuid)
    assert events.get().extra["image_id"] == image.pk


def test_overlay_is_rendered_from_the_heatmap_on_first_request_and_kept(client_for, clinician):
    import io

    import numpy as np
    from PIL import Image

    from ml.gradcam import heatmap_png

    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    image = factories.XrayImageFactory(case=case)  # 64 x 48 grey PNG
    prediction = factories.PredictionFactory(image=image, probability=0.9)
    heat = np.zeros((48, 64), np.float32)
    heat[10:30, 20:40] = 1.0
    rgba_name, overlay_name = pred_files.heatmap_names(prediction.pk)
    pred_files.prediction_file_store(rgba_name, heatmap_png(heat))
    Prediction.objects.filter(pk=prediction.pk).update(heatmap=rgba_name)
    url = reverse("diagnosis:heatmap_file", args=[case.uuid, image.pk]) + "?kind=overlay"

    first = client_for(clinician).get(url)
    assert first.status_code == 200
    body = b"".join(first.streaming_content)
    with Image.open(io.BytesIO(body)) as over:
        pixels = np.asarray(over.convert("RGB")).astype(int)
        assert over.size == (64, 48)
    assert abs(pixels[20, 30, 0] - pixels[20, 30, 2]) > 30  # coloured where hot
    assert pixels[2, 2, 0] == pixels[2, 2, 1] == pixels[2, 2, 2]  # grey where cold
    assert default_storage.exists(overlay_name)
    again = client_for(clinician).get(url)
    assert b"".join(again.streaming_content) == body


def test_overlay_of_an_unreadable_heatmap_is_a_404_not_an_error(client_for, clinician, predicted):
    image = predicted.images.get(position=0)
    prediction = image.predictions.get()
    default_storage.delete(pred_files.heatmap_names(prediction.pk)[1])  # PNG (RGBA, 1 x 1) remains
    url = reverse("diagnosis:heatmap_file", args=[predicted.uuid, image.pk]) + "?kind=overlay"
    assert client_for(clinician).get(url).status_code == 404
    assert client_for(clinician).get(url.replace("?kind=overlay", "")).status_code == 200


def test_heatmap_file_refuses_foreign_unknown_and_unfinished(
    client_for, clinician, clinician_b, radiologist, predicted
):
    image = predicted.images.get(position=0)
    url = reverse("diagnosis:heatmap_file", args=[predicted.uuid, image.pk])
    assert client_for(clinician_b).get(url).status_code == 404
    assert client_for(radiologist).get(url).status_code == 200
    assert client_for(clinician).get(url + "?kind=../../etc/passwd").status_code == 404
    other = factories.XrayImageFactory()  # an image of another case
    assert (
        client_for(radiologist)
        .get(reverse("diagnosis:heatmap_file", args=[predicted.uuid, other.pk]))
        .status_code
        == 404
    )
    own = Prediction.objects.get(image=image)
    other_image = predicted.images.get(position=1).predictions.get()
    assert client_for(clinician).get(f"{url}?p={own.pk}").status_code == 200
    assert client_for(clinician).get(f"{url}?p={other_image.pk}").status_code == 404
    assert client_for(clinician).get(f"{url}?p=1e3").status_code == 404
    Prediction.objects.filter(image=image).update(status="running")
    assert client_for(clinician).get(url).status_code == 404


# --- retry -------------------------------------------------------------------------------------------


def test_staff_retry_requeues_a_failed_case_and_is_audited(
    client_for, clinician, radiologist, django_capture_on_commit_callbacks
):
    case = _failed_case(clinician)
    version = Prediction.objects.get(image__case=case).model_version
    assert version.status == "active"
    url = reverse("diagnosis:case_retry", args=[case.uuid])
    with (
        mock.patch(DISPATCH) as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client_for(radiologist).post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnosis:case_detail", args=[case.uuid])
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED
    apply_async.assert_called_once()
    assert AuditEvent.objects.filter(action="case.retry", outcome="success").count() == 1


def test_retry_is_refused_to_clinicians_and_foreign_and_get(client_for, clinician, clinician_b):
    case = _failed_case(clinician)
    url = reverse("diagnosis:case_retry", args=[case.uuid])
    with mock.patch(DISPATCH) as apply_async:
        assert client_for(clinician).post(url).status_code == 403
        assert client_for(clinician_b).post(url).status_code == 404
        assert client_for(clinician).get(url).status_code == 405
    apply_async.assert_not_called()
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert AuditEvent.objects.filter(action="case.retry", outcome="denied").count() == 1


def test_retry_of_a_predicted_case_shows_an_error(client_for, admin_user, predicted):
    response = client_for(admin_user).post(
        reverse("diagnosis:case_retry", args=[predicted.uuid]), follow=True
    )
    assert response.status_code == 200
    assert "cannot be retried" in response.content.decode()
    predicted.refresh_from_db()
    assert predicted.status == Case.Status.PREDICTED


# --- case page ---------------------------------------------------------------------------------------


def test_case_page_shows_images_heatmaps_probability_and_caption(client_for, clinician, predicted):
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[predicted.uuid]))
    html = html.content.decode()
    for image in predicted.images.all():
        assert reverse("diagnosis:image_file", args=[predicted.uuid, image.pk]) in html
        assert reverse("diagnosis:heatmap_file", args=[predicted.uuid, image.pk]) in html
    assert "70.0 %" in html
    assert "flagged at or above the balanced threshold of 50.0 %" in html
    assert 'class="heatmap-opacity"' in html
    assert 'class="heatmap-toggle"' in html
    assert "Grad-CAM localisation is approximate" in html
    assert 'data-in-flight="0"' in html
    assert "js/case_live.js" in html
    assert "<script>" not in html  # CSP: no inline scripts
    assert ' style="' not in html


def test_case_page_in_flight_polls_and_shows_progress(client_for, clinician):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.QUEUED)
    factories.XrayImageFactory(case=case)
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    html = html.content.decode()
    assert 'data-in-flight="1"' in html
    assert reverse("diagnosis:case_status", args=[case.uuid]) in html
    assert 'id="prediction-progress-bar"' in html
    assert "Queued for the model" in html


def test_failed_case_page_shows_reason_and_retry_for_staff_only(client_for, clinician, radiologist):
    case = _failed_case(clinician)
    url = reverse("diagnosis:case_detail", args=[case.uuid])
    retry = reverse("diagnosis:case_retry", args=[case.uuid])
    owner_html = client_for(clinician).get(url).content.decode()
    assert "Prediction failed: boom" in owner_html
    assert retry not in owner_html
    assert retry in client_for(radiologist).get(url).content.decode()


def test_a_new_versions_pending_prediction_does_not_hide_the_finished_result(
    client_for, clinician, predicted
):
    """While a new model version works on the case, the finished result stays on the page."""
    image = predicted.images.get(position=0)
    newer = factories.ModelVersionFactory(status="candidate")
    factories.PredictionFactory(image=image, model_version=newer, status="pending")
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[predicted.uuid]))
    assert "70.0 %" in html.content.decode()


# --- access matrix rows of these endpoints -------------------------------------------------------------

RESULT_ENDPOINTS = [
    Endpoint(
        "case_status",
        "get",
        lambda w: reverse("diagnosis:case_status", args=[w.case.uuid]),
        everyone(200, other_clinician=404),
    ),
    Endpoint(
        "case_status",
        "post",
        lambda w: reverse("diagnosis:case_status", args=[w.case.uuid]),
        everyone(405, other_clinician=405),
    ),
    Endpoint(
        "case_retry",
        "post",
        lambda w: reverse("diagnosis:case_retry", args=[w.case.uuid]),
        # a predicted case cannot be retried: staff get the message on the case page
        everyone(302, owner=403, other_clinician=404),
    ),
    Endpoint(
        "case_retry",
        "get",
        lambda w: reverse("diagnosis:case_retry", args=[w.case.uuid]),
        everyone(405),
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "actor"), matrix_params(RESULT_ENDPOINTS))
def test_results_access_matrix(world, endpoint, actor):  # noqa: F811
    check_endpoint(world, endpoint, actor)
