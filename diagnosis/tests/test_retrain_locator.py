"""Retraining closes the localisation loop: when the snapshot holds fracture boxes and the active
model localises, the run trains a localising model on them (ml.train_locate, tiny settings), so
the candidate has the localisation head and the gate compares localisation; without boxes (or
with a classifier-only active model) the run trains the classifier as before."""

from __future__ import annotations

from unittest.mock import patch

import pytest

from diagnosis.models import Label, Review, TrainingRun
from diagnosis.selectors.models import model_version_localises
from diagnosis.services.datasets import snapshot_create
from diagnosis.services.training import (
    training_run_cancel,
    training_run_execute,
    training_run_start,
)
from diagnosis.tests.retrain_helpers import make_base_dataset, reviewed_case

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
F, N = Label.FRACTURED, Label.NOT_FRACTURED
DELAY = "diagnosis.services.training.training_run_task.delay"
# A locator in seconds: 64 px input, one cached variant, two epochs.
TINY_LOCATE = {"size": 64, "epochs": 2, "batch_size": 8, "variants": 1, "fine_tune": False}


@pytest.fixture(autouse=True)
def _training_dirs(settings, tmp_path):
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"
    settings.PROMOTION_BOOTSTRAP_SAMPLES = 50


@pytest.fixture
def active_locator(tmp_path):
    from diagnosis.services.models import model_version_register
    from ml.testing import make_tiny_locator_artifact

    artifact = make_tiny_locator_artifact(tmp_path / "models" / "tiny-loc", size=64)
    version, _ = model_version_register(artifact_dir=artifact, activate=True)
    return version


def boxed_snapshot(tmp_path, radiologist, *, with_boxes: bool = True):
    """Base images (expert boxes on the fractured ones when `with_boxes`) and reviewed images, the
    fractured ones with a radiologist's box over the planted bar."""
    base = make_base_dataset(
        tmp_path / "base", per_class={"train": 6, "val": 3, "test": 3}, with_boxes=with_boxes
    )
    for seed in range(4):
        case = reviewed_case(reviewer=radiologist, labels=[F if seed % 2 else N], seed=seed)
        if with_boxes and seed % 2:
            Review.objects.filter(image__case=case).update(
                boxes=[{"x": 0.1, "y": 0.3, "w": 0.5, "h": 0.2, "origin": "model_moved"}]
            )
    return snapshot_create(base_dir=base)


def run_on(snapshot, **config):
    with patch(DELAY):
        return training_run_start(
            trigger="manual", config={**TINY_LOCATE, **config, "snapshot_id": snapshot.pk}
        )


def test_boxes_and_a_localising_active_model_train_a_locator(tmp_path, radiologist, active_locator):
    snapshot = boxed_snapshot(tmp_path, radiologist)
    assert snapshot.counts["boxes"]["total"] > 0
    run = run_on(snapshot)
    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log + run.error
    assert "a localising model on" in run.log
    candidate = run.result_version
    assert model_version_localises(candidate)  # the candidate has the localisation head
    card = candidate.card
    assert card["architecture"].endswith("_locator")
    assert card["training"]["config"]["size"] == 64
    assert card["training"]["config"]["epochs"] == 2
    # trained on the snapshot's boxes: the reviewed ones and the base's expert ones
    assert card["training"]["data"]["train_boxes"] > 0
    # the gate compared localisation on the frozen test split's boxes
    localisation = run.decision["localisation"]
    assert localisation, run.decision
    assert run.progress.get("epoch") == 2
    assert "val_top1" in run.progress


def test_fine_tuning_starts_the_locator_from_the_active_model(
    tmp_path, radiologist, active_locator
):
    """With fine_tune (the default) the run starts from the active locator's weights: at a zero
    learning rate the candidate keeps them exactly (the recipe's other keys as before)."""
    import numpy as np

    from diagnosis import inference
    from ml import registry

    snapshot = boxed_snapshot(tmp_path, radiologist)
    run = run_on(snapshot, fine_tune=True, epochs=1, lr=0.0)
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log + run.error
    assert "fine-tuning it" in run.log
    candidate, _ = registry.load(inference.artifact_path(run.result_version.artifact_dir))
    active, _ = registry.load(inference.artifact_path(active_locator.artifact_dir))
    for name in ("loc", "loc_conv2", "logit"):
        for got, want in zip(
            candidate.get_layer(name).get_weights(),
            active.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
    assert run.result_version.card["training"]["config"]["init_from"]


def test_without_boxes_the_classifier_is_trained_as_before(tmp_path, radiologist, active_locator):
    snapshot = boxed_snapshot(tmp_path, radiologist, with_boxes=False)
    assert snapshot.counts["boxes"]["total"] == 0
    with (
        patch("diagnosis.training_bridge.train_locator") as locator,
        patch(
            "diagnosis.training_bridge.train_model", side_effect=RuntimeError("classifier path")
        ) as classifier,
    ):
        training_run_execute(run_id=run_on(snapshot).pk)
    locator.assert_not_called()
    classifier.assert_called_once()
    run = TrainingRun.objects.get()
    assert "the snapshot has no fracture boxes" in run.log


def test_a_classifier_only_active_model_keeps_the_classifier_path(tmp_path, radiologist):
    from diagnosis.services.models import model_version_register
    from ml.testing import make_tiny_artifact

    artifact = make_tiny_artifact(tmp_path / "models" / "tiny-cls", size=48, version="tiny-cls")
    model_version_register(artifact_dir=artifact, activate=True)
    snapshot = boxed_snapshot(tmp_path, radiologist)
    with (
        patch("diagnosis.training_bridge.train_locator") as locator,
        patch(
            "diagnosis.training_bridge.train_model", side_effect=RuntimeError("classifier path")
        ) as classifier,
    ):
        training_run_execute(run_id=run_on(snapshot).pk)
    locator.assert_not_called()
    classifier.assert_called_once()


def test_cancelling_a_locator_run_registers_nothing(
    tmp_path, radiologist, active_locator, settings
):
    snapshot = boxed_snapshot(tmp_path, radiologist)
    run = run_on(snapshot, epochs=5)
    from diagnosis.services import training

    real = training._RunCallbacks.progress

    def cancel_after_first_epoch(self, info):
        real(self, info)
        if info.get("epoch") == 1:
            training_run_cancel(run=TrainingRun.objects.get(pk=self.run_id), user=None)

    with patch.object(training._RunCallbacks, "progress", cancel_after_first_epoch):
        training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED, run.log + run.error
    assert run.result_version is None
    assert not any((settings.MODEL_STORE_DIR).glob("retrain-*"))
