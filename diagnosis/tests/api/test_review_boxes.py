"""Fracture boxes through the API: several boxes per read with their origin, the older `region`
(one box) still accepted, boxes in the case results, and no box on a "No fracture" read."""

from __future__ import annotations

import pytest

from diagnosis.models import Review
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db

A = {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.1}
B = {"x": 0.5, "y": 0.5, "w": 0.05, "h": 0.08}


@pytest.fixture(autouse=True)
def _single_read(settings):
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False


@pytest.fixture
def reader(radiologist, issue_token, bearer):
    raw, _ = issue_token(radiologist, ["read", "review"])
    return bearer(raw)


@pytest.fixture
def fracture_case(clinician):
    version = factories.ModelVersionFactory(version="v1", thresholds={"balanced": 0.5})
    case = factories.CaseFactory(created_by=clinician, status="predicted", priority=0.9)
    image = factories.XrayImageFactory(case=case, position=0)
    factories.PredictionFactory(
        image=image,
        model_version=version,
        probability=0.9,
        label="fractured",
        labels={"balanced": "fractured"},
    )
    return case


def post_read(client, case, **read):
    client.post(f"/api/v1/review/cases/{case.uuid}/claim/")
    image = case.images.get()
    return client.post(
        f"/api/v1/review/cases/{case.uuid}/reads/",
        {"reads": [{"image_id": image.pk, **read}]},
        format="json",
    )


def test_several_boxes_are_stored_and_returned(
    reader, fracture_case, clinician, bearer, issue_token
):
    boxes = [{**A, "origin": "model_accepted"}, {**B, "origin": "model_moved"}, B]
    response = post_read(reader, fracture_case, decision="confirm", boxes=boxes)
    assert response.status_code == 200, response.content
    expected = [
        {**A, "origin": "model_accepted"},
        {**B, "origin": "model_moved"},
        {**B, "origin": "reader"},
    ]
    assert Review.objects.get().boxes == expected
    (read,) = response.json()["images"][0]["reads"]
    assert read["boxes"] == expected
    # The clinician who sent the case reads the same boxes once the case is reviewed.
    raw, _ = issue_token(clinician, ["read"])
    detail = bearer(raw).get(f"/api/v1/cases/{fracture_case.uuid}/").json()
    assert detail["images"][0]["reads"][0]["boxes"] == expected


def test_region_is_still_accepted_as_one_box(reader, fracture_case):
    response = post_read(reader, fracture_case, decision="confirm", region=A)
    assert response.status_code == 200, response.content
    assert response.json()["images"][0]["reads"][0]["boxes"] == [{**A, "origin": "reader"}]


def test_read_without_boxes_returns_an_empty_list(reader, fracture_case):
    response = post_read(reader, fracture_case, decision="confirm")
    assert response.json()["images"][0]["reads"][0]["boxes"] == []


@pytest.mark.parametrize(
    "read",
    [
        {"decision": "correct", "boxes": [A]},  # corrected to "No fracture"
        {"decision": "correct", "region": A},
        {"decision": "confirm", "boxes": [A], "region": B},
        {"decision": "confirm", "boxes": [{**A, "origin": "robot"}]},
        {"decision": "confirm", "boxes": [{**A, "w": 0.95}]},  # beyond the right edge
        {"decision": "confirm", "boxes": [A] * 21},
        {"decision": "confirm", "boxes": {"x": 0.1}},
    ],
)
def test_bad_boxes_are_400_and_nothing_is_saved(reader, fracture_case, read):
    response = post_read(reader, fracture_case, **read)
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"code", "message", "extra"}
    assert body["message"]
    assert not Review.objects.exists()


def test_no_fracture_box_refusal_says_why(reader, fracture_case):
    body = post_read(reader, fracture_case, decision="correct", boxes=[A]).json()
    assert body["code"] == "invalid_read"
    assert "A box marks a fracture" in body["message"]


def test_schema_documents_boxes(clinician, client_for):
    schema = client_for(clinician).get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    read_in = components["ReadInputRequest"]["properties"]
    assert read_in["boxes"]["type"] == "array"
    assert "Deprecated" in read_in["region"]["description"]
    read_out = components["ReadOutput"]["properties"]
    assert read_out["boxes"]["type"] == "array"
    assert "boxes" in components["ReadOutput"]["required"]
