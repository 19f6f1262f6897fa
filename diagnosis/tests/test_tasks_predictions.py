"""Inference tasks: options, routing, settings invariants, and in-process calls (`task(...)`)."""

from __future__ import annotations

import subprocess
import sys
from unittest import mock

import pytest
from django.conf import settings

from diagnosis.exceptions import TransientInferenceError
from diagnosis.models import Case, Prediction
from diagnosis.tasks import predictions as tasks
from diagnosis.tests.services.test_predictions import (  # noqa: F401 (fixtures)
    active_version,
    make_case,
    request,
    tiny_artifact,
)
from fracture_portal.celery import app

PREDICTION_TASKS = (tasks.prediction_run, tasks.prediction_run_batch)


@pytest.mark.parametrize("task", PREDICTION_TASKS, ids=lambda t: t.name)
def test_prediction_task_options(task):
    assert task.name.startswith("diagnosis.tasks.prediction_")
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.ignore_result is True
    assert set(task.autoretry_for) == set(tasks.TRANSIENT_ERRORS)
    assert Exception not in task.autoretry_for  # only transient errors are retried
    assert task.retry_backoff
    assert task.retry_jitter
    assert task.max_retries == settings.INFERENCE_MAX_ATTEMPTS
    assert 0 < task.soft_time_limit < task.time_limit == settings.INFERENCE_TIME_LIMIT


@pytest.mark.parametrize("task", PREDICTION_TASKS, ids=lambda t: t.name)
def test_prediction_tasks_route_to_the_inference_queue(task):
    route = app.amqp.router.route({}, task.name, args=([1],), kwargs={})
    assert route["queue"].name == "inference"


def test_sweeper_task_is_registered_on_the_default_queue_and_scheduled():
    assert tasks.case_sweep_stuck.name == "diagnosis.tasks.case_sweep_stuck"
    route = app.amqp.router.route({}, tasks.case_sweep_stuck.name, args=(), kwargs={})
    assert route["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "diagnosis.tasks.case_sweep_stuck" in schedule


def test_time_limits_stay_below_half_the_visibility_timeout():
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    for limit in (
        settings.INFERENCE_TIME_LIMIT,
        settings.CELERY_TASK_TIME_LIMIT,
        settings.CELERY_TRAINING_TIME_LIMIT,
        tasks.case_sweep_stuck.time_limit,
    ):
        assert 2 * limit < visibility
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_ACKS_LATE is True


def test_settings_refuse_a_visibility_timeout_shorter_than_twice_a_time_limit():
    code = "import fracture_portal.settings"
    env = {
        "DJANGO_DEBUG": "1",
        "CELERY_VISIBILITY_TIMEOUT": "100",
        "CELERY_INFERENCE_TIME_LIMIT": "60",
        "CELERY_TRAINING_TIME_LIMIT": "30",
        "CELERY_TASK_TIME_LIMIT": "40",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT must exceed twice" in result.stderr


def test_batch_task_runs_in_process(active_version, django_capture_on_commit_callbacks):  # noqa: F811
    case = make_case(2)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    with mock.patch("diagnosis.services.case_progress.webhook_notify"):
        counts = tasks.prediction_run_batch(ids)
    assert counts["done"] == 2
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED


def test_single_task_runs_one_image(active_version, django_capture_on_commit_callbacks):  # noqa: F811
    case = make_case(2)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    counts = tasks.prediction_run(ids[0])
    assert counts == {"done": 1, "failed": 0, "skipped": 0}
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTING


def test_final_failure_hook_marks_predictions_and_case_failed(
    active_version,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    tasks.prediction_run_batch.on_failure(MemoryError("oom"), "task-1", (ids,), {}, None)
    prediction = Prediction.objects.get(pk=ids[0])
    assert prediction.status == Prediction.Status.FAILED
    assert prediction.error == "Prediction failed: MemoryError: oom"
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert "MemoryError" in case.status_reason


def test_transient_errors_retry_then_stop_at_the_attempt_cap(
    active_version,  # noqa: F811
    django_capture_on_commit_callbacks,
    settings,
):
    """Eager `apply` runs the retries inline: every run counts an attempt in the database, and
    past INFERENCE_MAX_ATTEMPTS the prediction fails with a reason instead of running again."""
    settings.INFERENCE_MAX_ATTEMPTS = 3
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    with mock.patch(
        "diagnosis.inference.run_batch", side_effect=TransientInferenceError("gpu busy")
    ) as run_batch:
        tasks.prediction_run_batch.apply(args=(ids,))
    assert run_batch.call_count == 3
    prediction = Prediction.objects.get(pk=ids[0])
    assert prediction.attempts == 3
    assert prediction.status == Prediction.Status.FAILED
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED


def test_embedded_mode_runs_the_same_pipeline_in_process(
    active_version,  # noqa: F811
    django_capture_on_commit_callbacks,
    sample_jpeg_bytes,
):
    """No broker (`make run`): CELERY_TASK_ALWAYS_EAGER makes the dispatch after the upload's
    commit run the batch task in-process, through the same service code."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from diagnosis.services.cases import case_create
    from diagnosis.tests import factories

    user = factories.ClinicianFactory()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with (
            mock.patch("diagnosis.services.case_progress.webhook_notify") as notify,
            django_capture_on_commit_callbacks(execute=True),
        ):
            case = case_create(
                user=user,
                patient_ref="EMBEDDED-1",
                body_part="hand",
                clinical_question="",
                files=[SimpleUploadedFile("x.jpg", sample_jpeg_bytes, "image/jpeg")],
            )
    finally:
        app.conf.task_always_eager = previous
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED
    assert Prediction.objects.get(image__case=case).status == Prediction.Status.DONE
    notify.assert_called_once()
