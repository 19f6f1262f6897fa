"""Inference pipeline services, against a real (tiny, random-weight) model and real PostgreSQL.

Only what leaves the process is replaced: the broker publish (`apply_async`) and the webhook.
"""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import psycopg2
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError
from PIL import Image

from diagnosis.exceptions import InvalidStateError, ModelArtifactError
from diagnosis.models import Case, Label, ModelVersion, Prediction, XrayImage
from diagnosis.services import models as model_services
from diagnosis.services import prediction_files as pred_files
from diagnosis.services import prediction_results as pred_results
from diagnosis.services import predictions as pred_requests
from diagnosis.services import sweeper
from diagnosis.services.case_progress import case_priority
from diagnosis.tests import factories

DISPATCH = "diagnosis.services.predictions.prediction_run_batch_task.apply_async"
WEBHOOK = "diagnosis.services.case_progress.webhook_notify"


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("model") / "tiny", size=64, seed=0)


@pytest.fixture
def active_version(db, tiny_artifact) -> ModelVersion:
    version, _ = model_services.model_version_register(artifact_dir=tiny_artifact, activate=True)
    return version


def _png(width: int = 80, height: int = 60, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width), np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def make_case(n_images: int = 1, *, status: str = Case.Status.RECEIVED, **kwargs) -> Case:
    case = factories.CaseFactory(status=status, **kwargs)
    for i in range(n_images):
        factories.XrayImageFactory(
            case=case,
            position=i,
            file=ContentFile(_png(seed=i), name=f"img{i}.png"),
            width=80,
            height=60,
        )
    return case


