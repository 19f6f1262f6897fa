"""The audit trail: exactly one row per PHI read/write and auth event; append-only everywhere,
the Django admin included (row-level immutability is tested in tests/models/test_audit_event.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from diagnosis.models import AuditEvent
from diagnosis.services.audit import audit_record
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()


def _events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("pk"))


def test_one_event_per_login_logout_and_failed_login(clinician):
    client = Client()
    client.post(reverse("login"), {"username": "clin_a", "password": "wrong-one-123"})
    client.post(reverse("login"), {"username": "clin_a", "password": PASSWORD})
    client.post(reverse("logout"))
    events = _events()
    assert [(e.action, e.outcome) for e in events] == [
        ("auth.login_failed", "failure"),
        ("auth.login", "success"),
        ("auth.logout", "success"),
    ]
    failed, login, logout = events
    assert failed.actor_id is None
    assert failed.actor_username == "clin_a"
    assert (login.actor_id, login.object_type, login.object_id) == (
        clinician.pk,
        "user",
        str(clinician.pk),
    )
    assert logout.actor_id == clinician.pk
    assert all(e.ip == "127.0.0.1" for e in events)
    assert all(e.created_at.utcoffset() == timedelta(0) for e in events)  # aware, UTC


def test_password_is_never_recorded(clinician):
    Client().post(reverse("login"), {"username": "clin_a", "password": "Secret-Guess-991"})
    event = AuditEvent.objects.get()
    assert "Secret-Guess-991" not in str(
        [event.actor_username, event.object_id, event.extra, event.action]
    )


def test_one_event_per_case_view(clinician, client_for):
    case = factories.CaseFactory(created_by=clinician)
    client = client_for(clinician)
    client.get(reverse("diagnosis:case_detail", args=[case.uuid]))
    client.get(reverse("diagnosis:case_detail", args=[case.uuid]))
    views = _events(action="case.view")
    assert len(views) == 2
    assert {(e.object_type, e.object_id, e.actor_id) for e in views} == {
        ("case", str(case.uuid), clinician.pk)
    }


def test_one_event_per_case_create(clinician, sample_jpeg_bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from diagnosis.services.cases import case_create

    upload = SimpleUploadedFile("x.jpg", sample_jpeg_bytes, content_type="image/jpeg")
    case = case_create(
        user=clinician,
        patient_ref="REF-AUDIT-1",
        body_part="hand",
        clinical_question="",
        files=[upload],
    )
    creates = _events(action="case.create")
    assert len(creates) == 1
    assert (creates[0].object_id, creates[0].actor_id) == (str(case.uuid), clinician.pk)


def test_audit_record_keeps_actor_object_ip_and_outcome(rf, radiologist):
    request = rf.get("/", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="203.0.113.9")
    request.user = radiologist
    case = factories.CaseFactory()
    event = audit_record(action="case.view", request=request, obj=case, outcome="denied")
    event.refresh_from_db()
    assert (event.actor_id, event.actor_username) == (radiologist.pk, "rad_a")
    assert (event.object_type, event.object_id) == ("case", str(case.uuid))
    assert event.ip == "192.0.2.7"  # the client cannot choose its address via X-Forwarded-For
    assert event.outcome == "denied"


# --- the Django admin cannot change history, superusers included --------------------------------


@pytest.fixture
def superuser_client(db):
    user = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def test_superuser_cannot_add_change_or_delete_audit_events_in_admin(superuser_client, clinician):
    event = audit_record(action="case.view", actor=clinician, object_type="case", object_id="x")
    count = AuditEvent.objects.count()
    changelist = superuser_client.get("/admin/diagnosis/auditevent/")
    assert changelist.status_code == 200
    assert b"delete_selected" not in changelist.content
    change_url = f"/admin/diagnosis/auditevent/{event.pk}/change/"
    page = superuser_client.get(change_url)
    assert page.status_code == 200  # view only
    assert b'name="_save"' not in page.content
    assert superuser_client.post(change_url, {"action": "tampered"}).status_code == 403
    assert (
        superuser_client.get(f"/admin/diagnosis/auditevent/{event.pk}/delete/").status_code == 403
    )
    assert (
        superuser_client.post(
            f"/admin/diagnosis/auditevent/{event.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert superuser_client.get("/admin/diagnosis/auditevent/add/").status_code == 403
    bulk = superuser_client.post(
        "/admin/diagnosis/auditevent/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.count() >= count
    assert AuditEvent.objects.filter(pk=event.pk, action="case.view").exists()


@pytest.mark.parametrize(
    "model", ["case", "xrayimage", "prediction", "review", "trainingrun", "datasetsnapshot"]
)
def test_history_models_are_read_only_in_admin(superuser_client, model):
    assert superuser_client.get(f"/admin/diagnosis/{model}/").status_code == 200
    assert superuser_client.get(f"/admin/diagnosis/{model}/add/").status_code == 403


def test_admin_case_page_view_is_audited(superuser_client, clinician):
    case = factories.CaseFactory(created_by=clinician)
    superuser_client.get(f"/admin/diagnosis/case/{case.pk}/change/")
    event = AuditEvent.objects.get(action="case.view")
    assert (event.object_id, event.extra) == (str(case.uuid), {"via": "admin"})


def test_every_model_is_registered_in_the_admin():
    from django.apps import apps
    from django.contrib import admin
    from django.contrib.auth import get_user_model

    missing = [
        model.__name__
        for model in apps.get_app_config("diagnosis").get_models()
        if not admin.site.is_registered(model)
    ]
    assert missing == []
    assert admin.site.is_registered(get_user_model())
