"""Case reads through the API: list (filters, capped pagination), detail with results, downloads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis.models import AuditEvent, Case, Review
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db
LIST_URL = "/api/v1/cases/"


@pytest.fixture
def owner_api(clinician, issue_token, bearer):
    raw, _ = issue_token(clinician, ["read", "write"])
    return bearer(raw)


def test_list_shows_only_own_cases(owner_api, clinician, clinician_b):
    mine = factories.CaseFactory.create_batch(3, created_by=clinician)
    factories.CaseFactory.create_batch(2, created_by=clinician_b)
    body = owner_api.get(LIST_URL).json()
    assert body["count"] == 3
    assert {row["id"] for row in body["results"]} == {str(c.uuid) for c in mine}
    assert AuditEvent.objects.filter(action="case.list", actor_id=clinician.pk).count() == 1


def test_list_filters(owner_api, clinician):
    old = factories.CaseFactory(created_by=clinician, status="reviewed", body_part="leg")
    Case.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    new = factories.CaseFactory(created_by=clinician, status="queued", body_part="hand")

    def ids(**params):
        response = owner_api.get(LIST_URL, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(status="reviewed") == {str(old.uuid)}
    assert ids(body_part="hand") == {str(new.uuid)}
    cutoff = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=cutoff) == {str(new.uuid)}
    assert ids(created_before=cutoff) == {str(old.uuid)}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "nonsense"},
        {"body_part": "x" * 5000},
        {"created_after": "yesterday"},
        {"created_before": "2020-13-45T99:00:00"},
        {"created_after": "0001-01-01T00:00:00+14:00"},
        {"status": "queued\x00"},
    ],
)
def test_bad_filters_are_400(owner_api, params):
    response = owner_api.get(LIST_URL, params)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [("5", 5), ("100", 100), (str(10**9), 100), ("-3", 25), ("abc", 25), ("0", 25)],
)
def test_page_size_is_capped(owner_api, clinician, page_size, expected):
    factories.CaseFactory.create_batch(101, created_by=clinician)
    response = owner_api.get(LIST_URL, {"page_size": page_size})
    assert response.status_code == 200
    assert len(response.json()["results"]) == expected


@pytest.mark.parametrize("page", ["999", "0", "x", str(10**30)])
def test_page_out_of_range_is_404_not_500(owner_api, page):
    response = owner_api.get(LIST_URL, {"page": page})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_detail_has_the_result(owner_api, case_with_result, radiologist):
    image = case_with_result.images.get()
    Review.objects.create(
        image=image, reviewer=radiologist, decision="confirm", final_label="fractured"
    )
    Case.objects.filter(pk=case_with_result.pk).update(
        status="reviewed", final_label="fractured", reviewed_at=timezone.now()
    )
    body = owner_api.get(f"{LIST_URL}{case_with_result.uuid}/").json()
    assert body["id"] == str(case_with_result.uuid)
    assert body["status"] == "reviewed"
    assert body["review"]["status"] == "reviewed"
    assert body["review"]["final_label"] == "fractured"
    assert body["review"]["reviewed_by"] == f"Reader {radiologist.pk}"  # never the user name
    (img,) = body["images"]
    prediction = img["prediction"]
    assert prediction["probability"] == pytest.approx(0.83)
    assert prediction["label"] == "fractured"
    assert prediction["operating_point"] == "balanced"
    assert prediction["threshold"] == 0.5
    assert prediction["status"] == "done"
    assert prediction["heatmap_url"].endswith(f"/images/{image.pk}/heatmap/")
    assert body["model_version"] == prediction["model_version"]
    assert img["reads"][0]["reviewer"] == f"Reader {radiologist.pk}"
    assert AuditEvent.objects.filter(
        action="case.view", object_id=str(case_with_result.uuid)
    ).exists()


def test_detail_of_a_fresh_case_has_no_prediction(owner_api, clinician):
    case = factories.CaseFactory(created_by=clinician, status="queued")
    factories.XrayImageFactory(case=case)
    body = owner_api.get(f"{LIST_URL}{case.uuid}/").json()
    assert body["images"][0]["prediction"] is None
    assert body["model_version"] is None
    assert body["review"]["status"] == "pending"


@pytest.mark.parametrize("kind", ["file", "heatmap"])
def test_downloads_are_attachments_with_nosniff(owner_api, case_with_result, kind):
    image = case_with_result.images.get()
    response = owner_api.get(f"{LIST_URL}{case_with_result.uuid}/images/{image.pk}/{kind}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("attachment;")
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    action = "image.download" if kind == "file" else "heatmap.download"
    assert AuditEvent.objects.filter(action=action).count() == 1


def test_download_with_accept_png(owner_api, case_with_result):
    image = case_with_result.images.get()
    url = f"{LIST_URL}{case_with_result.uuid}/images/{image.pk}/file/"
    assert owner_api.get(url, HTTP_ACCEPT="image/png").status_code == 200
    missing = owner_api.get(
        f"{LIST_URL}{case_with_result.uuid}/images/0/file/", HTTP_ACCEPT="image/png"
    )
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/json"
    assert missing.json()["code"] == "not_found"


def test_file_lost_from_storage_is_404_not_500(owner_api, case_with_result):
    image = case_with_result.images.get()
    image.file.storage.delete(image.file.name)
    response = owner_api.get(f"{LIST_URL}{case_with_result.uuid}/images/{image.pk}/file/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_image_of_another_case_is_404(owner_api, case_with_result, clinician):
    other = factories.CaseFactory(created_by=clinician)
    image = case_with_result.images.get()
    response = owner_api.get(f"{LIST_URL}{other.uuid}/images/{image.pk}/file/")
    assert response.status_code == 404


def test_heatmap_missing_is_404(owner_api, clinician):
    case = factories.CaseFactory(created_by=clinician)
    image = factories.XrayImageFactory(case=case)
    response = owner_api.get(f"{LIST_URL}{case.uuid}/images/{image.pk}/heatmap/")
    assert response.status_code == 404


def test_unknown_api_paths_are_404_in_the_error_format(owner_api, bearer):
    for path in ("/api/v1/nope/", "/api/v1/cases/not-a-uuid/", "/api/v1/cases/x/images/1/file/"):
        for client in (owner_api, bearer(None)):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json() == {
                "code": "not_found",
                "message": "No such API endpoint.",
                "extra": {},
            }


def test_invalid_uuid_is_404(owner_api):
    assert owner_api.get(f"{LIST_URL}not-a-uuid/").status_code == 404
    assert owner_api.get(f"{LIST_URL}{'f' * 36}/").status_code == 404
    assert owner_api.get(f"{LIST_URL}{'f' * 8}-ffff-ffff-ffff-{'f' * 12}/").status_code == 404


def test_list_rows_render_like_drf_fields(owner_api, clinician):
    from rest_framework import serializers

    case = factories.CaseFactory(created_by=clinician)
    row = owner_api.get(LIST_URL).json()["results"][0]
    case.refresh_from_db()
    field = serializers.DateTimeField()
    assert row["created_at"] == field.to_representation(case.created_at)
    assert row["updated_at"] == field.to_representation(case.updated_at)
    assert row["final_label"] is None
    assert row["image_count"] == 0


def test_detail_groups_predictions_and_reads_per_image_in_six_queries(
    owner_api, clinician, radiologist, django_assert_num_queries
):
    """Each image shows its newest finished prediction (else its newest attempt) and its own
    reads in order; an image without predictions has none. Queries: token, permissions, case,
    images with predictions, reads, the audit INSERT. (The case is final: before that its owner
    sees no read, see test_blind_reads.py.)"""
    case = factories.CaseFactory(created_by=clinician, status="reviewed")
    first = factories.XrayImageFactory(case=case, position=0)
    second = factories.XrayImageFactory(case=case, position=1)
    third = factories.XrayImageFactory(case=case, position=2)
    old_version = factories.ModelVersionFactory(status="retired")
    active = factories.ModelVersionFactory()
    done = factories.PredictionFactory(image=first, model_version=old_version, probability=0.3)
    factories.PredictionFactory(
        image=first, model_version=active, status="failed", probability=None, error="oom"
    )
    factories.PredictionFactory(
        image=second, model_version=active, status="running", probability=None, label=""
    )
    second_reader = factories.RadiologistFactory(
        username="rad_second", first_name="Ada", last_name="Second"
    )
    Review.objects.create(
        image=first, reviewer=radiologist, decision="confirm", final_label="fractured"
    )
    Review.objects.create(
        image=first,
        reviewer=second_reader,
        decision="correct",
        final_label="not_fractured",
        read_number=2,
    )
    Review.objects.create(
        image=third, reviewer=radiologist, decision="confirm", final_label="not_fractured"
    )
    url = f"{LIST_URL}{case.uuid}/"
    owner_api.get(url)  # the token's first use writes last_used_at
    with django_assert_num_queries(6):
        body = owner_api.get(url).json()
    images = body["images"]
    assert [image["id"] for image in images] == [first.pk, second.pk, third.pk]
    assert body["image_count"] == 3
    assert images[0]["prediction"]["status"] == "done"
    assert images[0]["prediction"]["probability"] == pytest.approx(done.probability)
    assert images[0]["prediction"]["model_version"] == old_version.version
    assert images[0]["prediction"]["heatmap_url"] is None  # no heat-map stored
    assert [read["reviewer"] for read in images[0]["reads"]] == [
        f"Reader {radiologist.pk}",
        "Ada Second",
    ]
    assert [read["read_number"] for read in images[0]["reads"]] == [1, 2]
    assert images[1]["prediction"]["status"] == "running"
    assert images[1]["prediction"]["label"] is None
    assert images[1]["reads"] == []
    assert images[2]["prediction"] is None
    assert [read["reviewer"] for read in images[2]["reads"]] == [f"Reader {radiologist.pk}"]
    assert images[2]["file_url"].endswith(f"/cases/{case.uuid}/images/{third.pk}/file/")
    assert body["model_version"] == old_version.version
    assert body["review"]["status"] == "reviewed"


def test_list_page_in_five_queries(owner_api, clinician, django_assert_num_queries):
    """Token, permissions, COUNT, the page (image counts as a subquery), the audit INSERT."""
    for _ in range(3):
        case = factories.CaseFactory(created_by=clinician)
        factories.XrayImageFactory(case=case)
    owner_api.get(LIST_URL)  # the token's first use writes last_used_at
    with django_assert_num_queries(5):
        body = owner_api.get(LIST_URL, {"page_size": 2}).json()
    assert body["count"] == 3
    assert [row["image_count"] for row in body["results"]] == [1, 1]
