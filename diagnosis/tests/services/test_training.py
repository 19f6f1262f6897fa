"""Training runs: one at a time, validated configuration, cancellation, stale runs, the schedule."""

from __future__ import annotations

import io
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from diagnosis.models import AuditEvent, Label, TrainingRun
from diagnosis.services import training
from diagnosis.services.training import (
    InvalidTrainingConfigError,
    TrainingInProgressError,
    retrain_schedule_check,
    training_run_cancel,
    training_run_execute,
    training_run_start,
    training_runs_fail_stale,
)
from diagnosis.tests.retrain_helpers import reviewed_case
from ml.registry import json_safe

pytestmark = pytest.mark.django_db
DELAY = "diagnosis.services.training.training_run_task.delay"


@pytest.fixture(autouse=True)
def _training_dirs(settings, tmp_path):
    """Model artifacts, work folders and fingerprint caches under the test's tmp dir."""
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"


def test_start_queues_one_run_after_commit_and_audits(
    admin_user, django_capture_on_commit_callbacks
):
    with patch(DELAY) as delay:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            run = training_run_start(trigger="manual", user=admin_user, config={"epochs": 2})
            delay.assert_not_called()
        assert len(callbacks) == 1
    delay.assert_called_once_with(run.pk)
    assert run.status == TrainingRun.Status.QUEUED
    assert run.config == {"epochs": 2, "fine_tune": True}
    event = AuditEvent.objects.get(action="training.start")
    assert event.actor_id == admin_user.pk
    assert event.extra["trigger"] == "manual"


def test_second_trigger_is_refused_while_one_is_in_flight(admin_user):
    with patch(DELAY):
        first = training_run_start(trigger="manual", user=admin_user)
        with pytest.raises(TrainingInProgressError) as exc:
            training_run_start(trigger="api", user=admin_user)
    assert exc.value.code == "training_in_progress"
    assert exc.value.status_code == 409
    assert exc.value.extra == {"run_id": first.pk}
    assert TrainingRun.objects.count() == 1


def test_database_constraint_backs_the_one_run_rule(admin_user):
    TrainingRun.objects.create(trigger="manual", status=TrainingRun.Status.RUNNING)
    with (
        patch(DELAY),
        patch.object(training, "training_run_get_in_flight", return_value=None),
        pytest.raises(TrainingInProgressError),
    ):
        training_run_start(trigger="manual", user=admin_user)


@pytest.mark.parametrize(
    "config",
    [
        {"epochs": 0},
        {"epochs": "5"},
        {"epochs": True},
        {"fine_tune": "yes"},
        {"rm_rf": 1},
        {"size": 10**9},
        {"snapshot_id": 999999},
        {"arch": "x" * 600},
    ],
)
def test_bad_configuration_is_refused(admin_user, config):
    with patch(DELAY), pytest.raises(InvalidTrainingConfigError) as exc:
        training_run_start(trigger="manual", user=admin_user, config=config)
    assert exc.value.code == "invalid_training_config"
    assert not TrainingRun.objects.exists()


def test_cancel_a_queued_run_frees_the_slot_and_the_task_then_does_nothing(admin_user):
    with patch(DELAY):
        run = training_run_start(trigger="manual", user=admin_user)
        training_run_cancel(run=run, user=admin_user)
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.CANCELLED
        training_run_execute(run_id=run.pk)  # a late delivery of the cancelled run
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.CANCELLED
        assert run.started_at is None
        training_run_start(trigger="manual", user=admin_user)
    assert AuditEvent.objects.filter(action="training.cancel").count() == 1


def test_cancel_a_running_run_only_flags_it(admin_user):
    run = TrainingRun.objects.create(trigger="manual", status=TrainingRun.Status.RUNNING)
    training_run_cancel(run=run, user=admin_user)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING
    assert run.cancel_requested is True
    callbacks = training._RunCallbacks(run.pk)
    assert callbacks.should_stop() is True
    assert callbacks.stopped is True


