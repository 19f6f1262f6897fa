"""The full-depth PNG of DICOM and 16-bit PNG images: stored with the upload, served with the
canonical image's access rules (404 to others), audited, cacheable by the browser only, and handed
to the review screen's viewer."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from diagnosis.models import AuditEvent, Case, XrayImage
from diagnosis.services.cases import case_create
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db


def _sample_dicom() -> SimpleUploadedFile:
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/dicom")


@pytest.fixture
def dicom_case(clinician, django_capture_on_commit_callbacks) -> Case:
    with django_capture_on_commit_callbacks(execute=True):
        return case_create(
            user=clinician,
            patient_ref="REF-DEPTH",
            body_part="hand",
            clinical_question="",
            files=[
                _sample_dicom(),
                SimpleUploadedFile("x.jpg", builders.progressive_jpeg(), content_type="image/jpeg"),
            ],
        )


def _depth_url(image: XrayImage) -> str:
    return reverse("diagnosis:image_depth", args=[image.case.uuid, image.pk])


def test_upload_stores_the_full_depth_png_with_its_params(dicom_case):
    dicom, jpeg = dicom_case.images.order_by("position")
    assert dicom.depth_file.name.startswith("depth/")
    assert dicom.depth_params["window"] == [1424.0, 2775.0]
    assert (dicom.depth_params["min"], dicom.depth_params["max"]) == (0.0, 3829.0)
    with dicom.depth_file.open("rb") as fh, Image.open(fh) as im:
        assert im.mode == "I;16"
        assert im.size == (dicom.width, dicom.height)
    assert not jpeg.depth_file
    assert jpeg.depth_params == {}


def test_owner_gets_the_full_depth_png(dicom_case, clinician, client_for):
    image = dicom_case.images.get(position=0)
    response = client_for(clinician).get(_depth_url(image))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, max-age=3600"
    assert response["Content-Disposition"] == f'inline; filename="image-{image.pk}-depth.png"'
    with Image.open(io.BytesIO(b"".join(response.streaming_content))) as im:
        samples = np.asarray(im)
    import pydicom

    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    original = pydicom.dcmread(path).pixel_array
    params = image.depth_params
    assert np.array_equal(samples * params["slope"] + params["intercept"], original)
    event = AuditEvent.objects.get(action="image.view")
    assert (event.actor_id, event.object_type, event.object_id) == (
        clinician.pk,
        "xrayimage",
        str(image.pk),
    )
    assert event.extra["kind"] == "depth"


def test_full_depth_access_follows_the_image(
    dicom_case, clinician_b, radiologist, admin_user, client_for, client
):
    dicom, jpeg = dicom_case.images.order_by("position")
    url = _depth_url(dicom)
    assert client_for(clinician_b).get(url).status_code == 404
    assert client_for(radiologist).get(url).status_code == 200
    assert client_for(admin_user).get(url).status_code == 200
    assert client.get(url).status_code == 302
    assert client_for(radiologist).post(url).status_code == 405
    # Another user's case in the URL, an unknown image, an image without full depth: 404.
    other = factories.CaseFactory(created_by=clinician_b)
    assert (
        client_for(clinician_b)
        .get(reverse("diagnosis:image_depth", args=[other.uuid, dicom.pk]))
        .status_code
        == 404
    )
    missing = reverse("diagnosis:image_depth", args=[dicom_case.uuid, dicom.pk + 999])
    assert client_for(radiologist).get(missing).status_code == 404
    assert client_for(radiologist).get(_depth_url(jpeg)).status_code == 404
    # Refusals are not logged as views.
    assert not AuditEvent.objects.filter(action="image.view", actor_id=clinician_b.pk).exists()


def test_a_missing_full_depth_file_is_a_404(dicom_case, radiologist, client_for):
    image = dicom_case.images.get(position=0)
    image.depth_file.storage.delete(image.depth_file.name)
    assert client_for(radiologist).get(_depth_url(image)).status_code == 404


def test_review_screen_hands_the_viewer_the_full_depth(dicom_case, radiologist, client_for):
    dicom, _jpeg = dicom_case.images.order_by("position")
    response = client_for(radiologist).get(
        reverse("review:case", kwargs={"case_uuid": dicom_case.uuid})
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-depth-url="{_depth_url(dicom)}"' in html
    assert html.count("data-depth-url=") == 1  # the JPEG has none
    start = html.index('data-depth="') + len('data-depth="')
    params = json.loads(html[start : html.index('"', start)].replace("&quot;", '"'))
    assert params == dicom.depth_params
    assert 'id="wl-readout"' in html
