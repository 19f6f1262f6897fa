"""Every refused access on a patient-data or administration route is audited (issue #13, point 3):
actor or token, client address, route, object id and reason; bursts aggregated; filterable on the
audit page. Through the real pages and API."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from diagnosis.models import AuditEvent
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()  # the burst counters live in the cache
    yield
    cache.clear()


@pytest.fixture
def foreign_case(clinician):
    """Clinician A's case, which clinician B must not see."""
    return factories.CaseFactory(created_by=clinician, status="predicted")


def _refusals():
    return AuditEvent.objects.filter(action="access.denied").order_by("pk")


def test_another_users_case_on_the_web_is_audited(clinician_b, foreign_case):
    client = Client(REMOTE_ADDR="10.1.1.1")
    client.force_login(clinician_b)
    url = reverse("diagnosis:case_detail", kwargs={"case_uuid": foreign_case.uuid})
    assert client.get(url).status_code == 404
    (row,) = _refusals()
    assert (row.actor_id, row.ip, row.outcome) == (clinician_b.pk, "10.1.1.1", "denied")
    assert (row.object_type, row.object_id) == ("case", str(foreign_case.uuid))
    assert row.extra["route"] == "diagnosis:case_detail"
    assert (row.extra["reason"], row.extra["status"], row.extra["count"]) == ("not_found", 404, 1)


def test_api_refusals_are_audited_with_the_token(clinician_b, foreign_case, issue_token, bearer):
    raw, token = issue_token(clinician_b, ["read"])
    api = bearer(raw)
    assert api.get(f"/api/v1/cases/{foreign_case.uuid}/").status_code == 404
    assert api.post("/api/v1/cases/", {}).status_code == 403  # no write scope
    found, scope = _refusals()
    assert (found.extra["token_id"], found.extra["reason"]) == (token.pk, "not_found")
    assert found.object_id == str(foreign_case.uuid)
    assert (scope.extra["reason"], scope.extra["status"]) == ("insufficient_scope", 403)
    assert scope.actor_id == clinician_b.pk


def test_a_bad_token_is_audited_by_its_public_prefix(foreign_case):
    api = Client(HTTP_AUTHORIZATION="Bearer fp_abcd1234_notthesecret")
    assert api.get(f"/api/v1/cases/{foreign_case.uuid}/").status_code == 401
    (row,) = _refusals()
    assert row.actor_id is None
    assert row.extra["token_prefix"] == "abcd1234"
    assert row.extra["reason"] == "authentication_failed"
    assert "notthesecret" not in str(row.extra)


def test_registry_and_csrf_refusals_are_audited(clinician, foreign_case):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    assert client.get(reverse("registry:index")).status_code == 403
    cancel = reverse("diagnosis:case_cancel", kwargs={"case_uuid": foreign_case.uuid})
    assert client.post(cancel).status_code == 403  # no CSRF token
    registry, csrf = _refusals()
    assert (registry.extra["route"], registry.extra["reason"]) == ("registry:index", "forbidden")
    assert (csrf.extra["reason"], csrf.object_id) == ("csrf_failed", str(foreign_case.uuid))


def test_bursts_are_aggregated(settings, clinician_b, foreign_case):
    settings.AUDIT_REFUSAL_WINDOW_SECONDS = 3600  # the burst does not straddle two windows
    client = Client()
    client.force_login(clinician_b)
    url = reverse("diagnosis:case_detail", kwargs={"case_uuid": foreign_case.uuid})
    for _ in range(25):
        assert client.get(url).status_code == 404
    assert [row.extra["count"] for row in _refusals()] == [1, 10]


def test_a_flood_from_many_sources_is_capped(settings, clinician_b, foreign_case):
    settings.AUDIT_REFUSAL_MAX_ROWS = 3
    settings.AUDIT_REFUSAL_WINDOW_SECONDS = 3600
    url = f"/api/v1/cases/{foreign_case.uuid}/"
    for n in range(30):
        assert Client(REMOTE_ADDR=f"10.2.0.{n + 1}").get(url).status_code == 401
    assert _refusals().count() == 3
    floods = AuditEvent.objects.filter(action="access.denied_flood").order_by("pk")
    assert [row.extra["flood_count"] for row in floods] == [1, 10]


def test_what_is_not_a_refusal_of_patient_data_is_not_audited(clinician, client_for):
    client = client_for(clinician)
    assert client.get("/api/v1/no-such-endpoint/").status_code == 404
    assert client.get("/no-such-page/").status_code == 404
    assert not _refusals().exists()


def test_a_refusal_the_view_audits_itself_is_not_doubled(clinician, client_for):
    assert client_for(clinician).get(reverse("review:queue")).status_code == 403
    assert AuditEvent.objects.filter(outcome="denied").count() == 1  # the view's review.access


def test_api_creation_and_cancellation_record_address_and_token(
    clinician, issue_token, bearer, sample_jpeg_bytes
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    raw, token = issue_token(clinician, ["read", "write"])
    api = bearer(raw)
    fields = {"patient_ref": "PSN-9", "body_part": "hand", "clinical_question": "Fall"}
    upload = SimpleUploadedFile("x.jpg", sample_jpeg_bytes, content_type="image/jpeg")
    created = api.post("/api/v1/cases/", {**fields, "images": [upload]}, format="multipart")
    assert created.status_code == 202, created.content
    case_id = created.json()["id"]
    assert api.post(f"/api/v1/cases/{case_id}/cancel/").status_code == 200
    for action in ("case.create", "case.cancel"):
        row = AuditEvent.objects.get(action=action)
        assert (row.ip, row.extra["token_id"]) == ("127.0.0.1", token.pk), action


def test_the_audit_page_filters_refusals(admin_user, clinician_b, foreign_case, client_for):
    superuser = factories.UserFactory(username="root", is_superuser=True, is_staff=True)
    client = client_for(clinician_b)
    client.get(reverse("diagnosis:case_detail", kwargs={"case_uuid": foreign_case.uuid}))
    client.get(reverse("diagnosis:case_list"))  # an ordinary, successful access
    page = client_for(superuser).get(
        reverse("admin:diagnosis_auditevent_changelist"), {"refusals": "all"}
    )
    assert page.status_code == 200
    rows = list(page.context["cl"].queryset)
    assert rows
    assert {row.outcome for row in rows} == {"denied"}
    assert "diagnosis:case_detail not_found x1" in page.content.decode()