def test_stale_running_and_queued_runs_are_failed(settings):
    settings.TRAINING_STALE_SECONDS = 60
    settings.TRAINING_QUEUED_STALE_SECONDS = 600
    now = timezone.now()
    run = TrainingRun.objects.create(
        trigger="manual",
        status=TrainingRun.Status.RUNNING,
        heartbeat_at=now - timedelta(seconds=30),
    )
    assert training_runs_fail_stale(now=now) == 0
    assert training_runs_fail_stale(now=now + timedelta(seconds=61)) == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "no heartbeat" in run.error
    assert run.finished_at is not None

    queued = TrainingRun.objects.create(trigger="scheduled")
    assert training_runs_fail_stale(now=now + timedelta(seconds=601)) == 1
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.FAILED
    assert AuditEvent.objects.filter(action="training.fail", outcome="failure").count() == 2


def test_progress_callback_records_epoch_metrics_and_heartbeat():
    run = TrainingRun.objects.create(trigger="manual", status=TrainingRun.Status.RUNNING)
    callbacks = training._RunCallbacks(run.pk)
    callbacks.progress({"epoch": 2, "epochs": 5, "step": 3, "steps": 9, "loss": 0.5})
    callbacks.progress({"epoch": 2, "epochs": 5, "step": 4, "steps": 9, "loss": 0.45})
    run.refresh_from_db()
    assert run.progress["step"] == 3  # per-batch updates are throttled
    assert run.log == ""
    # ml.train's values arrive through training_bridge.train_model, already JSON-safe and rounded.
    callbacks.progress(
        json_safe({"epoch": 2, "epochs": 5, "val_auroc": 0.812345678, "loss": 0.4}, digits=5)
    )
    run.refresh_from_db()
    assert run.progress == {"epoch": 2, "epochs": 5, "val_auroc": 0.81235, "loss": 0.4}
    assert run.heartbeat_at is not None
    assert "epoch=2" in run.log
    assert callbacks.should_stop() is False


def test_schedule_starts_a_run_when_enough_new_reviews_exist(settings, radiologist):
    settings.RETRAIN_MIN_NEW_REVIEWS = 3
    for seed in range(2):
        reviewed_case(reviewer=radiologist, labels=[Label.FRACTURED], seed=seed)
    with patch(DELAY):
        assert retrain_schedule_check()["started_run"] is None
        reviewed_case(reviewer=radiologist, labels=[Label.NOT_FRACTURED], seed=9)
        out = retrain_schedule_check()
        assert out["new_reviews"] == 3
        run = TrainingRun.objects.get(pk=out["started_run"])
        assert run.trigger == TrainingRun.Trigger.SCHEDULED
        # in flight: no second run; and the counter restarts from the latest run
        assert retrain_schedule_check()["started_run"] is None
        TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
        assert retrain_schedule_check() == {
            "stale_failed": 0,
            "new_reviews": 0,
            "started_run": None,
        }


def test_schedule_disabled_with_zero(settings, radiologist):
    settings.RETRAIN_MIN_NEW_REVIEWS = 0
    reviewed_case(reviewer=radiologist, labels=[Label.FRACTURED], seed=1)
    assert retrain_schedule_check()["started_run"] is None


def test_commands_snapshot_retrain_and_rollback(radiologist):
    from django.core.management import CommandError, call_command

    from diagnosis.models import ModelVersion
    from diagnosis.tests import factories

    for seed in range(6):
        reviewed_case(
            reviewer=radiologist,
            labels=[Label.FRACTURED if seed % 2 else Label.NOT_FRACTURED],
            seed=seed,
        )
    out = io.StringIO()
    call_command("snapshot_create", "--no-base", stdout=out)
    assert "train" in out.getvalue()

    with patch(DELAY) as delay:
        call_command("retrain", "--epochs", "2", "--set", 'arch="plain"', stdout=io.StringIO())
        with pytest.raises(CommandError, match="training_in_progress"):
            call_command("retrain", stdout=io.StringIO())
    run = TrainingRun.objects.get()
    assert run.trigger == TrainingRun.Trigger.COMMAND
    assert run.config == {"arch": "plain", "epochs": 2, "fine_tune": True}
    delay.assert_not_called()  # sent on commit only

    with pytest.raises(CommandError):
        call_command("rollback_model", stdout=io.StringIO())
    old = factories.ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    ModelVersion.objects.filter(pk=old.pk).update(promoted_at=timezone.now())
    new = factories.ModelVersionFactory(status=ModelVersion.Status.CANDIDATE)
    from diagnosis.services.models import model_version_activate

    model_version_activate(version=new, user=None)
    call_command("rollback_model", stdout=io.StringIO())
    assert ModelVersion.objects.get(status="active") == old
