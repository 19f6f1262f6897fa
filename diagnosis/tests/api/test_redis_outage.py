"""The API while Redis (the cache and the broker: one server in production) is unreachable (issue
12, point 2). The real Redis cache backend and the real Celery publish point at a port where no
Redis listens; requests go through the whole WSGI stack (throttle included). Uploads are accepted
and queued for the sweeper; nothing answers HTML or 500. The fault test with a killed Redis and
live workers is tests/integration/test_redis_outage.py."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from diagnosis.models import Case, Prediction
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case
from tests.integration.conftest import free_port, publishing_to

pytestmark = pytest.mark.django_db

URL = "/api/v1/cases/"
FIELDS = {"patient_ref": "PSN-503", "body_part": "hand", "clinical_question": "Fall"}


@pytest.fixture
def redis_down():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": dead,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    # Restored before the autouse fixtures' teardown, which clears the real cache.
    with override_settings(CACHES=caches), publishing_to(dead):
        yield dead


def _json_not_5xx(response) -> dict:
    assert response.status_code < 500, response.content[:300]
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    return response.json()


def test_upload_is_accepted_and_queued(
    redis_down,
    clinician,
    issue_token,
    bearer,
    sample_jpeg_bytes,
    django_capture_on_commit_callbacks,
):
    factories.ModelVersionFactory()
    raw, _ = issue_token(clinician, ["read", "write"])
    api = bearer(raw)
    image = SimpleUploadedFile("x.jpg", sample_jpeg_bytes, content_type="image/jpeg")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, {**FIELDS, "images": [image]}, format="multipart")
    assert response.status_code == 202, response.content[:300]
    body = _json_not_5xx(response)
    case = Case.objects.get(uuid=body["id"])
    # The publish failed: the case waits in `queued` with a pending prediction for the sweeper.
    assert case.status == Case.Status.QUEUED
    assert Prediction.objects.filter(image__case=case, status="pending").count() == 1
    detail = api.get(f"{URL}{case.uuid}/")
    assert detail.status_code == 200
    _json_not_5xx(detail)
    assert _json_not_5xx(api.get(URL))["count"] == 1


def test_review_claim_and_queue_work_without_the_cache(
    redis_down, radiologist, issue_token, bearer, django_capture_on_commit_callbacks
):
    case = predicted_case()
    raw, _ = issue_token(radiologist, ["read", "review"])
    api = bearer(raw)
    assert api.get("/api/v1/review/queue/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):  # drops cached counts after commit
        response = api.post(f"/api/v1/review/cases/{case.uuid}/claim/")
    assert response.status_code == 200, response.content[:300]


def test_an_unabsorbed_redis_error_is_a_json_503_with_retry_after(clinician, issue_token, bearer):
    raw, _ = issue_token(clinician, ["read"])
    with mock.patch(
        "diagnosis.api.views.api_selectors.api_case_list",
        side_effect=RedisConnectionError("Connection refused"),
    ):
        response = bearer(raw).get(URL)
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["extra"] == {"retry_after_seconds": 30}
