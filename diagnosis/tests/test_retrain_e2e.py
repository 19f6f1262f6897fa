"""Retraining end to end and the registry pages.

The end-to-end test runs the real pipeline on a tiny generated dataset: reviews -> snapshot ->
retrain (a tiny CNN, seconds) -> candidate and active evaluated on the same frozen test split ->
promoted or held by the rule -> new predictions reference the new version.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from unittest.mock import patch

import pytest
from django.urls import reverse

from diagnosis.models import AuditEvent, Label, ModelVersion, TrainingRun
from diagnosis.services.datasets import snapshot_create
from diagnosis.tests import factories
from diagnosis.tests.retrain_helpers import make_base_dataset, reviewed_case

pytestmark = pytest.mark.django_db
F, N = Label.FRACTURED, Label.NOT_FRACTURED
DELAY = "diagnosis.services.training.training_run_task.delay"


@pytest.fixture(autouse=True)
def _training_dirs(settings, tmp_path):
    """Model artifacts, work folders and fingerprint caches under the test's tmp dir."""
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"


# --- pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["clinician", "radiologist"])
def test_registry_pages_need_manage_models(request, client_for, who):
    client = client_for(request.getfixturevalue(who))
    assert client.get(reverse("registry:index")).status_code == 403
    assert client.post(reverse("registry:run_start")).status_code == 403
    assert client.post(reverse("registry:rollback")).status_code == 403
    assert TrainingRun.objects.count() == 0


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("registry:index"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_index_shows_versions_side_by_side_and_the_models_nav_link(admin_user, client_for):
    active = factories.ModelVersionFactory(
        status=ModelVersion.Status.ACTIVE,
        metrics={"auroc": 0.871, "auroc_ci": [0.82, 0.91], "n": 50, "positives": 9},
    )
    candidate = factories.ModelVersionFactory(
        status=ModelVersion.Status.CANDIDATE, metrics={"auroc": 0.9, "n": 50, "positives": 9}
    )
    factories.PredictionFactory(model_version=active)
    response = client_for(admin_user).get(reverse("registry:index"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="nav-models"' in html
    for text in (active.version, candidate.version, "0.871", "0.820–0.910", "Approve"):
        assert text in html
    assert "<script>" not in html  # CSP: scripts only from static files


def test_retrain_button_queues_a_run_and_refuses_a_second(admin_user, client_for):
    client = client_for(admin_user)
    with patch(DELAY):
        response = client.post(reverse("registry:run_start"), {"epochs": "3", "fine_tune": "on"})
        run = TrainingRun.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("registry:run_detail", args=[run.pk])
        assert run.config == {"epochs": 3, "fine_tune": True}
        again = client.post(reverse("registry:run_start"), {"epochs": "3"}, follow=True)
    assert "already queued or running" in again.content.decode()
    assert TrainingRun.objects.count() == 1
    status = client.get(reverse("registry:run_status", args=[run.pk])).json()
    assert status["status"] == "queued"
    assert status["in_flight"] is True
    client.post(reverse("registry:run_cancel", args=[run.pk]))
    assert client.get(reverse("registry:run_status", args=[run.pk])).json()["status"] == "cancelled"


def test_approve_reject_and_rollback_buttons(admin_user, client_for):
    client = client_for(admin_user)
    first = factories.ModelVersionFactory(status=ModelVersion.Status.CANDIDATE)
    second = factories.ModelVersionFactory(status=ModelVersion.Status.CANDIDATE)
    third = factories.ModelVersionFactory(status=ModelVersion.Status.CANDIDATE)
    client.post(reverse("registry:version_activate", args=[first.pk]))
    client.post(reverse("registry:version_activate", args=[second.pk]))
    client.post(reverse("registry:version_reject", args=[third.pk]))
    client.post(reverse("registry:rollback"))
    statuses = dict(ModelVersion.objects.values_list("version", "status"))
    assert statuses == {
        first.version: "active",
        second.version: "retired",
        third.version: "rejected",
    }
    assert client.get(reverse("registry:version_detail", args=[999999])).status_code == 404


def test_snapshot_pages_show_balance_and_export_is_a_zip(
    admin_user, radiologist, client_for, tmp_path, settings
):
    base = make_base_dataset(tmp_path / "base", per_class={"train": 3, "val": 1, "test": 1})
    for seed in range(3):
        reviewed_case(reviewer=radiologist, labels=[F], seed=seed)
    client = client_for(admin_user)
    settings.TRAINING_BASE_DATASET_DIR = str(base)
    response = client.post(reverse("registry:snapshot_new"))
    snapshot_url = response["Location"]
    page = client.get(snapshot_url).content.decode()
    assert "Counts and class balance" in page
    assert "from the base dataset" in page
    export = client.get(snapshot_url + "export.zip")
    assert export["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(export.streaming_content))).namelist()
    assert "README.md" in names
    assert "manifest.csv" in names
    assert AuditEvent.objects.filter(action="snapshot.export").count() == 1


def test_api_starts_one_run_at_a_time_for_admins_only(admin_user, clinician, client_for):
    url = "/api/v1/training/runs/"
    assert client_for(clinician).post(url, {}, content_type="application/json").status_code == 403
    client = client_for(admin_user)
    with patch(DELAY) as delay:
        response = client.post(url, {"config": {"epochs": 2}}, content_type="application/json")
        assert response.status_code == 202
        run_id = response.json()["id"]
        assert response.json()["trigger"] == "api"
        second = client.post(url, {}, content_type="application/json")
        bad = client.post(url, {"config": {"epochs": -1}}, content_type="application/json")
    assert second.status_code == 409
    assert second.json()["code"] == "training_in_progress"
    assert bad.status_code == 400
    assert delay.call_count == 0  # dispatched on commit only (the test transaction never commits)
    assert client.get(f"{url}{run_id}/").json()["status"] == "queued"
    assert client.post(f"{url}{run_id}/cancel/").json()["status"] == "cancelled"
    assert client.get(f"{url}99999/").status_code == 404


# --- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_active_model(tmp_path, settings):
    """A random-weight tiny artifact registered as the active version (worse than chance)."""
    from diagnosis.services.models import model_version_register
    from ml.testing import make_tiny_artifact

    artifact = make_tiny_artifact(
        tmp_path / "models" / "tiny-active", size=48, version="tiny-active"
    )
    version, _ = model_version_register(artifact_dir=artifact, activate=True)
    return version


TINY_CONFIG = {
    "arch": "plain",
    "pretrained": False,
    "size": 48,
    "width": 8,
    "depth": 2,
    "epochs": 5,
    "head_epochs": 0,
    "batch_size": 16,
    "lr": 0.01,
    "patience": 6,
    "augment": False,
    "fine_tune": False,
}


@pytest.mark.slow
def test_reviews_to_snapshot_to_retrain_to_promotion_to_new_predictions(
    admin_user,
    radiologist,
    client_for,
    tmp_path,
    settings,
    tiny_active_model,
    django_capture_on_commit_callbacks,
):
    from diagnosis.services.training import training_run_execute, training_run_start

    settings.PROMOTION_BOOTSTRAP_SAMPLES = 200
    # The random active model calls every image fractured at its high-sensitivity threshold
    # (sensitivity 1.0, specificity 0); a real candidate may miss one of the 10 test fractures.
    settings.PROMOTION_SENSITIVITY_TOLERANCE = 0.25
    base = make_base_dataset(tmp_path / "base", per_class={"train": 24, "val": 8, "test": 10})
    for seed in range(12):
        reviewed_case(reviewer=radiologist, labels=[F if seed % 2 else N], seed=1000 + seed)
    first = snapshot_create(user=admin_user, base_dir=base)
    waiting = factories.PredictionFactory(model_version=tiny_active_model).image.case
    waiting.status = "predicted"
    waiting.save(update_fields=["status"])

    with patch(DELAY):
        run = training_run_start(
            trigger="manual", user=admin_user, config={**TINY_CONFIG, "snapshot_id": first.pk}
        )
    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log + run.error
    candidate = run.result_version
    assert candidate.training_run == run
    assert candidate.metrics["snapshot"] == first.version
    assert candidate.metrics["n"] == 20  # the frozen test split of the base folder
    assert set(candidate.plots) == {"roc", "calibration"}
    decision = run.decision
    assert decision["active"] == "tiny-active"
    tiny_active_model.refresh_from_db()  # both evaluated on the same images, shown side by side
    assert tiny_active_model.metrics["snapshot"] == first.version
    assert tiny_active_model.metrics["n"] == 20
    assert decision["comparison"]["lower"] <= decision["comparison"]["difference"]
    # the tiny CNN learns the planted bar; the random active model does not
    assert decision["promote"] is True, decision["reasons"]
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.ACTIVE
    assert AuditEvent.objects.filter(action="model.activate", extra__reason="auto").count() == 1
    assert AuditEvent.objects.get(action="training.finish").extra["promoted"] is True
    assert run.progress.get("epoch")
    assert Path(settings.MODEL_STORE_DIR, candidate.version, "model.keras").is_file()

    client = client_for(admin_user)
    assert (
        client.get(reverse("registry:version_plot", args=[candidate.pk, "roc"])).status_code == 200
    )
    detail = client.get(reverse("registry:run_detail", args=[run.pk])).content.decode()
    assert "promoted automatically" in detail

    # re-run predictions of unreviewed cases: they now reference the new version
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("registry:repredict"))
    assert waiting.images.get().predictions.filter(model_version=candidate).count() == 1

    # a fine-tune of the new active model, on the next snapshot, under a rule it cannot meet
    # (it must beat an AUROC of ~1 by 0.5): it is evaluated on the same frozen test split and held
    settings.PROMOTION_AUROC_MARGIN = -0.5
    reviewed_case(reviewer=radiologist, labels=[F, N], seed=2000)
    with patch(DELAY):
        held = training_run_start(
            trigger="command", config={**TINY_CONFIG, "epochs": 2, "fine_tune": True}
        )
    training_run_execute(run_id=held.pk)
    held.refresh_from_db()
    assert held.status == TrainingRun.Status.SUCCEEDED, held.log + held.error
    assert held.snapshot.frozen_test_of == first
    assert held.result_version.card["training"]["init_from"] == candidate.version
    assert held.result_version.metrics["n"] == 20  # the same frozen test images
    assert held.decision["promote"] is False
    assert held.result_version.status == ModelVersion.Status.CANDIDATE
    assert ModelVersion.objects.get(status="active") == candidate
    json.dumps(held.decision)  # stored as JSON for the page and the API
    page = client.get(reverse("registry:index")).content.decode()
    assert held.result_version.version in page
    assert "Approve" in page


@pytest.mark.slow
def test_cancelling_a_running_retrain_stops_training_and_registers_nothing(
    admin_user, tmp_path, settings, tiny_active_model
):
    from diagnosis.services import training
    from diagnosis.services.training import training_run_cancel, training_run_execute

    base = make_base_dataset(tmp_path / "base", per_class={"train": 16, "val": 4, "test": 4})
    original = training._RunCallbacks.progress

    def progress_then_cancel(self, info):  # an admin presses Cancel during the first epoch
        original(self, info)
        run = TrainingRun.objects.get(pk=self.run_id)
        if not run.cancel_requested:
            training_run_cancel(run=run, user=admin_user)

    with patch(DELAY):
        run = training.training_run_start(
            trigger="manual", user=admin_user, config={**TINY_CONFIG, "base_dir": str(base)}
        )
    with patch.object(training._RunCallbacks, "progress", progress_then_cancel):
        training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.result_version is None
    assert (run.progress.get("epoch") or 0) <= 1
    assert list(ModelVersion.objects.values_list("version", flat=True)) == ["tiny-active"]
    leftovers = [
        p.name for p in Path(settings.MODEL_STORE_DIR).iterdir() if p.name != "tiny-active"
    ]
    assert leftovers == []
    assert AuditEvent.objects.filter(action="training.cancelled").count() == 1
