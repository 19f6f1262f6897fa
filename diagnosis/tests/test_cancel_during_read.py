"""Cancel versus read (issue 12, point 6). The rule, in both paths (web and API):

- while a reader's claim is active, the case cannot be cancelled: 409 `read_in_progress`, the
  case and the claim unchanged, and the case page offers no cancel button;
- once the claim has lapsed the submitter may cancel; a read saved afterwards is refused with a
  409 that says the case was cancelled (a refusal page on the web, the JSON error in the API),
  never a 500.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from diagnosis.models import Case, Review
from diagnosis.services.cases import case_cancel
from diagnosis.services.reviews import review_claim
from diagnosis.tests.review_helpers import predicted_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed(clinician, radiologist):
    case = predicted_case(created_by=clinician, probabilities=(0.2,))
    return review_claim(case=case, user=radiologist)


def _read_form(case: Case) -> dict[str, str]:
    image = case.images.get()
    return {f"decision_{image.pk}": "confirm", f"final_label_{image.pk}": ""}


def _lapse(case: Case) -> None:
    Case.objects.filter(pk=case.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))


def test_web_cancel_is_refused_while_a_read_is_in_progress(claimed, clinician, client_for):
    client = client_for(clinician)
    page = client.get(reverse("diagnosis:case_detail", args=[claimed.uuid]))
    assert b"case-cancel-form" not in page.content
    response = client.post(reverse("diagnosis:case_cancel", args=[claimed.uuid]), follow=True)
    assert response.status_code == 200
    assert b"is reading this case" in response.content
    claimed.refresh_from_db()
    assert claimed.status == Case.Status.IN_REVIEW
    assert claimed.claimed_by is not None


def test_api_cancel_is_refused_while_a_read_is_in_progress(claimed, clinician):
    api = APIClient()
    api.force_authenticate(clinician)
    response = api.post(f"/api/v1/cases/{claimed.uuid}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "read_in_progress"
    claimed.refresh_from_db()
    assert claimed.status == Case.Status.IN_REVIEW


def test_reader_saves_after_the_refused_cancel(claimed, clinician, radiologist, client_for):
    with pytest.raises(Exception, match="is reading this case"):
        case_cancel(case=claimed, user=clinician)
    response = client_for(radiologist).post(
        reverse("review:submit", args=[claimed.uuid]), _read_form(claimed)
    )
    assert response.status_code == 302
    assert Review.objects.filter(image__case=claimed).count() == 1


def test_web_read_after_a_lapsed_claim_and_a_cancel_is_a_409_page(
    claimed, clinician, radiologist, client_for
):
    _lapse(claimed)
    case_cancel(case=claimed, user=clinician)
    response = client_for(radiologist).post(
        reverse("review:submit", args=[claimed.uuid]), _read_form(claimed)
    )
    assert response.status_code == 409
    assert b"cancelled by its submitter" in response.content
    assert not Review.objects.filter(image__case=claimed).exists()
    # Claiming it again is refused the same way, not a 500.
    claim = client_for(radiologist).post(reverse("review:claim", args=[claimed.uuid]))
    assert claim.status_code == 409
    renew = client_for(radiologist).post(reverse("review:claim_renew", args=[claimed.uuid]))
    assert renew.status_code == 409


def test_api_read_after_a_lapsed_claim_and_a_cancel_is_a_409(claimed, clinician, radiologist):
    _lapse(claimed)
    case_cancel(case=claimed, user=clinician)
    api = APIClient()
    api.force_authenticate(radiologist)
    image = claimed.images.get()
    response = api.post(
        f"/api/v1/review/cases/{claimed.uuid}/reads/",
        {"reads": [{"image_id": image.pk, "decision": "confirm"}]},
        format="json",
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "invalid_state"
    assert "cancelled" in body["message"]
