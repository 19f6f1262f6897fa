"""The model's suspected fracture sites (candidates) in API results and webhook payloads: pixel
boxes in the frame of the canonical image (whose width and height the image carries), best first,
and empty for a classifier-only model version."""

from __future__ import annotations

from unittest import mock

import pytest

from diagnosis.services.tokens import api_client_create
from diagnosis.services.webhooks import webhook_notify
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db
LIST_URL = "/api/v1/cases/"
LOCALISATION = {"output": "loc", "stride": 16, "max_candidates": 5, "min_score": 0.05}
CANDIDATES = [
    {"x0": 120.5, "y0": 80.0, "x1": 160.0, "y1": 112.5, "score": 0.81},
    {"x0": 10.0, "y0": 300.0, "x1": 42.0, "y1": 330.0, "score": 0.22},
]


@pytest.fixture
def owner_api(clinician, issue_token, bearer):
    raw, _ = issue_token(clinician, ["read"])
    return bearer(raw)


def _locator():
    return factories.ModelVersionFactory(
        architecture="efficientnet_lite0_locator", card={"localisation": LOCALISATION}
    )


def _case(user, *, version, candidates, api_client=None, status="done"):
    case = factories.CaseFactory(created_by=user, status="predicted", api_client=api_client)
    image = factories.XrayImageFactory(case=case, position=0, width=400, height=500)
    factories.PredictionFactory(
        image=image, model_version=version, candidates=candidates, status=status
    )
    return case, image


def test_detail_gives_the_candidates_in_pixels_of_the_canonical_image(owner_api, clinician):
    case, _ = _case(clinician, version=_locator(), candidates=CANDIDATES)
    (img,) = owner_api.get(f"{LIST_URL}{case.uuid}/").json()["images"]
    assert (img["width"], img["height"]) == (400, 500)
    prediction = img["prediction"]
    assert prediction["localises"] is True
    assert prediction["candidates"] == CANDIDATES  # best first, as the worker stored them
    for box in prediction["candidates"]:
        assert 0 <= box["x0"] < box["x1"] <= img["width"]
        assert 0 <= box["y0"] < box["y1"] <= img["height"]
        assert 0.0 <= box["score"] <= 1.0


def test_classifier_only_version_has_no_candidates_and_says_so(owner_api, clinician):
    classifier = factories.ModelVersionFactory(card={"version": "cls", "localisation": {}})
    case, _ = _case(clinician, version=classifier, candidates=[])
    prediction = owner_api.get(f"{LIST_URL}{case.uuid}/").json()["images"][0]["prediction"]
    assert prediction["candidates"] == []
    assert prediction["localises"] is False


def test_a_locator_that_found_no_site_localises_with_an_empty_list(owner_api, clinician):
    case, _ = _case(clinician, version=_locator(), candidates=[])
    prediction = owner_api.get(f"{LIST_URL}{case.uuid}/").json()["images"][0]["prediction"]
    assert prediction == {**prediction, "localises": True, "candidates": []}


def test_unfinished_predictions_have_no_candidates(owner_api, clinician):
    case, _ = _case(clinician, version=_locator(), candidates=CANDIDATES, status="running")
    prediction = owner_api.get(f"{LIST_URL}{case.uuid}/").json()["images"][0]["prediction"]
    assert prediction["status"] == "running"
    assert prediction["candidates"] == []


def test_stored_boxes_are_clipped_to_the_image_and_malformed_ones_left_out(owner_api, clinician):
    stored = [
        {"x0": -4.0, "y0": 490.0, "x1": 30.0, "y1": 520.0, "score": 0.5},  # over two borders
        {"x0": 50.0, "y0": 50.0, "x1": 40.0, "y1": 60.0, "score": 0.9},  # no area
        {"x0": 1.0, "y0": 1.0, "x1": 2.0, "score": 0.9},  # no y1
        {"x0": "a", "y0": 1.0, "x1": 2.0, "y1": 2.0, "score": 0.9},
        {"x0": 500.0, "y0": 1.0, "x1": 520.0, "y1": 9.0, "score": 0.7},  # right of the image
        {"x0": 5.0, "y0": 5.0, "x1": 25.0, "y1": 25.0, "score": 0.95},  # out of order
    ]
    case, _ = _case(clinician, version=_locator(), candidates=stored)
    prediction = owner_api.get(f"{LIST_URL}{case.uuid}/").json()["images"][0]["prediction"]
    assert prediction["candidates"] == [
        {"x0": 5.0, "y0": 5.0, "x1": 25.0, "y1": 25.0, "score": 0.95},
        {"x0": 0.0, "y0": 490.0, "x1": 30.0, "y1": 500.0, "score": 0.5},
    ]


def test_webhook_payload_carries_the_candidates_and_their_frame(
    clinician, django_capture_on_commit_callbacks
):
    client = api_client_create(user=clinician, name="tele", webhook_url="http://127.0.0.1:9/hook")
    case, image = _case(clinician, version=_locator(), candidates=CANDIDATES, api_client=client)
    with (
        mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        delivery = webhook_notify(case=case, event="case.predicted")
    (entry,) = delivery.payload["case"]["images"]
    assert (entry["id"], entry["width"], entry["height"]) == (image.pk, 400, 500)
    assert entry["prediction"]["localises"] is True
    assert entry["prediction"]["candidates"] == CANDIDATES


def test_webhook_payload_of_a_classifier_only_version_has_empty_candidates(
    clinician, django_capture_on_commit_callbacks
):
    client = api_client_create(user=clinician, name="tele", webhook_url="http://127.0.0.1:9/hook")
    case, _ = _case(
        clinician, version=factories.ModelVersionFactory(), candidates=[], api_client=client
    )
    with (
        mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        delivery = webhook_notify(case=case, event="case.predicted")
    prediction = delivery.payload["case"]["images"][0]["prediction"]
    assert prediction["localises"] is False
    assert prediction["candidates"] == []


def test_schema_declares_the_candidates(clinician, client_for):
    schema = client_for(clinician).get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    prediction = components["PredictionOutput"]["properties"]
    assert prediction["candidates"]["type"] == "array"
    assert "pixels of the canonical image" in prediction["candidates"]["description"]
    assert "localises" in components["PredictionOutput"]["required"]
    candidate = components["CandidateOutput"]
    assert set(candidate["properties"]) == {"x0", "y0", "x1", "y1", "score"}
    assert set(candidate["required"]) == {"x0", "y0", "x1", "y1", "score"}
    assert (
        "frame of `candidates`" in components["ImageOutput"]["properties"]["width"]["description"]
    )
