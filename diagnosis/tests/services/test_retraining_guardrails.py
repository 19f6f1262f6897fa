"""Retraining guardrails (issue 12, point 7): the evidence is checked before a run starts, with the
numbers; a refused or failed run leaves no snapshot per try and does not reset the new-review
count; a killed run's scratch folders are removed when it is marked failed. (The promotion
minimum is in test_model_promotion.py.)"""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from diagnosis.models import DatasetSnapshot, Label, TrainingRun
from diagnosis.selectors.training import new_reviews_since_last_run
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.services.training import (
    InsufficientTrainingDataError,
    training_run_execute,
    training_run_start,
    training_runs_fail_stale,
    training_scratch_clean,
)
from diagnosis.tests.retrain_helpers import reviewed_case

pytestmark = pytest.mark.django_db
DELAY = "diagnosis.services.training.training_run_task.delay"
F, N = Label.FRACTURED, Label.NOT_FRACTURED


@pytest.fixture(autouse=True)
def _dirs_and_limits(settings, tmp_path):
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"
    settings.TRAINING_BASE_DATASET_DIR = ""
    settings.RETRAIN_MIN_IMAGES_PER_CLASS = 10


@pytest.fixture
def three_reviews(radiologist):
    """The demo situation: three reviewed images, two fractured and one not."""
    for seed, label in enumerate([F, F, N]):
        reviewed_case(reviewer=radiologist, labels=[label], seed=seed)


def test_retrain_now_with_three_reviews_is_refused_with_the_numbers(
    three_reviews, admin_user, client_for
):
    client = client_for(admin_user)
    for _ in range(3):  # every try
        response = client.post(reverse("registry:run_start"), {"epochs": 2}, follow=True)
        assert response.status_code == 200
        page = response.content.decode()
        assert "needs at least 10 fractured and 10 not-fractured" in page
        assert "there are 2 and 1" in page
    assert TrainingRun.objects.count() == 0
    assert DatasetSnapshot.objects.count() == 0
    assert new_reviews_since_last_run() == 3

    app = api_client_create(user=admin_user, name="guardrails")
    _, raw = api_token_create(client=app, user=admin_user, scopes=["admin"], expires_at=None)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    answer = api.post("/api/v1/training/runs/", {"config": {}}, format="json")
    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "insufficient_training_data"
    assert body["extra"] == {"needed_per_class": 10, "fractured": 2, "not_fractured": 1}


def test_a_snapshot_without_both_classes_fails_the_run_in_words_and_is_reused(
    three_reviews, settings
):
    settings.RETRAIN_MIN_IMAGES_PER_CLASS = 1  # passes the count; the splits still lack a class
    for _ in range(2):
        with patch(DELAY):
            run = training_run_start(trigger="manual", config={"epochs": 1, "fine_tune": False})
        training_run_execute(run_id=run.pk)
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.FAILED
        assert "cannot train a model" in run.error
        assert "ValueError" not in run.error
        assert "split has" in run.error
    # The second try reused the first try's snapshot; the failed runs did not reset the count.
    assert DatasetSnapshot.objects.count() == 1
    assert new_reviews_since_last_run() == 3


def test_the_schedule_does_not_start_a_run_it_cannot_train(three_reviews, settings):
    from diagnosis.services.training import retrain_schedule_check

    settings.RETRAIN_MIN_NEW_REVIEWS = 3
    with patch(DELAY):
        assert retrain_schedule_check()["started_run"] is None
    assert TrainingRun.objects.count() == 0


def test_insufficient_data_error_carries_counts(three_reviews):
    with pytest.raises(InsufficientTrainingDataError) as info:
        training_run_start(trigger="command")
    assert info.value.status_code == 409
    assert info.value.extra["fractured"] == 2


def test_marking_a_killed_run_failed_removes_its_scratch(settings):
    run = TrainingRun.objects.create(
        trigger="manual",
        status=TrainingRun.Status.RUNNING,
        started_at=timezone.now() - timedelta(hours=1),
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    work = settings.TRAINING_WORK_DIR / f"run-{run.pk}-k1ll3d"
    (work / "data" / "train").mkdir(parents=True)
    (work / "data" / "train" / "x.png").write_bytes(b"png")
    half = settings.MODEL_STORE_DIR / f".retrain-{run.pk}-20260101-000000.tmp-abcd1234"
    half.mkdir(parents=True)
    (half / "model.keras").write_bytes(b"half")
    other = settings.TRAINING_WORK_DIR / "run-999999-gone"
    other.mkdir()

    assert training_runs_fail_stale() == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert not work.exists()
    assert not half.exists()
    assert other.exists()  # another run's folder: only the start-of-run sweep judges it
    queued = TrainingRun.objects.create(trigger="manual", status=TrainingRun.Status.QUEUED)
    mine = settings.TRAINING_WORK_DIR / f"run-{queued.pk}-in-flight"
    mine.mkdir()
    assert training_scratch_clean() == 1  # run 999999 is not in flight; the queued one is
    assert not other.exists()
    assert mine.exists()
