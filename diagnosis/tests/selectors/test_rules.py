"""Rules with one home each: which prediction is current, and an image's agreed label."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis.models import Label, ModelVersion, Prediction, Review
from diagnosis.selectors.api import api_case_detail, api_heatmap_prediction_get
from diagnosis.selectors.predictions import (
    case_results,
    prediction_current,
    prediction_row_current,
)
from diagnosis.selectors.reads import reads_agreed_label
from diagnosis.selectors.reviews import case_image_reads
from diagnosis.tests import factories

F, N = Label.FRACTURED.value, Label.NOT_FRACTURED.value
DONE, FAILED, PENDING = (
    Prediction.Status.DONE,
    Prediction.Status.FAILED,
    Prediction.Status.PENDING,
)


def _at(minutes: int) -> object:
    return timezone.now() - timedelta(minutes=60 - minutes)


@pytest.mark.django_db
def test_current_prediction_is_the_newest_finished_else_the_newest_attempt(admin_user):
    image = factories.XrayImageFactory()
    retired = ModelVersion.Status.RETIRED
    old_done = factories.PredictionFactory(
        image=image, model_version__status=retired, status=DONE, heatmap="h/old.png"
    )
    newer_failed = factories.PredictionFactory(
        image=image, model_version__status=retired, status=FAILED, probability=None, label=""
    )
    newest_pending = factories.PredictionFactory(
        image=image, status=PENDING, probability=None, label=""
    )
    for minutes, prediction in enumerate((old_done, newer_failed, newest_pending)):
        Prediction.objects.filter(pk=prediction.pk).update(created_at=_at(minutes))
    predictions = list(Prediction.objects.filter(image=image))

    assert prediction_current(predictions) == old_done
    assert prediction_current(reversed(predictions)) == old_done  # order of input does not matter
    assert prediction_current([newer_failed, newest_pending]) == newest_pending
    assert prediction_current([]) is None
    rows = [{"id": p.pk, "status": p.status} for p in (newest_pending, newer_failed, old_done)]
    assert prediction_row_current(rows)["id"] == old_done.pk
    assert prediction_row_current(rows[:2])["id"] == newest_pending.pk

    # Every reader of "the current prediction" gives the same answer.
    case = image.case
    assert case_results(case=case).items[0].prediction == old_done
    assert case_image_reads(case=case)[0].prediction == old_done
    detail = api_case_detail(user=admin_user, case_uuid=case.uuid)
    assert prediction_row_current(detail.images[0].predictions)["id"] == old_done.pk
    heatmap = api_heatmap_prediction_get(user=admin_user, case_uuid=case.uuid, image_id=image.pk)
    assert heatmap == old_done


def test_agreed_label_rule():
    first, second, adjudication = (
        Review.Read.FIRST,
        Review.Read.SECOND,
        Review.Read.ADJUDICATION,
    )
    assert reads_agreed_label({first: F}) == F
    assert reads_agreed_label({first: F, second: F}) == F
    assert reads_agreed_label({first: F, second: N}) is None  # waits for adjudication
    assert reads_agreed_label({first: F, second: N, adjudication: N}) == N
    assert reads_agreed_label({}) is None
