"""One request-size limit for every path (issue 12, point 4): settings.DATA_UPLOAD_MAX_MEMORY_SIZE
(env UPLOAD_MAX_REQUEST_BYTES) counts the whole body, files included, in the browser intake and the
API alike; a request over it is answered 413 `request_too_large` in the path's error format,
refused from its Content-Length before the body is read, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from diagnosis.models import Case, XrayImage
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db

API_URL = "/api/v1/cases/"
PAGE_URL = reverse("diagnosis:case_new")
FIELDS = {"patient_ref": "PSN-413", "body_part": "hand", "clinical_question": "Fall"}
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": "application/json"}


class _UnreadableBody:
    """A wsgi.input that fails the test if anything reads it."""

    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read")

    readline = read


def _files(sample_paths: list[Path], n: int) -> list[SimpleUploadedFile]:
    data = sample_paths[0].read_bytes()
    return [SimpleUploadedFile(f"x{i}.jpg", data, content_type="image/jpeg") for i in range(n)]


def _nothing_stored(settings) -> bool:
    return (
        Case.objects.count() == 0
        and XrayImage.objects.count() == 0
        and not builders.files_under(settings.MEDIA_ROOT)
    )


@pytest.fixture
def limit_three_images(settings, sample_paths):
    """A limit that three sample images fit under and five do not (each file is far below the
    per-file limit, so only the request limit can refuse them)."""
    size = sample_paths[0].stat().st_size
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * size
    assert size < settings.UPLOAD_MAX_FILE_BYTES
    return 4 * size


def test_api_counts_the_files_against_the_request_limit(
    limit_three_images, sample_paths, clinician, issue_token, bearer, settings
):
    raw, _ = issue_token(clinician, ["read", "write"])
    api = bearer(raw)
    response = api.post(API_URL, {**FIELDS, "images": _files(sample_paths, 5)}, format="multipart")
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "extra"}
    assert body["code"] == "request_too_large"
    assert body["extra"]["limit"] == limit_three_images
    assert _nothing_stored(settings)
    # Under the limit the same upload is accepted.
    ok = api.post(API_URL, {**FIELDS, "images": _files(sample_paths, 3)}, format="multipart")
    assert ok.status_code == 202, ok.content[:300]


def test_browser_intake_has_the_same_limit(limit_three_images, sample_paths, clinician, settings):
    client = Client()
    client.force_login(clinician)
    data = {**FIELDS, "images": _files(sample_paths, 5)}
    script = client.post(PAGE_URL, data, **XHR)
    assert script.status_code == 413
    assert script.json()["code"] == "request_too_large"
    page = client.post(PAGE_URL, {**FIELDS, "images": _files(sample_paths, 5)})
    assert page.status_code == 413
    assert page["Content-Type"].startswith("text/html")
    assert b'data-code="request_too_large"' in page.content
    assert _nothing_stored(settings)


@pytest.mark.parametrize("path", [API_URL, PAGE_URL, "/review/", "/accounts/login/"])
def test_refused_from_the_header_before_the_body_is_read(path, clinician, issue_token, settings):
    """224 MB declared (the campaign's seven 32 MB DICOMs): refused unread, on every path."""
    raw, _ = issue_token(clinician, ["read", "write"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(7 * 32_000_000),
        **{"wsgi.input": _UnreadableBody()},
    )
    assert response.status_code == 413
    assert _nothing_stored(settings)
