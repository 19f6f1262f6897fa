"""rows_update: one UPDATE ... FROM (VALUES ...) on PostgreSQL, same result as bulk_update."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from diagnosis.models import Case, Prediction
from diagnosis.services.bulk import rows_update
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


def test_writes_every_type_of_field_in_one_statement():
    version = factories.ModelVersionFactory()
    rows = [
        factories.PredictionFactory(status=Prediction.Status.RUNNING, model_version=version)
        for _ in range(4)
    ]
    untouched = rows.pop()
    finished = timezone.now() - timedelta(minutes=5)
    for i, row in enumerate(rows):
        row.status = Prediction.Status.DONE
        row.probability = [0.125, None, 1.0][i]  # a NULL among floats
        row.labels = {"balanced": "fractured", "note": ["a", i, {"quote": 'it\'s "x"'}]}
        row.label = "not_fractured"
        row.heatmap = f"heatmaps/prediction-{row.pk}.png"
        row.timings = {"model_ms": 1.5 * i}
        row.error = "" if i else "O'Brien; DROP TABLE x; --"  # stays a value
        row.finished_at = finished + timedelta(seconds=i)
    with CaptureQueriesContext(connection) as queries:
        fields = ["status", "probability", "labels", "label", "heatmap", "timings", "error"]
        count = rows_update(rows, [*fields, "finished_at"])
    assert count == 3
    assert len(queries) == 1
    for i, row in enumerate(rows):
        stored = Prediction.objects.get(pk=row.pk)
        assert stored.status == Prediction.Status.DONE
        assert stored.probability == [0.125, None, 1.0][i]
        assert stored.labels == row.labels
        assert stored.label == "not_fractured"
        assert stored.heatmap.name == f"heatmaps/prediction-{row.pk}.png"
        assert stored.timings == {"model_ms": 1.5 * i}
        assert stored.error == row.error
        assert stored.finished_at == finished + timedelta(seconds=i)
    assert Prediction.objects.get(pk=untouched.pk).status == Prediction.Status.RUNNING


def test_writes_only_the_named_fields():
    case = factories.CaseFactory(status=Case.Status.QUEUED, status_reason="waiting")
    case.status = Case.Status.PREDICTED
    case.status_reason = "changed in memory only"
    assert rows_update([case], ["status"]) == 1
    case.refresh_from_db()
    assert (case.status, case.status_reason) == (Case.Status.PREDICTED, "waiting")


def test_refuses_what_it_cannot_write():
    prediction = factories.PredictionFactory()
    assert rows_update([], ["status"]) == 0
    with pytest.raises(ValueError, match="one model"):
        rows_update([prediction, prediction.image], ["status"])
    with pytest.raises(ValueError, match="non-primary-key"):
        rows_update([prediction], ["id"])
    with pytest.raises(ValueError, match="non-primary-key"):
        rows_update([prediction], [])
    with pytest.raises(ValueError, match="saved rows"):
        rows_update([Prediction(image=prediction.image)], ["status"])
