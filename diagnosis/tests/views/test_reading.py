"""The reading experience (issue #16): the final answer first on the case page and the case list,
the model's output worded as a suggestion with its operating point and meaning, one colour rule,
the queue's legend and stated order, and the Models page's metrics of a registered card."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from diagnosis.models import Case, ModelVersion, Review, ReviewDraft
from diagnosis.selectors.models import model_version_operating_point
from diagnosis.services.reviews import ImageRead, InvalidReadError, review_claim, review_submit
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case
from diagnosis.views.review import priority_reasons

pytestmark = pytest.mark.django_db

# The shape of a registered artifact's card metrics (ml/weights/lite0-256-v1/card.json): nested "test".
CARD_METRICS = {
    "test": {
        "auroc": 0.866,
        "auroc_ci95": [0.816, 0.912],
        "ece": 0.036,
        "n": 506,
        "operating_points": {
            "balanced": {
                "threshold": 0.124,
                "sensitivity": 0.771,
                "specificity": 0.761,
                "ppv": 0.388,
                "npv": 0.944,
                "confusion": {"tp": 64, "fp": 101, "tn": 322, "fn": 19},
            },
            "high_sensitivity": {
                "threshold": 0.085,
                "sensitivity": 0.831,
                "specificity": 0.662,
                "ppv": 0.325,
                "npv": 0.952,
                "confusion": {"tp": 69, "fp": 143, "tn": 280, "fn": 14},
            },
        },
    }
}


@pytest.fixture(autouse=True)
def _rule(settings):
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 0


@pytest.fixture
def card_version(db):
    return factories.ModelVersionFactory(
        version="lite0-test",
        thresholds={"balanced": 0.124, "high_sensitivity": 0.085},
        metrics=CARD_METRICS,
    )


def _detail(client, case: Case) -> str:
    response = client.get(reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid}))
    assert response.status_code == 200
    return response.content.decode()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" ,", ",")


def test_reviewed_case_page_leads_with_the_final_reading_not_the_model(
    clinician, radiologist, client_for, card_version
):
    # The model says "no fracture" (5 % < 12.4 %); the radiologist corrects it to a fracture.
    case = predicted_case(
        probabilities=[0.05], created_by=clinician, threshold=0.124, model_version=card_version
    )
    review_claim(case=case, user=radiologist)
    review_submit(
        case=case,
        user=radiologist,
        reads=[ImageRead(image_id=case.images.get().pk, decision="correct")],
    )
    body = _detail(client_for(clinician), case)
    headline = body.index('id="case-headline"')
    assert headline < body.index('id="review-result"') < body.index('id="case-results"')
    head = _text(body[headline : body.index("</section>", headline)])
    assert "Final reading: Fracture" in head
    assert f"by Reader {radiologist.pk}" in head
    assert 'id="headline-label">Fracture<' in body
    assert 'class="flag-pos" id="headline-label"' in body
    # The model's output is below, as a suggestion, never as a coloured "No fracture" headline.
    model = _text(body[body.index('id="case-results"') :])
    assert "Model: no fracture suspected, 5.0 %" in model
    assert "No fracture" not in head


def test_unreviewed_case_page_words_the_model_as_a_suggestion_with_its_meaning(
    clinician, client_for, card_version
):
    case = predicted_case(
        probabilities=[0.13], created_by=clinician, threshold=0.124, model_version=card_version
    )
    body = _detail(client_for(clinician), case)
    head = _text(body[body.index('id="case-headline"') : body.index('id="case-results"')])
    assert "No final reading yet" in head
    text = _text(body[body.index('id="case-results"') :])
    assert (
        "Model: suspected fracture, 13.0 % (flagged at or above the balanced threshold of 12.4 %)"
        in text
    )
    assert "38.8 % of flagged images had a fracture (PPV)" in text
    assert "94.4 % of unflagged images had none (NPV)" in text
    assert "16.4 % of images fractured" in text  # prevalence from the confusion counts
    assert "best balances sensitivity and specificity" in text


def test_negative_heatmap_is_explained(clinician, client_for, card_version):
    case = predicted_case(
        probabilities=[0.02], created_by=clinician, threshold=0.124, model_version=card_version
    )
    factories.PredictionFactory._meta.model.objects.filter(image__case=case).update(
        heatmap="heatmaps/x.png"
    )
    text = _text(_detail(client_for(clinician), case))
    assert "The model did not flag this image" in text
    assert "it does not mark a fracture" in text
    assert "colour scale above: how much each area raised the fracture score" in text  # legend


def test_operating_point_reads_flat_and_nested_metrics(card_version):
    nested = model_version_operating_point(card_version, "high_sensitivity")
    assert nested["ppv"] == 0.325
    assert nested["npv"] == 0.952
    assert nested["threshold"] == 0.085
    flat = factories.ModelVersionFactory(
        metrics={**CARD_METRICS["test"], "positives": 83},
        thresholds={"balanced": 0.124},
        status=ModelVersion.Status.CANDIDATE,
    )
    point = model_version_operating_point(flat)
    assert point["ppv"] == 0.388
    assert point["prevalence"] == pytest.approx(83 / 506)


def test_case_list_shows_final_reading_or_model_suggestion(
    clinician, radiologist, client_for, card_version
):
    reviewed = predicted_case(
        probabilities=[0.05], created_by=clinician, threshold=0.124, model_version=card_version
    )
    review_claim(case=reviewed, user=radiologist)
    review_submit(
        case=reviewed,
        user=radiologist,
        reads=[ImageRead(image_id=reviewed.images.get().pk, decision="correct")],
    )
    waiting = predicted_case(
        probabilities=[0.6, 0.02],
        created_by=clinician,
        threshold=0.124,
        model_version=card_version,
    )
    body = client_for(clinician).get(reverse("diagnosis:case_list")).content.decode()
    reviewed_row = _text(body[body.index(str(reviewed.uuid)[:8]) :].split("</tr>")[0])
    waiting_row = _text(body[body.index(str(waiting.uuid)[:8]) :].split("</tr>")[0])
    assert "Fracture final reading" in reviewed_row
    assert "Model: suspected fracture 60.0 %" in waiting_row
    assert "Reviewed" in reviewed_row
    assert ">2<" in body[body.index(str(waiting.uuid)[:8]) :].split("</tr>")[0]  # image count


def test_queue_colours_probability_by_the_model_flag_not_by_urgency(radiologist, client_for):
    version = factories.ModelVersionFactory(
        thresholds={"balanced": 0.124}, status=ModelVersion.Status.CANDIDATE
    )
    urgent_negative = predicted_case(
        probabilities=[0.039], threshold=0.124, model_version=version, priority=4.0
    )
    Case.objects.filter(pk=urgent_negative.pk).update(urgent=True)
    flagged = predicted_case(probabilities=[0.995], threshold=0.124, model_version=version)
    Case.objects.filter(pk=flagged.pk).update(priority=2.0)
    body = client_for(radiologist).get(reverse("review:queue")).content.decode()
    urgent_row = body[body.index(f'data-case="{urgent_negative.uuid}"') :].split("</tr>")[0]
    flagged_row = body[body.index(f'data-case="{flagged.uuid}"') :].split("</tr>")[0]
    assert 'class="prob flag-neg"' in urgent_row
    assert ">3.9 %<" in urgent_row
    assert 'class="prob flag-pos"' in flagged_row
    assert ">99.5 %<" in flagged_row
    assert "prio-bar-urgent" in urgent_row
    assert "prio-bar-suspected" in flagged_row
    # The urgent case is first, and the page says why.
    assert body.index(str(urgent_negative.uuid)) < body.index(str(flagged.uuid))
    order = _text(body[body.index('id="queue-order"') :].split("</p>")[0])
    assert "sorted by priority, highest first, then by waiting time, oldest first" in order
    assert 'id="queue-legend"' in body


@pytest.mark.parametrize(
    ("priority", "has_result", "reasons"),
    [
        (0.0, True, []),
        (1.0, True, ["near the threshold"]),
        (1.0, False, ["no model result"]),
        (3.0, True, ["suspected fracture", "near the threshold"]),
        (6.0, True, ["urgent", "suspected fracture"]),
        (7.0, True, ["urgent", "suspected fracture", "near the threshold"]),
    ],
)
def test_priority_reasons(priority, has_result, reasons):
    assert priority_reasons(priority, has_result=has_result) == reasons


def test_models_page_shows_the_registered_cards_metrics(admin_user, client_for, card_version):
    ModelVersion.objects.exclude(pk=card_version.pk).delete()
    body = client_for(admin_user).get(reverse("registry:index")).content.decode()
    table = _text(body)
    assert "0.866" in table  # AUROC from the card's "test" block
    assert "0.816–0.912" in table  # its 95 % CI
    assert "0.831" in table
    assert "0.662" in table
    assert "0.325" in table
    assert "0.952" in table


def test_releasing_a_case_already_released_says_so_in_plain_words(radiologist, client_for):
    case = predicted_case(probabilities=[0.9])
    client = client_for(radiologist)
    client.post(reverse("review:claim", kwargs={"case_uuid": case.uuid}))
    release = reverse("review:release", kwargs={"case_uuid": case.uuid})
    assert client.post(release).status_code == 302
    again = client.post(release)  # e.g. from a second tab
    assert again.status_code == 409
    text = _text(again.content.decode())
    assert "You no longer hold this case" in text
    assert "Someone else" not in text
    assert "claim_required" not in text  # no internal codes on the page


# --- Reads that survive: drafts, box rules ------------------------------------------------------------


def _draft_url(case: Case) -> str:
    return reverse("review:draft", kwargs={"case_uuid": case.uuid})


def test_draft_is_kept_per_claim_restored_and_dropped_on_save(radiologist, client_for):
    case = predicted_case(probabilities=[0.1])
    image = case.images.get()
    client = client_for(radiologist)
    client.post(reverse("review:claim", kwargs={"case_uuid": case.uuid}))
    box = {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.25}
    boxes = [{**box, "origin": "model_moved"}, {"x": 0.6, "y": 0.6, "w": 0.1, "h": 0.1}]
    draft = {str(image.pk): {"decision": "correct", "boxes": boxes, "comment": "distal radius"}}
    response = client.post(_draft_url(case), json.dumps(draft), content_type="application/json")
    assert response.status_code == 200
    assert ReviewDraft.objects.get(case=case, reviewer=radiologist).data[str(image.pk)] == {
        "decision": "correct",
        "final_label": "",
        "choice": "",
        "boxes": [{**box, "origin": "model_moved"}, {**boxes[1], "origin": "reader"}],
        "comment": "distal radius",
    }
    # Coming back to the review screen hands the draft to the page (JSON, no inline script).
    page = client.get(reverse("review:case", kwargs={"case_uuid": case.uuid})).content.decode()
    assert '<script id="review-draft" type="application/json">' in page
    assert "distal radius" in page
    # Saving the read drops the draft.
    client.post(
        reverse("review:submit", kwargs={"case_uuid": case.uuid}),
        {f"decision_{image.pk}": "correct", f"boxes_{image.pk}": json.dumps(boxes)},
    )
    assert not ReviewDraft.objects.filter(case=case).exists()
    assert Review.objects.get(image=image).boxes == [
        {**box, "origin": "model_moved"},
        {**boxes[1], "origin": "reader"},
    ]


def test_draft_needs_the_claim_and_valid_content(radiologist, radiologist_b, client_for):
    case = predicted_case(probabilities=[0.1])
    image = case.images.get()
    client_for(radiologist).post(reverse("review:claim", kwargs={"case_uuid": case.uuid}))
    other = client_for(radiologist_b).post(
        _draft_url(case),
        json.dumps({str(image.pk): {"decision": "confirm"}}),
        content_type="application/json",
    )
    assert other.status_code == 409
    assert "no longer hold this case" in other.json()["message"]
    client = client_for(radiologist)
    for bad in ({"999999": {"decision": "confirm"}}, {str(image.pk): {"decision": "maybe"}}):
        response = client.post(_draft_url(case), json.dumps(bad), content_type="application/json")
        assert response.status_code == 400
    assert client.post(_draft_url(case), "{", content_type="application/json").status_code == 400
    assert not ReviewDraft.objects.exists()
    # Releasing the claim drops a kept draft.
    client.post(
        _draft_url(case),
        json.dumps({str(image.pk): {"decision": "confirm"}}),
        content_type="application/json",
    )
    assert ReviewDraft.objects.filter(case=case).count() == 1
    client.post(reverse("review:release", kwargs={"case_uuid": case.uuid}))
    assert not ReviewDraft.objects.exists()


def test_a_box_on_a_no_fracture_read_is_refused(radiologist, client_for):
    case = predicted_case(probabilities=[0.9])  # the model flags it; "correct" = no fracture
    image = case.images.get()
    client = client_for(radiologist)
    client.post(reverse("review:claim", kwargs={"case_uuid": case.uuid}))
    response = client.post(
        reverse("review:submit", kwargs={"case_uuid": case.uuid}),
        {
            f"decision_{image.pk}": "correct",
            f"region_{image.pk}": json.dumps({"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}),
        },
    )
    assert response.status_code == 400
    assert "A box marks a fracture" in response.content.decode()
    assert not Review.objects.filter(image=image).exists()
    with pytest.raises(InvalidReadError):
        review_submit(
            case=case,
            user=radiologist,
            reads=[
                ImageRead(
                    image_id=image.pk,
                    decision="correct",
                    region={"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
                )
            ],
        )


def test_new_case_form_has_no_preselected_body_part_and_marks_required_fields(
    clinician, client_for
):
    body = client_for(clinician).get(reverse("diagnosis:case_new")).content.decode()
    select = body[
        body.index('name="body_part"') : body.index("</select>", body.index('name="body_part"'))
    ]
    assert '<option value="" selected>Choose the body part…</option>' in select
    assert select.count("selected") == 1
    label = body[body.index('for="id_patient_ref"') :].split("</label>")[0]
    assert "(required)" in label
    assert 'name="patient_ref"' in body
    assert re.search(r'<input[^>]+name="patient_ref"[^>]+required', body)


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("OperationalError('could not connect to server')", False),
        ("Prediction failed: TimeoutError: read timed out", False),
        ("The image could not be decoded: it is not a radiograph.", True),
    ],
)
def test_failure_reasons_are_shown_in_plain_words(clinician, client_for, raw, plain):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.FAILED, status_reason=raw)
    image = factories.XrayImageFactory(case=case)
    factories.PredictionFactory(
        image=image, status="failed", probability=None, label="", labels={}, error=raw
    )
    text = _text(_detail(client_for(clinician), case))
    if plain:
        assert raw in text
    else:
        assert "Error" not in text.replace("form-error", "")
        assert "A technical fault stopped the model on this image" in text