def request(case: Case, django_capture_on_commit_callbacks) -> tuple[list[int], mock.Mock]:
    with (
        mock.patch(DISPATCH) as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        ids = pred_requests.case_request_predictions(case=case)
    return ids, apply_async


def run(ids, *, drain: bool = True, django_capture_on_commit_callbacks=None):
    with mock.patch(WEBHOOK) as notify:
        if django_capture_on_commit_callbacks is None:
            return pred_results.prediction_run_batch(prediction_ids=ids, drain=drain), notify
        with django_capture_on_commit_callbacks(execute=True):
            counts = pred_results.prediction_run_batch(prediction_ids=ids, drain=drain)
        return counts, notify


# --- requests -------------------------------------------------------------------------------------


def test_request_queues_one_prediction_per_image_and_dispatches_after_commit(
    active_version, django_capture_on_commit_callbacks
):
    case = make_case(3)
    with mock.patch(DISPATCH) as apply_async:
        with django_capture_on_commit_callbacks() as callbacks:
            ids = pred_requests.case_request_predictions(case=case)
        apply_async.assert_not_called()  # the worker must see committed rows
        for callback in callbacks:
            callback()
    apply_async.assert_called_once()
    assert apply_async.call_args.kwargs["args"] == [ids]
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED
    assert case.queued_at is not None
    assert Prediction.objects.filter(image__case=case, status="pending").count() == 3
    assert set(Prediction.objects.values_list("model_version_id", flat=True)) == {active_version.pk}


def test_request_is_idempotent_and_chunks_by_batch_size(
    active_version, django_capture_on_commit_callbacks, settings
):
    settings.INFERENCE_BATCH_SIZE = 2
    case = make_case(5)
    first, apply_async = request(case, django_capture_on_commit_callbacks)
    assert [c.kwargs["args"][0] for c in apply_async.call_args_list] == [
        first[0:2],
        first[2:4],
        first[4:5],
    ]
    again, _ = request(case, django_capture_on_commit_callbacks)
    assert again == first
    assert Prediction.objects.filter(image__case=case).count() == 5


def test_request_without_active_model_keeps_case_received_with_reason(
    db, django_capture_on_commit_callbacks
):
    case = make_case(1)
    ids, apply_async = request(case, django_capture_on_commit_callbacks)
    assert ids == []
    apply_async.assert_not_called()
    case.refresh_from_db()
    assert case.status == Case.Status.RECEIVED
    assert case.status_reason == pred_requests.NO_MODEL_REASON
    assert not Prediction.objects.exists()


def test_broker_down_at_dispatch_leaves_case_queued_without_raising(
    active_version, django_capture_on_commit_callbacks, caplog
):
    case = make_case(2)
    with (
        mock.patch(DISPATCH, side_effect=BrokerOperationalError("connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        ids = pred_requests.case_request_predictions(case=case)
    assert len(ids) == 2
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED
    assert "left queued for the sweeper" in caplog.text


def test_cancelled_case_is_not_queued(active_version, django_capture_on_commit_callbacks):
    case = make_case(1, status=Case.Status.CANCELLED)
    ids, apply_async = request(case, django_capture_on_commit_callbacks)
    assert ids == []
    apply_async.assert_not_called()
    assert not Prediction.objects.exists()


# --- running -------------------------------------------------------------------------------------------


def test_run_stores_probability_labels_heatmaps_timings_and_predicts_case(
    active_version, django_capture_on_commit_callbacks
):
    case = make_case(2)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    counts, notify = run(
        ids[:1], django_capture_on_commit_callbacks=django_capture_on_commit_callbacks
    )
    assert counts["done"] == 2  # the second image was drained into the same batch
    notify.assert_called_once()
    assert notify.call_args.kwargs["event"] == "case.predicted"
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED
    assert case.predicted_at is not None
    for prediction in Prediction.objects.filter(pk__in=ids):
        assert prediction.status == Prediction.Status.DONE
        assert prediction.attempts == 1
        assert 0.0 <= prediction.probability <= 1.0
        assert set(prediction.labels) == {"balanced", "high_sensitivity"}
        assert prediction.label == prediction.labels["balanced"]
        expected = Label.FRACTURED if prediction.probability >= 0.5 else Label.NOT_FRACTURED
        assert prediction.label == expected
        assert prediction.timings["batch_size"] == 2
        for key in ("queue_ms", "preprocess_ms", "model_ms", "gradcam_ms", "total_ms"):
            assert prediction.timings[key] >= 0
        rgba_name, overlay_name = pred_files.heatmap_names(prediction.pk)
        assert prediction.heatmap.name == rgba_name
        with default_storage.open(rgba_name) as fh:
            heatmap = Image.open(fh)
            heatmap.load()
        # A palette PNG with transparency: viewers decode it to RGBA, at the canonical image size.
        assert (heatmap.mode, heatmap.size) == ("P", (80, 60))
        assert "transparency" in heatmap.info
        assert heatmap.convert("RGBA").mode == "RGBA"
        assert not default_storage.exists(overlay_name)  # rendered when first asked for
        assert pred_files.prediction_overlay_name(prediction=prediction) == overlay_name
        with default_storage.open(overlay_name) as fh:
            over = Image.open(fh)
            over.load()
        assert (over.mode, over.size) == ("RGB", (80, 60))
        assert XrayImage.objects.get(pk=prediction.image_id).inference_attempts == 1
    threshold = active_version.thresholds["balanced"]
    probabilities = list(
        Prediction.objects.filter(pk__in=ids).values_list("probability", flat=True)
    )
    # The review queue's formula (diagnosis.services.reviews), applied when the case is predicted.
    assert case.priority == case_priority(probabilities=probabilities, threshold=threshold)


def test_probability_is_temperature_calibrated(active_version, django_capture_on_commit_callbacks):
    from ml import inference as ml_inference
    from ml import preprocess, registry

    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    ModelVersion.objects.filter(pk=active_version.pk).update(temperature=3.0)
    run(ids)
    model, card = registry.load(active_version.artifact_dir)
    image = case.images.get()
    with image.file.open("rb") as fh:
        batch = preprocess.preprocess_bytes(fh.read(), card.spec)[np.newaxis]
    expected = float(ml_inference.predict(model, batch, temperature=3.0)[0])
    assert Prediction.objects.get(pk=ids[0]).probability == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("model_batch", "passes"), [(0, [3]), (1, [1, 1, 1]), (2, [2, 1])])
def test_model_pass_size_splits_the_batch_without_changing_results(
    active_version, django_capture_on_commit_callbacks, settings, model_batch, passes
):
    """One task, three images; INFERENCE_MODEL_BATCH sets the images per model pass (0 = auto:
    all of them in one pass). Results do not depend on it."""
    from ml.serving import Predictor

    settings.INFERENCE_MODEL_BATCH = model_batch
    case = make_case(3)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    with mock.patch.object(Predictor, "_model_pass", wraps=Predictor._model_pass) as spy:
        run(ids)
    assert [c.args[1].shape[0] for c in spy.call_args_list] == passes
    probabilities = dict(Prediction.objects.values_list("image__position", "probability"))
    again = make_case(3)  # same pixels (seeded), one pass for all
    settings.INFERENCE_MODEL_BATCH = 8
    run(request(again, django_capture_on_commit_callbacks)[0])
    for position, probability in Prediction.objects.filter(image__case=again).values_list(
        "image__position", "probability"
    ):
        assert probability == pytest.approx(probabilities[position], abs=1e-5)


def test_rerun_is_idempotent(active_version, django_capture_on_commit_callbacks):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    run(ids)
    before = Prediction.objects.get(pk=ids[0])
    counts, notify = run(ids)  # a redelivered message
    assert counts == {"done": 0, "failed": 0, "skipped": 1}
    after = Prediction.objects.get(pk=ids[0])
    assert (after.probability, after.attempts, after.finished_at) == (
        before.probability,
        before.attempts,
        before.finished_at,
    )
    assert default_storage.listdir("heatmaps")[1] == [Path(after.heatmap.name).name]
    notify.assert_not_called()


def test_crashed_attempt_is_rerun_and_overwrites_its_files(
    active_version, django_capture_on_commit_callbacks
):
    """A worker died after writing a file but before the row: the rerun keeps one file per name
    and drops an overlay rendered from the stale heat-map."""
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    rgba_name, overlay_name = pred_files.heatmap_names(ids[0])
    default_storage.save(rgba_name, ContentFile(b"partial"))
    default_storage.save(overlay_name, ContentFile(b"stale"))
    Prediction.objects.filter(pk=ids[0]).update(status="running", attempts=1)
    run(ids)
    prediction = Prediction.objects.get(pk=ids[0])
    assert (prediction.status, prediction.attempts) == ("done", 2)
    assert default_storage.listdir("heatmaps")[1] == [Path(rgba_name).name]
    with default_storage.open(rgba_name) as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attempt_cap_fails_prediction_and_case_instead_of_running(
    active_version, django_capture_on_commit_callbacks, settings
):
    settings.INFERENCE_MAX_ATTEMPTS = 3
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    Prediction.objects.filter(pk=ids[0]).update(status="running", attempts=3)
    with mock.patch("diagnosis.inference.run_batch") as run_batch:
        _counts, notify = run(ids)
    run_batch.assert_not_called()
    prediction = Prediction.objects.get(pk=ids[0])
    assert prediction.status == Prediction.Status.FAILED
    assert "Gave up after 3 attempts" in prediction.error
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert "Gave up after 3 attempts" in case.status_reason
    notify.assert_not_called()


def test_unreadable_image_fails_that_image_and_the_case(
    active_version, django_capture_on_commit_callbacks
):
    case = make_case(2)
    bad = case.images.get(position=1)
    bad.file.save("bad.png", ContentFile(b"not an image at all"), save=True)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    counts, _ = run(ids)
    assert (counts["done"], counts["failed"]) == (1, 1)
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert case.status_reason.startswith("Prediction failed for image 2: The image could not")


def test_broken_artifact_fails_with_reason(active_version, django_capture_on_commit_callbacks):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    ModelVersion.objects.filter(pk=active_version.pk).update(artifact_dir="/nonexistent/model")
    run(ids)
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert "cannot be loaded" in case.status_reason


def test_transient_error_gives_rows_back_and_raises(
    active_version, django_capture_on_commit_callbacks
):
    from diagnosis.exceptions import TransientInferenceError

    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    with (
        mock.patch("diagnosis.inference.run_batch", side_effect=OSError("nfs hiccup")),
        pytest.raises(TransientInferenceError),
    ):
        pred_results.prediction_run_batch(prediction_ids=ids)
    prediction = Prediction.objects.get(pk=ids[0])
    assert (prediction.status, prediction.attempts) == ("pending", 1)


def test_batch_drains_waiting_predictions_of_other_cases(
    active_version, django_capture_on_commit_callbacks, settings
):
    settings.INFERENCE_BATCH_SIZE = 4
    cases = [make_case(1) for _ in range(5)]
    ids = [request(c, django_capture_on_commit_callbacks)[0][0] for c in cases]
    counts, _ = run(ids[:1])
    assert counts["done"] == 4
    statuses = dict(Prediction.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["done"] * 4 + ["pending"]
    # The drained rows' own messages arrive later and find nothing to do.
    assert run(ids[1:2])[0]["skipped"] == 1
    # One image per task (prediction_run) never drains.
    assert run(ids[4:5], drain=False)[0]["done"] == 1


def test_prediction_locked_by_another_worker_is_skipped(
    active_version, django_capture_on_commit_callbacks
):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    params = connection.get_connection_params()
    other = psycopg2.connect(
        dbname=params["dbname"],
        user=params.get("user"),
        host=params.get("host"),
        port=params.get("port"),
    )
    try:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_lock(%s, %s)", [pred_results._LOCK_NAMESPACE, ids[0]]
            )
        counts, _ = run(ids)
        assert counts == {"done": 0, "failed": 0, "skipped": 1}
        assert Prediction.objects.get(pk=ids[0]).attempts == 0
    finally:
        other.close()  # the other worker dies: its lock goes with its connection
    assert run(ids)[0]["done"] == 1


def test_prediction_fail_marks_unfinished_rows_and_case(
    active_version, django_capture_on_commit_callbacks
):
    case = make_case(2)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    assert (
        pred_results.prediction_fail(prediction_ids=ids, reason="Prediction failed: MemoryError")
        == 2
    )
    case.refresh_from_db()
    assert case.status == Case.Status.FAILED
    assert case.status_reason == "Prediction failed for image 1: Prediction failed: MemoryError"
    assert pred_results.prediction_fail(prediction_ids=ids, reason="again") == 0


def test_retry_resets_failed_predictions_and_requeues(
    active_version, django_capture_on_commit_callbacks, admin_user
):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    pred_results.prediction_fail(prediction_ids=ids, reason="boom")
    with (
        mock.patch(DISPATCH) as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        case = pred_requests.case_retry_predictions(case=case, user=admin_user)
    assert case.status == Case.Status.QUEUED
    apply_async.assert_called_once()
    prediction = Prediction.objects.get(pk=ids[0])
    assert (prediction.status, prediction.attempts, prediction.error) == ("pending", 0, "")
    run(ids)
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED
    with pytest.raises(InvalidStateError):
        pred_requests.case_retry_predictions(case=case, user=admin_user)


def test_new_version_does_not_move_a_reviewed_case_back(
    active_version, tiny_artifact, tmp_path, django_capture_on_commit_callbacks
):
    case = make_case(1)
    ids, _ = request(case, django_capture_on_commit_callbacks)
    run(ids)
    Case.objects.filter(pk=case.pk).update(status=Case.Status.REVIEWED)
    from ml.testing import make_tiny_artifact

    newer = make_tiny_artifact(tmp_path / "v2", size=64, seed=1, version="tiny-v2")
    model_services.model_version_register(artifact_dir=newer, activate=True)
    new_ids, _ = request(case, django_capture_on_commit_callbacks)
    assert new_ids
    assert new_ids != ids
    run(new_ids)
    case.refresh_from_db()
    assert case.status == Case.Status.REVIEWED
    assert Prediction.objects.filter(image__case=case, status="done").count() == 2


# --- sweeper -------------------------------------------------------------------------------------------


def _age(case: Case, seconds: int) -> None:
    Case.objects.filter(pk=case.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds),
        created_at=timezone.now() - timedelta(seconds=seconds),
    )


def test_sweeper_redispatches_stuck_work_once_per_bound(
    active_version, django_capture_on_commit_callbacks, settings
):
    settings.STUCK_CASE_SECONDS = 60
    stuck_queued = make_case(2)
    stuck_ids, _ = request(stuck_queued, django_capture_on_commit_callbacks)
    _age(stuck_queued, 300)
    fresh = make_case(1)
    request(fresh, django_capture_on_commit_callbacks)
    stale_running = make_case(1)
    stale_ids, _ = request(stale_running, django_capture_on_commit_callbacks)
    Case.objects.filter(pk=stale_running.pk).update(status=Case.Status.PREDICTING)
    Prediction.objects.filter(pk__in=stale_ids).update(
        status="running", started_at=timezone.now() - timedelta(seconds=300)
    )
    _age(stale_running, 300)
    waiting = make_case(1)  # received while no model was active
    _age(waiting, 300)

    with (
        mock.patch(DISPATCH) as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        counts = sweeper.case_sweep_stuck()
    sent = sorted(c.kwargs["args"][0] for c in apply_async.call_args_list)
    waiting_ids = list(Prediction.objects.filter(image__case=waiting).values_list("pk", flat=True))
    assert sent == sorted([stuck_ids, stale_ids, waiting_ids])
    assert counts == {"requested": 1, "redispatched": 2, "predictions": 3, "deferred": 0}
    waiting.refresh_from_db()
    assert waiting.status == Case.Status.QUEUED

    with mock.patch(DISPATCH) as apply_async:  # touched: not again within the bound
        assert sweeper.case_sweep_stuck()["redispatched"] == 0
    apply_async.assert_not_called()


def test_sweeper_with_broker_down_counts_nothing_and_retries_later(
    active_version, django_capture_on_commit_callbacks, settings
):
    settings.STUCK_CASE_SECONDS = 60
    case = make_case(1)
    request(case, django_capture_on_commit_callbacks)
    _age(case, 300)
    with mock.patch(DISPATCH, side_effect=BrokerOperationalError("down")):
        assert sweeper.case_sweep_stuck()["redispatched"] == 0
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED


def test_sweep_during_a_broker_outage_is_retried_by_the_next_sweep(
    active_version, django_capture_on_commit_callbacks, settings
):
    """Issue 12, point 2: a sweep that falls inside the outage must not mark its cases swept
    (that postponed them a whole STUCK_CASE_SECONDS); the next sweep sends them."""
    settings.STUCK_CASE_SECONDS = 60
    cases = [make_case(1) for _ in range(3)]
    for case in cases:
        request(case, django_capture_on_commit_callbacks)
        _age(case, 300)
    before = {c.pk: c.updated_at for c in Case.objects.filter(pk__in=[c.pk for c in cases])}
    with mock.patch(DISPATCH, side_effect=BrokerOperationalError("down")) as apply_async:
        counts = sweeper.case_sweep_stuck()
    assert apply_async.call_count == 1  # stops at the first failed publish: the broker is down
    assert counts["deferred"] == 3
    after = {c.pk: c.updated_at for c in Case.objects.filter(pk__in=[c.pk for c in cases])}
    assert after == before
    with mock.patch(DISPATCH) as apply_async:  # the broker is back: the next sweep sends all
        counts = sweeper.case_sweep_stuck()
    assert counts["redispatched"] == 3
    assert counts["deferred"] == 0


# --- registry -----------------------------------------------------------------------------------------------


def test_register_model_command_is_idempotent_and_activates_first(db, tiny_artifact, tmp_path):
    out = io.StringIO()
    call_command("register_model", str(tiny_artifact), stdout=out)
    assert "registered (active)" in out.getvalue()
    version = ModelVersion.objects.get()
    assert version.status == ModelVersion.Status.ACTIVE
    assert version.thresholds == {"balanced": 0.5, "high_sensitivity": 0.3}
    assert version.gradcam_layer
    assert version.input_spec["size"] == 64
    call_command("register_model", str(tiny_artifact), stdout=out)
    assert "already registered" in out.getvalue()
    assert ModelVersion.objects.count() == 1

    from ml.testing import make_tiny_artifact

    second = make_tiny_artifact(tmp_path / "second", seed=2, version="tiny-second")
    call_command("register_model", str(second), stdout=out)  # stays a candidate
    assert ModelVersion.objects.get(version="tiny-second").status == "candidate"
    call_command("register_model", str(second), "--activate", stdout=out)
    statuses = dict(ModelVersion.objects.values_list("version", "status"))
    assert statuses == {"tiny-test": "retired", "tiny-second": "active"}


def test_register_model_refuses_tampered_or_conflicting_artifacts(db, tiny_artifact, tmp_path):
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_artifact, tampered)
    with (tampered / "model.keras").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CommandError, match="sha256"):
        call_command("register_model", str(tampered))
    with pytest.raises(CommandError, match="card"):
        call_command("register_model", str(tmp_path))
    assert not ModelVersion.objects.exists()

    from ml.testing import make_tiny_artifact

    call_command("register_model", str(tiny_artifact), stdout=io.StringIO())
    other = make_tiny_artifact(tmp_path / "other", seed=5)  # same version name, other weights
    with pytest.raises(ModelArtifactError, match="already registered"):
        model_services.model_version_register(artifact_dir=other)


def test_register_stores_paths_inside_the_project_relative(db, settings, tiny_artifact):
    settings.BASE_DIR = tiny_artifact.parent
    version, _ = model_services.model_version_register(artifact_dir=tiny_artifact)
    assert version.artifact_dir == tiny_artifact.name


# --- import hygiene ------------------------------------------------------------------------------------------


def test_importing_tasks_and_services_does_not_import_tensorflow():
    code = (
        "import os, sys, django;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'fracture_portal.settings_test');"
        "django.setup();"
        "import diagnosis.tasks, diagnosis.services.predictions, diagnosis.services.prediction_results,"
        " diagnosis.services.sweeper, diagnosis.services.models, diagnosis.views.results;"
        "bad = [m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules];"
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
