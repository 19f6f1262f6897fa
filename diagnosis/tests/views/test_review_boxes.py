"""The review screen's boxes on the server side: the model's marks offered as suggestions to the
claim holder, several boxes posted with their origin, and no box on a "No fracture" read."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from diagnosis.models import Case, Review
from diagnosis.tests.review_helpers import predicted_case

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _single_read(settings):
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


def url(name: str, case: Case) -> str:
    return reverse(name, kwargs={"case_uuid": case.uuid})


def marked_case() -> Case:
    case = predicted_case(probabilities=[0.9])
    prediction = case.images.get().predictions.get()
    w, h = prediction.image.width, prediction.image.height
    prediction.candidates = [
        {"x0": 0.1 * w, "y0": 0.2 * h, "x1": 0.3 * w, "y1": 0.3 * h, "score": 0.8},
        {"x0": 0.5 * w, "y0": 0.5 * h, "x1": 0.6 * w, "y1": 0.7 * h, "score": 0.2},
    ]
    prediction.save(update_fields=["candidates"])
    version = prediction.model_version
    version.card = {**(version.card or {}), "localisation": {"output": "loc"}}
    version.save(update_fields=["card"])
    return case


def test_a_classifier_only_version_offers_no_suggestions(radiologist, client_for):
    case = marked_case()
    version = case.images.get().predictions.get().model_version
    version.card = {}
    version.save(update_fields=["card"])
    client = client_for(radiologist)
    client.post(url("review:claim", case))
    response = client.get(url("review:case", case))
    assert response.context["items"][0]["suggestions"] == []
    assert 'class="accept-mark"' not in response.content.decode()


def test_claim_holder_gets_the_marks_as_suggestions(radiologist, radiologist_b, client_for):
    case = marked_case()
    client = client_for(radiologist)
    client.post(url("review:claim", case))
    response = client.get(url("review:case", case))
    (entry,) = response.context["items"]
    assert [s["rank"] for s in entry["suggestions"]] == [1, 2]
    assert entry["suggestions"][0] == pytest.approx(
        {"x": 0.1, "y": 0.2, "w": 0.2, "h": 0.1, "score": 0.8, "rank": 1}, abs=1e-4
    )
    body = response.content.decode()
    assert body.count('class="accept-mark"') == 2
    assert "Accept model mark 1" in body
    # Someone without the claim sees no suggestions to accept.
    other = client_for(radiologist_b).get(url("review:case", case))
    assert 'class="accept-mark"' not in other.content.decode()


def test_posted_boxes_are_saved_with_their_origin(radiologist, client_for):
    case = marked_case()
    image = case.images.get()
    client = client_for(radiologist)
    client.post(url("review:claim", case))
    boxes = [
        {"x": 0.1, "y": 0.2, "w": 0.2, "h": 0.1, "origin": "model_accepted"},
        {"x": 0.6, "y": 0.6, "w": 0.1, "h": 0.1, "origin": "reader"},
    ]
    response = client.post(
        url("review:submit", case),
        {f"decision_{image.pk}": "confirm", f"boxes_{image.pk}": json.dumps(boxes)},
    )
    assert response.status_code == 302
    assert Review.objects.get().boxes == boxes


@pytest.mark.parametrize(
    "posted",
    [
        {"decision": "correct", "boxes": json.dumps([{"x": 0.1, "y": 0.1, "w": 0.1, "h": 0.1}])},
        {"decision": "confirm", "boxes": "[{not json"},
        {"decision": "confirm", "boxes": json.dumps([{"x": 0.1, "y": 0.1, "w": 0, "h": 0.1}])},
    ],
)
def test_bad_boxes_reshow_the_screen_with_the_reason(radiologist, client_for, posted):
    case = marked_case()
    image = case.images.get()
    client = client_for(radiologist)
    client.post(url("review:claim", case))
    response = client.post(
        url("review:submit", case),
        {f"decision_{image.pk}": posted["decision"], f"boxes_{image.pk}": posted["boxes"]},
    )
    assert response.status_code == 400
    assert "box" in response.content.decode().lower()
    assert not Review.objects.exists()
