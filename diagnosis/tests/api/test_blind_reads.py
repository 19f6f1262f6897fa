"""Blind second reads (issue #13, point 4): until a case is final a read is visible only to its
reader, administrators and (at adjudication) the adjudicator; the clinician gets the final reading
only, and readers are never shown by user name. One rule (selectors.reads) for the API, the pages
and the webhooks, checked here per role."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import Case, Review
from diagnosis.services.webhooks import webhook_payload
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(clinician, radiologist, radiologist_b, admin_user):
    third = factories.RadiologistFactory(username="rad_c")
    radiologist.first_name, radiologist.last_name = "Ann", "First"
    radiologist.save(update_fields=["first_name", "last_name"])
    return {
        "clinician": clinician,
        "first_reader": radiologist,
        "second_reader": radiologist_b,
        "adjudicator": third,
        "admin": admin_user,
    }


@pytest.fixture
def second_read_case(people):
    """Waiting for its second read: read 1 by the first reader says 'fractured'."""
    case = factories.CaseFactory(
        created_by=people["clinician"], status="in_review", needs_second_read=True
    )
    image = factories.XrayImageFactory(case=case, position=0)
    factories.PredictionFactory(image=image, probability=0.7)
    Review.objects.create(
        image=image, reviewer=people["first_reader"], decision="confirm", final_label="fractured"
    )
    return case


def _detail(user, case, issue_token, bearer) -> dict:
    raw, _ = issue_token(user, ["read"])
    response = bearer(raw).get(f"/api/v1/cases/{case.uuid}/")
    assert response.status_code == 200, response.content
    return response.json()


def _read_numbers(body: dict) -> list[int]:
    return [read["read_number"] for image in body["images"] for read in image["reads"]]


@pytest.mark.parametrize(
    ("role", "sees"),
    [
        ("clinician", []),
        ("second_reader", []),  # the second read is blind
        ("adjudicator", []),  # not at the adjudication stage yet
        ("first_reader", [1]),  # their own read
        ("admin", [1]),
    ],
)
def test_before_the_second_read_a_read_is_its_readers(
    people, second_read_case, issue_token, bearer, role, sees
):
    body = _detail(people[role], second_read_case, issue_token, bearer)
    assert _read_numbers(body) == sees
    assert body["review"]["reviewed_by"] is None
    assert body["review"]["final_label"] is None
    assert "rad_a" not in json.dumps(body)  # never the user name


@pytest.mark.parametrize(
    ("role", "sees"),
    [
        ("clinician", []),
        ("first_reader", [1]),
        ("second_reader", [2]),
        ("adjudicator", [1, 2]),  # what they adjudicate
        ("admin", [1, 2]),
    ],
)
def test_at_adjudication_the_adjudicator_sees_both_reads(
    people, second_read_case, issue_token, bearer, role, sees
):
    image = second_read_case.images.get()
    Review.objects.create(
        image=image,
        reviewer=people["second_reader"],
        decision="correct",
        final_label="not_fractured",
        read_number=2,
    )
    Case.objects.filter(pk=second_read_case.pk).update(needs_adjudication=True)
    second_read_case.refresh_from_db()
    assert _read_numbers(_detail(people[role], second_read_case, issue_token, bearer)) == sees


@pytest.mark.parametrize("role", ["clinician", "first_reader", "second_reader", "admin"])
def test_once_final_everyone_who_sees_the_case_sees_the_reading(
    people, second_read_case, issue_token, bearer, role
):
    Case.objects.filter(pk=second_read_case.pk).update(
        status="reviewed", final_label="fractured", reviewed_at=timezone.now()
    )
    body = _detail(people[role], second_read_case, issue_token, bearer)
    assert _read_numbers(body) == [1]
    assert body["review"]["final_label"] == "fractured"
    assert body["review"]["reviewed_by"] == "Ann First"  # display name
    assert body["images"][0]["reads"][0]["reviewer"] == "Ann First"
    assert "rad_a" not in json.dumps(body)


def test_pages_follow_the_same_rule(people, second_read_case, client_for):
    """The second reader's review screen hides read 1; the clinician's case page shows readers by
    display name once final."""
    screen = client_for(people["second_reader"]).get(
        reverse("review:case", args=[second_read_case.uuid])
    )
    assert screen.status_code == 200
    assert all(not entry["reads"] for entry in screen.context["items"])
    Case.objects.filter(pk=second_read_case.pk).update(
        status="reviewed", final_label="fractured", reviewed_at=timezone.now()
    )
    page = client_for(people["clinician"]).get(
        reverse("diagnosis:case_detail", kwargs={"case_uuid": second_read_case.uuid})
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "Ann First" in text
    assert "rad_a" not in text


def test_webhooks_carry_the_final_reading_only(second_read_case):
    waiting = webhook_payload(case=second_read_case, event="case.predicted")
    assert waiting["case"]["final_label"] is None
    assert "rad_a" not in json.dumps(waiting)
    Case.objects.filter(pk=second_read_case.pk).update(
        status="reviewed", final_label="fractured", reviewed_at=timezone.now()
    )
    second_read_case.refresh_from_db()
    final = webhook_payload(case=second_read_case, event="case.reviewed")
    assert final["case"]["final_label"] == "fractured"
    assert "rad_a" not in json.dumps(final)
