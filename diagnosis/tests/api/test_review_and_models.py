"""Review endpoints (queue, claim, release, reads) and model registry endpoints through the API."""

from __future__ import annotations

from unittest import mock

import pytest
from django.utils import timezone

from diagnosis.models import AuditEvent, Case, ModelVersion, Review, WebhookDelivery
from diagnosis.services.tokens import api_client_create
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(radiologist, issue_token, bearer):
    raw, _ = issue_token(radiologist, ["read", "review"])
    return bearer(raw)


@pytest.fixture
def predicted_case(clinician):
    version = factories.ModelVersionFactory(version="v1", thresholds={"balanced": 0.5})
    case = factories.CaseFactory(created_by=clinician, status="predicted", priority=0.2)
    image = factories.XrayImageFactory(case=case, position=0)
    factories.PredictionFactory(
        image=image,
        model_version=version,
        probability=0.1,
        label="not_fractured",
        labels={"balanced": "not_fractured"},
    )
    return case


def test_queue_lists_waiting_cases(reader, predicted_case, clinician):
    factories.CaseFactory(created_by=clinician, status="queued")  # not predicted yet
    body = reader.get("/api/v1/review/queue/").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["id"] == str(predicted_case.uuid)
    assert row["stage"] == 1
    assert row["top_probability"] == pytest.approx(0.1)
    assert row["image_count"] == 1
    assert reader.get("/api/v1/review/queue/", {"stage": 2}).json()["count"] == 0
    assert reader.get("/api/v1/review/queue/", {"stage": 9}).status_code == 400


def test_claim_read_and_finish(reader, radiologist, predicted_case, settings):
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    settings.SECOND_READ_MODEL_POSITIVE = True
    claim = reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/")
    assert claim.status_code == 200, claim.content
    assert claim.json()["claimed_by"] == "rad_a"
    assert claim.json()["status"] == "in_review"
    image = predicted_case.images.get()
    response = reader.post(
        f"/api/v1/review/cases/{predicted_case.uuid}/reads/",
        {"reads": [{"image_id": image.pk, "decision": "confirm", "comment": "clear"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "reviewed"
    assert body["review"]["final_label"] == "not_fractured"
    assert body["review"]["reviewed_by"] == f"Reader {radiologist.pk}"
    assert Review.objects.get().comment == "clear"
    assert AuditEvent.objects.filter(action="review.submit").count() == 1


def test_claim_conflict_is_409(reader, predicted_case, radiologist_b, issue_token, bearer):
    raw_b, _ = issue_token(radiologist_b, ["review"])
    assert reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/").status_code == 200
    other = bearer(raw_b).post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/")
    assert other.status_code == 409
    assert other.json()["code"] == "claimed_by_other"
    assert reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/release/").status_code == 200
    assert Case.objects.get(pk=predicted_case.pk).status == "predicted"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"reads": []},
        {"reads": "confirm"},
        {"reads": [{"image_id": "one", "decision": "confirm"}]},
        {"reads": [{"image_id": 1, "decision": "maybe"}]},
        {"reads": [{"image_id": 1, "decision": "confirm", "comment": "x" * 5000}]},
        {"reads": [{"image_id": 1, "decision": "confirm", "comment": "a\x00b"}]},
        {
            "reads": [
                {"image_id": 1, "decision": "confirm", "region": {"x": 2, "y": 0, "w": 1, "h": 1}}
            ]
        },
        {"reads": [{"image_id": 10**30, "decision": "confirm"}]},
        [1, 2],
    ],
)
def test_bad_read_payloads_are_400(reader, predicted_case, payload):
    reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/")
    response = reader.post(
        f"/api/v1/review/cases/{predicted_case.uuid}/reads/", payload, format="json"
    )
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"code", "message", "extra"}
    assert not Review.objects.exists()


def test_read_for_the_wrong_images_is_400(reader, predicted_case):
    reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/")
    response = reader.post(
        f"/api/v1/review/cases/{predicted_case.uuid}/reads/",
        {"reads": [{"image_id": 999999, "decision": "confirm"}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_read"


def test_invalid_json_is_400(reader, predicted_case):
    response = reader.generic(
        "POST",
        f"/api/v1/review/cases/{predicted_case.uuid}/reads/",
        b'{"reads": [NaN',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_reviewed_case_notifies_the_api_client(
    reader, predicted_case, clinician, settings, django_capture_on_commit_callbacks
):
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    client = api_client_create(user=clinician, name="tele", webhook_url="https://example.org/h")
    Case.objects.filter(pk=predicted_case.pk).update(api_client=client)
    reader.post(f"/api/v1/review/cases/{predicted_case.uuid}/claim/")
    image = predicted_case.images.get()
    with (
        mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        reader.post(
            f"/api/v1/review/cases/{predicted_case.uuid}/reads/",
            {"reads": [{"image_id": image.pk, "decision": "confirm"}]},
            format="json",
        )
    delivery = WebhookDelivery.objects.get(event="case.reviewed")
    delay.assert_called_once_with(delivery.pk)
    assert delivery.payload["case"]["final_label"] == "not_fractured"


def test_model_versions_list_activate_and_rollback(admin_user, issue_token, bearer):
    raw, _ = issue_token(admin_user, ["admin"])
    api = bearer(raw)
    old = factories.ModelVersionFactory(version="v-old", promoted_at=timezone.now())
    factories.ModelVersionFactory(version="v-new", status="candidate", metrics={"auroc": 0.9})
    listing = api.get("/api/v1/models/").json()
    assert {row["version"] for row in listing["results"]} == {"v-old", "v-new"}
    detail = api.get("/api/v1/models/v-new/").json()
    assert detail["metrics"] == {"auroc": 0.9}
    assert detail["promoted_by"] is None
    activated = api.post("/api/v1/models/v-new/activate/")
    assert activated.status_code == 200
    assert activated.json()["status"] == "active"
    assert activated.json()["promoted_by"] == "admin_a"
    old.refresh_from_db()
    assert old.status == "retired"
    rolled = api.post("/api/v1/models/rollback/")
    assert rolled.status_code == 200, rolled.content
    assert rolled.json()["version"] == "v-old"
    assert ModelVersion.objects.get(version="v-new").status == "retired"
    assert AuditEvent.objects.filter(action="model.activate").count() == 2
    assert api.get("/api/v1/models/nope/").status_code == 404
    assert api.post("/api/v1/models/nope/activate/").status_code == 404
