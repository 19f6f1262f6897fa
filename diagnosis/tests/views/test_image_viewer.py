"""The clinician's large viewer of one radiograph (/cases/<uuid>/images/<id>/view): the case
page's access rules, the full-depth data where the image has it, the model's marks, and the
radiologists' final boxes only once the case's reading is final (never a read the blind-read rule
hides). Read-only: nothing of the review flow."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import AuditEvent, Case
from diagnosis.services.cases import case_create
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db
LOCATOR_CARD = {"localisation": {"output": "loc", "stride": 16, "max_candidates": 5}}
SITE = {"x0": 120.0, "y0": 80.0, "x1": 160.0, "y1": 112.0, "score": 0.8134}


def _url(case: Case, image) -> str:
    return reverse("diagnosis:image_viewer", args=[case.uuid, image.pk])


def _data(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="viewer-data" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


@pytest.fixture
def marked_case(clinician):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    image = factories.XrayImageFactory(case=case, position=0, width=400, height=500)
    version = factories.ModelVersionFactory(card=LOCATOR_CARD)
    factories.PredictionFactory(
        image=image, model_version=version, candidates=[SITE], heatmap="heatmaps/h.png"
    )
    return case, image


@pytest.mark.parametrize("who", ["clinician", "radiologist", "admin_user"])
def test_owner_radiologist_and_admin_open_the_viewer(request, who, marked_case, client_for):
    case, image = marked_case
    user = request.getfixturevalue(who)
    response = client_for(user).get(_url(case, image))
    assert response.status_code == 200
    html = response.content.decode()
    for needed in ('id="viewer"', "js/viewer.js", "js/case_viewer.js"):
        assert needed in html
    back = reverse("diagnosis:case_detail", args=[case.uuid]) + f"#open-viewer-{image.pk}"
    assert f'href="{back}" id="viewer-close"' in html
    # Read-only: nothing of the review flow.
    for absent in ("review-form", "claim-button", "draw-toggle", "region-input", "Draw box"):
        assert absent not in html
    assert ' style="' not in html  # CSP: no inline styles
    assert "<script>" not in html  # CSP: no inline scripts


def test_another_clinician_and_anonymous_are_refused_as_on_the_case_page(
    marked_case, clinician_b, client_for, client
):
    case, image = marked_case
    other = client_for(clinician_b)
    assert other.get(reverse("diagnosis:case_detail", args=[case.uuid])).status_code == 404
    assert other.get(_url(case, image)).status_code == 404
    response = client.get(_url(case, image))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_an_image_of_another_case_is_not_found(marked_case, clinician, client_for):
    case, _ = marked_case
    foreign = factories.XrayImageFactory(case=factories.CaseFactory(created_by=clinician))
    assert client_for(clinician).get(_url(case, foreign)).status_code == 404


def test_the_page_carries_the_marks_and_heatmap_and_is_audited(marked_case, clinician, client_for):
    case, image = marked_case
    data = _data(client_for(clinician).get(_url(case, image)))
    assert data["image"] == reverse("diagnosis:image_file", args=[case.uuid, image.pk])
    assert data["heatmap"].startswith(reverse("diagnosis:heatmap_file", args=[case.uuid, image.pk]))
    assert data["marks"] == [SITE]
    assert data["final"] == []  # not read yet
    assert data["depth"] is None  # an 8-bit image
    assert (data["width"], data["height"]) == (400, 500)
    event = AuditEvent.objects.filter(action="case.view", object_id=str(case.uuid)).latest("pk")
    assert event.extra["page"] == "viewer"


def test_the_case_page_links_each_image_to_its_viewer(marked_case, clinician, client_for):
    case, image = marked_case
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    html = html.content.decode()
    assert f'id="open-viewer-{image.pk}" href="{_url(case, image)}"' in html
    assert 'aria-label="Open viewer: radiograph 1"' in html


def test_a_full_depth_image_carries_its_depth_url_and_params(
    clinician, client_for, django_capture_on_commit_callbacks
):
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    with django_capture_on_commit_callbacks(execute=True):
        case = case_create(
            user=clinician,
            patient_ref="REF-VIEW",
            body_part="hand",
            clinical_question="",
            files=[
                SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/dicom")
            ],
        )
    image = case.images.get()
    data = _data(client_for(clinician).get(_url(case, image)))
    assert data["depth"]["url"] == reverse("diagnosis:image_depth", args=[case.uuid, image.pk])
    assert data["depth"]["params"]["window"] == [1424.0, 2775.0]
    assert {"slope", "intercept"} <= set(data["depth"]["params"])


def _reviewed(clinician, settings, *, second_read: bool):
    from diagnosis.services.reviews import ImageRead, review_claim, review_submit

    settings.SECOND_READ_MODEL_POSITIVE = second_read
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    image = factories.XrayImageFactory(case=case, position=0, width=400, height=500)
    version = factories.ModelVersionFactory(card=LOCATOR_CARD)
    factories.PredictionFactory(
        image=image, model_version=version, candidates=[SITE], label="fractured"
    )
    reader = factories.RadiologistFactory(username="rad_view_1")
    review_claim(case=case, user=reader)
    review_submit(
        case=case,
        user=reader,
        reads=[
            ImageRead(
                image_id=image.pk,
                decision="confirm",
                boxes=[{"x": 0.25, "y": 0.2, "w": 0.1, "h": 0.05}],
            )
        ],
    )
    return Case.objects.get(pk=case.pk), image


def test_the_final_boxes_once_the_reading_is_final(clinician, client_for, settings):
    case, image = _reviewed(clinician, settings, second_read=False)
    assert case.status == Case.Status.REVIEWED
    response = client_for(clinician).get(_url(case, image))
    data = _data(response)
    assert [{k: round(v, 3) for k, v in b.items()} for b in data["final"]] == [
        {"x0": 100.0, "y0": 100.0, "x1": 140.0, "y1": 125.0}
    ]
    assert 'id="final-toggle"' in response.content.decode()


def test_a_first_read_awaiting_its_second_read_is_not_shown(
    clinician, radiologist, client_for, settings
):
    case, image = _reviewed(clinician, settings, second_read=True)
    assert case.status != Case.Status.REVIEWED
    for user in (clinician, radiologist):
        response = client_for(user).get(_url(case, image))
        assert _data(response)["final"] == []
        assert 'id="final-toggle"' not in response.content.decode()
