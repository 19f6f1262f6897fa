"""Training, evaluation and prediction end to end on a generated tiny folder dataset (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import evaluate as ml_evaluate
from ml import predict as ml_predict
from ml import registry
from ml import train as ml_train
from ml.config import TrainConfig
from ml.tests.conftest import make_folder_dataset

TINY = ["--arch", "plain", "--size", "32", "--width", "4", "--depth", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), per_class=6, size=40)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    rc = ml_train.main(["--data", str(tiny_data), "--out", str(out), "--epochs", "1", *TINY])
    assert rc == 0
    return out


def test_train_cli_writes_a_loadable_artifact(trained, capsys):
    card = registry.read_card(trained)
    assert card.architecture == "plain"
    assert card.spec.size == 32
    assert set(card.thresholds) == {"balanced", "high_sensitivity"}
    assert card.temperature > 0
    assert card.metrics["val"]["n"] == 12
    assert card.training["epochs_run"] == 1
    assert (trained / "plots" / "training_curves.png").stat().st_size > 1000
    assert not (trained.parent / "tiny.work").exists()  # work dir cleaned after success
    registry.verify(trained)


def test_evaluate_cli_reports_and_records_metrics(trained, tiny_data, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = ml_evaluate.main(
        [
            "--model",
            str(trained),
            "--data",
            str(tiny_data),
            "--split",
            "test",
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--write-card",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUROC" in text
    assert "high_sensitivity" in text
    result = json.loads((out / "metrics_test.json").read_text())
    assert result["n"] == 12
    assert 0.0 <= result["auroc"] <= 1.0
    assert result["auroc_ci95"][0] <= result["auroc"] <= result["auroc_ci95"][1]
    for name in ("roc_test.png", "pr_test.png", "reliability_test.png"):
        assert (out / name).stat().st_size > 1000
        assert (trained / "plots" / name).is_file()
    assert registry.read_card(trained).metrics["test"]["n"] == 12
    registry.verify(trained)  # recording metrics leaves the model file (and checksum) intact


def test_predict_cli_and_predict_files(trained, sample_files, tmp_path, capsys):
    overlay = tmp_path / "overlay.png"
    rc = ml_predict.main(
        ["--image", str(sample_files[0]), "--model", str(trained), "--out", str(overlay)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "probability of fracture" in text
    assert "operating point balanced" in text
    assert overlay.stat().st_size > 1000
    probs = ml_predict.predict_files(sample_files[:3], trained)
    assert len(probs) == 3
    assert all(0.0 <= p <= 1.0 for p in probs)
    one = ml_predict.predict_files(sample_files[:1], trained)
    assert one[0] == pytest.approx(probs[0], abs=1e-5)


def test_predict_cli_rejects_a_non_image(trained, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"<html></html>")
    assert ml_predict.main(["--image", str(bad), "--model", str(trained)]) == 2


@pytest.mark.slow
def test_train_api_progress_cancel_resume_and_finetune(tiny_data, trained, tmp_path):
    cfg = TrainConfig(
        arch="plain", pretrained=False, size=32, width=4, depth=2, batch_size=8, epochs=2, seed=1
    )
    events = []
    result = ml_train.train(
        cfg,
        tiny_data,
        tmp_path / "cancel",
        progress=events.append,
        should_stop=lambda: len(events) >= 1,
        show_progress=False,
    )
    assert result.cancelled
    assert result.artifact_dir is None
    assert not (tmp_path / "cancel").exists()
    assert events[0]["step"] == 1

    work = tmp_path / "w"
    first = ml_train.train(
        TrainConfig(**{**cfg.to_dict(), "epochs": 1}),
        tiny_data,
        tmp_path / "a",
        work_dir=work,
        keep_work=True,
        show_progress=False,
    )
    assert len(first.history) == 1
    resumed = ml_train.train(
        cfg, tiny_data, tmp_path / "b", work_dir=work, resume=True, show_progress=False
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]

    tuned = ml_train.train(
        TrainConfig(**{**cfg.to_dict(), "epochs": 1}),
        tiny_data,
        tmp_path / "ft",
        init_from=trained,
        show_progress=False,
    )
    assert tuned.card is not None
    assert tuned.card.training["init_from"] == registry.read_card(trained).version
    assert np.isfinite(tuned.best_val_auroc)


def test_calibrate_cli_refits_on_validation(trained, tiny_data, tmp_path, capsys):
    from ml import calibrate as ml_calibrate

    out = tmp_path / "recal"
    assert (
        ml_calibrate.main(["--model", str(trained), "--data", str(tiny_data), "--out", str(out)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    card = registry.verify(out)
    assert card.temperature == pytest.approx(summary["temperature"])
    assert card.sha256 != registry.read_card(trained).sha256  # the logit bias moved
    assert "test" not in card.metrics
    assert card.training["calibration"]["method"].startswith("platt")
    assert (out / "plots" / "training_curves.png").is_file()
