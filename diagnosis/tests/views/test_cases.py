"""Case list and case detail pages: scoping, filters, pagination, audit."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from diagnosis.models import AuditEvent, BodyPart, Case
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db

LIST_URL = "/"


def _listed_refs(response) -> list[str]:
    return re.findall(r"<td>(PSN-[\w-]+|REF-[\w-]+)</td>", response.content.decode())


def test_anonymous_is_sent_to_login():
    response = Client().get(LIST_URL)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_clinician_sees_only_their_own_cases(clinician, clinician_b, client_for):
    factories.CaseFactory(created_by=clinician, patient_ref="REF-A1")
    factories.CaseFactory(created_by=clinician, patient_ref="REF-A2")
    factories.CaseFactory(created_by=clinician_b, patient_ref="REF-B1")
    response = client_for(clinician).get(LIST_URL)
    assert response.status_code == 200
    assert sorted(_listed_refs(response)) == ["REF-A1", "REF-A2"]
    assert b"REF-B1" not in response.content


@pytest.mark.parametrize("reader", ["radiologist", "admin_user"])
def test_readers_and_admins_see_every_case(request, reader, clinician, clinician_b, client_for):
    factories.CaseFactory(created_by=clinician, patient_ref="REF-A1")
    factories.CaseFactory(created_by=clinician_b, patient_ref="REF-B1")
    response = client_for(request.getfixturevalue(reader)).get(LIST_URL)
    assert sorted(_listed_refs(response)) == ["REF-A1", "REF-B1"]


def test_list_is_paginated_newest_first_and_keeps_filters(clinician, client_for):
    for n in range(30):
        factories.CaseFactory(created_by=clinician, patient_ref=f"REF-{n:03d}")
    client = client_for(clinician)
    first = client.get(LIST_URL)
    assert len(_listed_refs(first)) == 25
    assert _listed_refs(first)[0] == "REF-029"
    assert b"Page 1 of 2" in first.content
    second = client.get(LIST_URL, {"page": 2})
    assert _listed_refs(second) == [f"REF-{n:03d}" for n in range(4, -1, -1)]
    # Out-of-range and junk page numbers fall back to a valid page instead of failing.
    assert client.get(LIST_URL, {"page": 99}).status_code == 200
    assert client.get(LIST_URL, {"page": "x"}).status_code == 200
    filtered = client.get(LIST_URL, {"status": "received", "q": "REF-0"})
    assert "status=received&amp;q=REF-0" in filtered.content.decode()


def test_status_body_part_and_reference_filters(clinician, client_for):
    factories.CaseFactory(created_by=clinician, patient_ref="REF-HAND-Q", status="queued")
    factories.CaseFactory(
        created_by=clinician, patient_ref="REF-LEG-P", status="predicted", body_part=BodyPart.LEG
    )
    factories.CaseFactory(created_by=clinician, patient_ref="OTHER-1", status="predicted")
    client = client_for(clinician)
    assert _listed_refs(client.get(LIST_URL, {"status": "predicted"})) == ["REF-LEG-P"]
    assert _listed_refs(client.get(LIST_URL, {"body_part": "leg"})) == ["REF-LEG-P"]
    assert sorted(_listed_refs(client.get(LIST_URL, {"q": "ref-"}))) == ["REF-HAND-Q", "REF-LEG-P"]
    both = client.get(LIST_URL, {"q": "REF", "status": "queued", "body_part": "hand"})
    assert _listed_refs(both) == ["REF-HAND-Q"]
    # Unknown filter values are ignored rather than failing or matching nothing.
    assert len(_listed_refs(client.get(LIST_URL, {"status": "bogus", "body_part": "x"}))) == 2


def test_search_cannot_reach_foreign_cases(clinician, clinician_b, client_for):
    factories.CaseFactory(created_by=clinician_b, patient_ref="REF-SECRET")
    response = client_for(clinician).get(LIST_URL, {"q": "REF-SECRET"})
    assert _listed_refs(response) == []
    assert b"No cases match these filters" in response.content


def test_list_query_count_does_not_grow_with_cases(
    clinician, client_for, django_assert_max_num_queries
):
    for _ in range(25):
        factories.XrayImageFactory(case=factories.CaseFactory(created_by=clinician))
    client = client_for(clinician)
    client.get(LIST_URL)  # warm the session
    with django_assert_max_num_queries(12):
        response = client.get(LIST_URL)
    assert len(_listed_refs(response)) == 25


def test_each_list_page_view_is_audited_once_without_the_search_text(clinician, client_for):
    client = client_for(clinician)
    before = AuditEvent.objects.count()
    client.get(LIST_URL, {"q": "REF-XYZ", "status": "queued"})
    event = AuditEvent.objects.get(pk__gt=0, action="case.list")
    assert AuditEvent.objects.count() == before + 1
    assert event.actor_id == clinician.pk
    assert event.extra["search"] is True
    assert event.extra["status"] == "queued"
    assert "REF-XYZ" not in str(event.extra)


def test_detail_shows_the_case_and_audits_one_view(clinician, client_for):
    case = factories.CaseFactory(created_by=clinician, patient_ref="REF-DETAIL")
    factories.XrayImageFactory(case=case)
    client = client_for(clinician)
    before = AuditEvent.objects.count()
    response = client.get(reverse("diagnosis:case_detail", args=[case.uuid]))
    assert response.status_code == 200
    assert b"REF-DETAIL" in response.content
    assert str(case.uuid).encode() in response.content
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.latest("pk")
    assert (event.action, event.object_type, event.object_id, event.actor_id) == (
        "case.view",
        "case",
        str(case.uuid),
        clinician.pk,
    )


def test_foreign_and_unknown_cases_answer_404_and_the_refusal_is_audited(
    clinician, clinician_b, client_for
):
    foreign = factories.CaseFactory(created_by=clinician_b)
    unknown = uuid.uuid4()
    client = client_for(clinician)
    assert client.get(reverse("diagnosis:case_detail", args=[foreign.uuid])).status_code == 404
    assert client.get(reverse("diagnosis:case_detail", args=[unknown])).status_code == 404
    assert client.get("/cases/not-a-uuid/").status_code == 404  # no route: not about a case
    rows = AuditEvent.objects.filter(action="access.denied").order_by("pk")
    # The same answer for a foreign and a missing case, and the same audit row shape.
    assert [(r.actor_id, r.object_id, r.extra["reason"]) for r in rows] == [
        (clinician.pk, str(foreign.uuid), "not_found"),
        (clinician.pk, str(unknown), "not_found"),
    ]
    assert not AuditEvent.objects.filter(action="case.view").exists()


def test_radiologist_opens_any_case(clinician, radiologist, client_for):
    case = factories.CaseFactory(created_by=clinician)
    response = client_for(radiologist).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    assert response.status_code == 200


def test_user_content_is_escaped(clinician, client_for):
    case = factories.CaseFactory(
        created_by=clinician, clinical_question="<script>alert(1)</script> pain"
    )
    response = client_for(clinician).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    assert b"<script>alert(1)</script>" not in response.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt; pain" in response.content


def test_pages_answer_only_get(clinician, client_for):
    case = factories.CaseFactory(created_by=clinician)
    client = client_for(clinician)
    assert client.post(LIST_URL).status_code == 405
    assert client.post(reverse("diagnosis:case_detail", args=[case.uuid])).status_code == 405
    assert Case.objects.count() == 1


def test_cancel_needs_the_csrf_token(clinician):
    case = factories.CaseFactory(created_by=clinician)
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    url = reverse("diagnosis:case_cancel", args=[case.uuid])
    assert client.post(url).status_code == 403
    case.refresh_from_db()
    assert case.status == Case.Status.RECEIVED
    page = client.get(reverse("diagnosis:case_detail", args=[case.uuid]))
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1)
    response = client.post(url, {"csrfmiddlewaretoken": token.decode()})
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == Case.Status.CANCELLED
    assert b"The case was cancelled." in client.get(response["Location"]).content
    assert AuditEvent.objects.filter(action="case.cancel", object_id=str(case.uuid)).count() == 1


def test_cancel_of_a_reviewed_case_is_refused_with_a_message(clinician, client_for):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.REVIEWED)
    client = client_for(clinician)
    page = client.get(reverse("diagnosis:case_detail", args=[case.uuid]))
    assert b"case-cancel-form" not in page.content
    response = client.post(reverse("diagnosis:case_cancel", args=[case.uuid]), follow=True)
    assert response.status_code == 200
    assert b"cannot be cancelled" in response.content
    case.refresh_from_db()
    assert case.status == Case.Status.REVIEWED
