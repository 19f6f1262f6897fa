"""The case page shows the model's suspected fracture sites: the sentence the clinician reads, the
marks drawn in the image's pixels with their scores, the toggle, and what each overlay means."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from diagnosis.models import Case
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db
LOCATOR_CARD = {"localisation": {"output": "loc", "stride": 16, "max_candidates": 5}}
SITE_A = {"x0": 120.0, "y0": 80.0, "x1": 160.0, "y1": 112.0, "score": 0.8134}
SITE_B = {"x0": 10.0, "y0": 300.0, "x1": 42.0, "y1": 330.0, "score": 0.2249}


def _page(client_for, user, *, candidates, card) -> str:
    case = factories.CaseFactory(created_by=user, status=Case.Status.PREDICTED)
    image = factories.XrayImageFactory(case=case, position=0, width=400, height=500)
    version = factories.ModelVersionFactory(card=card)
    factories.PredictionFactory(
        image=image, model_version=version, candidates=candidates, heatmap="heatmaps/h.png"
    )
    response = client_for(user).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    assert response.status_code == 200
    return response.content.decode()


def _sentence(html: str) -> str:
    match = re.search(r'<p class="marks-sentence"[^>]*>(.*?)</p>', html, re.S)
    assert match, "no marks sentence on the page"
    return re.sub(r"<[^>]+>", "", match.group(1))


def test_two_sites_are_drawn_with_their_scores_and_counted(client_for, clinician):
    html = _page(client_for, clinician, candidates=[SITE_A, SITE_B], card=LOCATOR_CARD)
    assert _sentence(html).startswith("The model marks 2 suspected sites (scores 0.81, 0.22")
    # Drawn in the canonical image's pixels, best first, each labelled with its score.
    assert 'viewBox="0 0 400 500"' in html
    rects = re.findall(
        r'<rect class="mark-box" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
        r'height="([\d.]+)"',
        html,
    )
    assert [tuple(float(v) for v in r) for r in rects] == [(120, 80, 40, 32), (10, 300, 32, 30)]
    labels = re.findall(r'<text class="mark-label"[^>]*>([^<]*)</text>', html)
    assert labels == ["0.81", "0.22"]
    assert 'class="marks-toggle" checked' in html
    assert "Model marks</label>" in html
    legend = re.search(r'data-testid="overlay-legend">(.*?)</ul>', html, re.S).group(1)
    assert "the parts of the image that drove the model’s score" in legend
    assert "not an outline of the fracture" in legend
    assert "suspected fracture sites" in legend
    assert "the reader’s own mark" in legend
    assert ' style="' not in html  # CSP: no inline styles


def test_one_site_is_singular(client_for, clinician):
    html = _page(client_for, clinician, candidates=[SITE_B], card=LOCATOR_CARD)
    assert _sentence(html).startswith("The model marks 1 suspected site (score 0.22)")


def test_a_locator_that_found_nothing_says_no_suspected_site(client_for, clinician):
    html = _page(client_for, clinician, candidates=[], card=LOCATOR_CARD)
    assert _sentence(html) == "The model marks no suspected site on this image."
    assert "0 suspected" not in html
    assert 'class="model-marks"' not in html
    assert "marks-toggle" not in html


def test_a_classifier_only_version_does_not_claim_zero_sites(client_for, clinician):
    html = _page(client_for, clinician, candidates=[], card={})
    assert _sentence(html).startswith("This model version does not mark suspected sites")
    assert "0 suspected" not in html
    assert "no suspected site" not in html
    assert "marks-toggle" not in html


def test_stray_candidates_of_a_classifier_only_version_are_not_drawn(client_for, clinician):
    html = _page(client_for, clinician, candidates=[SITE_A], card={})
    assert 'class="model-marks"' not in html
    assert _sentence(html).startswith("This model version does not mark suspected sites")


def test_unfinished_prediction_has_no_sentence(client_for, clinician):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTING)
    image = factories.XrayImageFactory(case=case)
    factories.PredictionFactory(
        image=image,
        model_version=factories.ModelVersionFactory(card=LOCATOR_CARD),
        status="running",
        probability=None,
        candidates=[SITE_A],
    )
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    html = html.content.decode()
    assert "marks-sentence" not in html
    assert 'class="model-marks"' not in html
    assert f'data-state="{image.predictions.get().pk}-running"' in html


def test_a_reviewed_case_draws_the_radiologists_boxes_beside_the_model_marks(
    client_for, clinician, settings
):
    from diagnosis.services.reviews import ImageRead, review_claim, review_submit

    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    image = factories.XrayImageFactory(case=case, position=0, width=400, height=500)
    version = factories.ModelVersionFactory(card=LOCATOR_CARD)
    factories.PredictionFactory(image=image, model_version=version, candidates=[SITE_A])
    reader = factories.RadiologistFactory(username="rad_marks_view")
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
    assert Case.objects.get(pk=case.pk).status == Case.Status.REVIEWED
    html = client_for(clinician).get(reverse("diagnosis:case_detail", args=[case.uuid]))
    html = html.content.decode()
    figure = html[html.index('<figure class="result"') :]
    # The reader's box in the image's pixels, solid and separate from the model's dashed marks.
    rects = re.findall(
        r'<rect class="reader-box" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
        figure,
    )
    assert [tuple(float(v) for v in r) for r in rects] == [(100, 100, 40, 25)]
    assert 'class="mark-box"' in figure
    assert "The radiologist marked 1 fracture region, drawn as a solid cyan box." in figure
    assert 'class="reader-toggle" checked' in figure
    assert 'class="marks-toggle" checked' in figure
    assert _sentence(html).startswith("The model marks 1 suspected site")


def test_no_reader_boxes_before_the_case_is_reviewed(client_for, clinician):
    html = _page(client_for, clinician, candidates=[SITE_A], card=LOCATOR_CARD)
    assert "reader-box" not in html
    assert "reader-toggle" not in html
