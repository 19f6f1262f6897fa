"""Case creation through the API: multipart upload -> 202, Idempotency-Key, bad input (files,
fields, JSON, sizes) -> 4xx in the one error format with nothing stored, cancel."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from diagnosis.models import AuditEvent, Case, XrayImage
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders

URL = "/api/v1/cases/"
FIELDS = {"patient_ref": "PSN-77", "body_part": "hand", "clinical_question": "Fall on wrist"}


@pytest.fixture
def writer(clinician, issue_token, bearer):
    raw, token = issue_token(clinician, ["read", "write"])
    api = bearer(raw)
    api.token = token
    return api


def _upload(data: bytes, name: str = "x.jpg", content_type: str = "image/jpeg"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def _media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
def test_create_returns_202_with_status_url(writer, sample_paths, clinician):
    files = [_upload(p.read_bytes(), p.name) for p in sample_paths[:2]]
    response = writer.post(URL, {**FIELDS, "urgent": "true", "images": files}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    case = Case.objects.get(uuid=body["id"])
    assert body["status_url"].endswith(f"/api/v1/cases/{case.uuid}/")
    assert body["replayed"] is False
    assert case.created_by == clinician
    assert case.source == "api"
    assert case.api_client == writer.token.client
    assert case.urgent is True
    assert case.images.count() == 2
    status = writer.get(body["status_url"])
    assert status.status_code == 200
    assert len(status.json()["images"]) == 2
    assert AuditEvent.objects.filter(action="case.create", object_id=str(case.uuid)).count() == 1


@pytest.mark.django_db
def test_idempotency_key_returns_the_same_case(writer, sample_jpeg_bytes):
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-4711"}
    first = writer.post(
        URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, format="multipart", **headers
    )
    again = writer.post(
        URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, format="multipart", **headers
    )
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["replayed"] is True
    assert Case.objects.count() == 1
    assert XrayImage.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"patient_ref": "PSN-78"},
        {"body_part": "leg"},
        {"clinical_question": "Another question"},
        {"urgent": "true"},
        {"images": "other-file"},
        {"images": "two-files"},
    ],
    ids=["patient", "body-part", "question", "urgent", "other-file", "more-files"],
)
def test_idempotency_key_reused_with_a_different_body_is_422(
    writer, sample_jpeg_bytes, change, settings
):
    """A replay must be the same request: anything different is refused (issue #13), not
    answered with the first case."""
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-4712"}
    first = writer.post(URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, **headers)
    assert first.status_code == 202
    images = {
        "other-file": [_upload(builders.progressive_jpeg())],
        "two-files": [_upload(sample_jpeg_bytes), _upload(builders.progressive_jpeg())],
    }.get(change.get("images"), [_upload(sample_jpeg_bytes)])
    again = writer.post(URL, {**FIELDS, **change, "images": images}, **headers)
    assert again.status_code == 422, again.content
    assert again.json()["code"] == "idempotency_key_reused"
    assert Case.objects.count() == 1
    assert XrayImage.objects.count() == 1
    same = writer.post(URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, **headers)
    assert same.status_code == 200  # the very same request is still a replay


@pytest.mark.django_db
def test_idempotency_keys_are_per_user(writer, sample_jpeg_bytes, clinician_b, issue_token, bearer):
    raw_b, _ = issue_token(clinician_b, ["write"])
    headers = {"HTTP_IDEMPOTENCY_KEY": "same-key"}
    a = writer.post(URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, **headers)
    b = bearer(raw_b).post(URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, **headers)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_case(
    clinician, issue_token, bearer, sample_jpeg_bytes
):
    raw, _ = issue_token(clinician, ["write"])
    results: list[int] = []
    barrier = threading.Barrier(2)

    def post() -> None:
        try:
            barrier.wait()
            response = bearer(raw).post(
                URL,
                {**FIELDS, "images": [_upload(sample_jpeg_bytes)]},
                HTTP_IDEMPOTENCY_KEY="race-1",
            )
            results.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in results) in ([200, 202], [202, 202])
    assert len({case_id for _, case_id in results}) == 1
    assert Case.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("bad", builders.BAD_INPUTS, ids=lambda bad: bad.id)
def test_bad_files_are_refused_and_nothing_is_stored(writer, bad, settings):
    if bad.code == "file_too_large":
        settings.UPLOAD_MAX_FILE_BYTES = builders.OVERSIZE_LIMIT
    upload = _upload(bad.build(), bad.filename, bad.content_type)
    response = writer.post(URL, {**FIELDS, "images": [upload]}, format="multipart")
    assert response.status_code == bad.status, response.content
    body = response.json()
    assert body["code"] == bad.code
    assert set(body) == {"code", "message", "extra"}
    assert not Case.objects.exists()
    assert _media_files(settings) == []


@pytest.mark.django_db
def test_one_bad_file_among_good_ones_stores_nothing(writer, sample_jpeg_bytes, settings):
    files = [_upload(sample_jpeg_bytes), _upload(builders.html_page(), "y.png", "image/png")]
    response = writer.post(URL, {**FIELDS, "images": files}, format="multipart")
    assert response.status_code == 400
    assert response.json()["extra"]["files"][0]["index"] == 1
    assert not Case.objects.exists()
    assert _media_files(settings) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "x.php%00.jpg", "a" * 300 + ".jpg", "evil\u202egpj.exe", "nul\x00.jpg"],
)
def test_hostile_filenames_are_stored_under_generated_names(writer, sample_jpeg_bytes, name):
    response = writer.post(URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes, name)]})
    assert response.status_code == 202, response.content
    image = XrayImage.objects.get()
    assert ".." not in image.file.name
    assert "passwd" not in image.file.name
    assert "\x00" not in image.original_name


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"patient_ref": "John Smith"}, "patient_ref"),
        ({"patient_ref": "PSN\x00-1"}, "patient_ref"),
        ({"patient_ref": "P" * 10_000}, "patient_ref"),
        ({"patient_ref": ""}, "patient_ref"),
        ({"body_part": "spleen"}, "body_part"),
        ({"body_part": "h" * 100_000}, "body_part"),
        ({"clinical_question": "x" * 2001}, "clinical_question"),
        ({"clinical_question": "pain\x00"}, "clinical_question"),
        ({"urgent": "maybe"}, "urgent"),
    ],
)
def test_bad_fields_are_400(writer, sample_jpeg_bytes, fields, field, settings):
    response = writer.post(URL, {**FIELDS, **fields, "images": [_upload(sample_jpeg_bytes)]})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body["extra"]["fields"]
    assert not Case.objects.exists()
    assert _media_files(settings) == []


@pytest.mark.django_db
def test_missing_images_is_400(writer):
    response = writer.post(URL, FIELDS)
    assert response.status_code == 400
    assert "images" in response.json()["extra"]["fields"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"patient_ref": 12, "body_part": ["hand"], "images": "nope"},
        {"patient_ref": None, "body_part": {"a": 1}},
        [1, 2, 3],
        "just a string",
    ],
)
def test_json_body_is_415(writer, payload):
    response = writer.post(URL, payload, format="json")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.django_db
def test_malformed_multipart_is_400(writer):
    response = writer.generic(
        "POST", URL, b"--xx\r\ngarbage", content_type="multipart/form-data; boundary=xx"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message", "extra"}


@pytest.mark.django_db
def test_101_files_is_400(writer, settings):
    tiny = builders.encode(builders.Image.fromarray(builders.gradient(8, 8)), "PNG")
    files = [_upload(tiny, f"{i}.png", "image/png") for i in range(101)]
    response = writer.post(URL, {**FIELDS, "images": files})
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_files"
    assert not Case.objects.exists()


@pytest.mark.django_db
def test_1001_fields_is_400(writer, sample_jpeg_bytes):
    data = {**FIELDS, **{f"f{i}": "x" for i in range(1001)}, "images": [_upload(sample_jpeg_bytes)]}
    response = writer.post(URL, data)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_fields"


@pytest.mark.django_db
def test_body_over_the_cap_is_413(writer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = writer.post(URL, {**FIELDS, "clinical_question": "x" * 5000})
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


@pytest.mark.django_db
def test_bad_idempotency_key_is_400(writer, sample_jpeg_bytes):
    response = writer.post(
        URL, {**FIELDS, "images": [_upload(sample_jpeg_bytes)]}, HTTP_IDEMPOTENCY_KEY="k" * 200
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"


@pytest.mark.django_db
def test_cancel(writer, clinician):
    case = factories.CaseFactory(created_by=clinician, status="queued")
    response = writer.post(f"{URL}{case.uuid}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    again = writer.post(f"{URL}{case.uuid}/cancel/")
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_state"


def test_upload_helper_builds_real_images():
    # the fixtures above rely on builders producing decodable images
    tiny = builders.encode(builders.Image.fromarray(builders.gradient(8, 8)), "PNG")
    assert builders.Image.open(io.BytesIO(tiny)).size == (8, 8)


@pytest.mark.django_db
def test_a_1000_character_file_name_is_refused_for_that_reason(writer, sample_jpeg_bytes):
    body, content_type = builders.multipart_body(
        FIELDS, file_name="x" * 996 + ".jpg", data=sample_jpeg_bytes
    )
    response = writer.generic("POST", URL, body, content_type=content_type)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "file_name_too_long"
    assert "file name is too long" in answer["message"]
    assert Case.objects.count() == 0
