"""DICOM that declares burned-in annotation is refused on both upload paths, with a reason and
what to do instead, and nothing of it is stored (issue #13, point 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, ImageDraw

from diagnosis.models import Case, XrayImage
from diagnosis.tests.imaging import builders

FIELDS = {"patient_ref": "PSN-00042", "body_part": "hand", "clinical_question": "Fall"}
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": "application/json"}


def burned_in_dicom() -> bytes:
    """A radiograph with the patient's name drawn into the pixels, flagged as such."""
    canvas = Image.fromarray(np.full((64, 256), 40, np.uint8))
    ImageDraw.Draw(canvas).text((4, 24), "DOE, JOHN MRN-0042", fill=255)
    ds = builders.dicom_dataset(np.asarray(canvas))
    ds.BurnedInAnnotation = "YES"
    ds.PatientName = "DOE^JOHN"
    return builders.dicom_bytes(ds)


def _files(settings) -> list[Path]:
    return builders.files_under(Path(settings.MEDIA_ROOT))


def _upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("scan.dcm", data, content_type="application/dicom")


@pytest.mark.django_db
def test_web_upload_refuses_burned_in_annotation(clinician, client_for, settings):
    settings.KEEP_ORIGINAL_UPLOADS = True
    response = client_for(clinician).post(
        reverse("diagnosis:case_new"), {**FIELDS, "images": [_upload(burned_in_dicom())]}, **XHR
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "burned-in annotation" in body
    assert "without burned-in annotation" in body  # what to do instead
    assert "DOE" not in body
    assert not Case.objects.exists()
    assert not XrayImage.objects.exists()
    assert _files(settings) == []


@pytest.mark.django_db
def test_api_upload_refuses_burned_in_annotation(clinician, issue_token, bearer, settings):
    settings.KEEP_ORIGINAL_UPLOADS = True
    raw, _token = issue_token(clinician, ["read", "write"])
    response = bearer(raw).post(
        "/api/v1/cases/", {**FIELDS, "images": [_upload(burned_in_dicom())]}, format="multipart"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "burned_in_annotation"
    assert "without burned-in annotation" in body["message"]
    assert not Case.objects.exists()
    assert _files(settings) == []
