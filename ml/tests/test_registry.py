from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ml import registry
from ml.config import ImageSpec
from ml.inference import labels_at, predict
from ml.registry import ChecksumMismatchError, InvalidArtifactError, ModelCard
from ml.testing import make_tiny_artifact


def test_card_round_trip():
    card = ModelCard(
        version="v1",
        architecture="plain",
        spec=ImageSpec(size=96, clahe=False),
        thresholds={"balanced": 0.4, "high_sensitivity": 0.1},
        temperature=1.7,
        metrics={"auroc": 0.9},
        training={"epochs": 3},
    )
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card
    assert again.threshold == 0.4


def test_card_requires_both_operating_points():
    with pytest.raises(ValueError):
        ModelCard(version="v", architecture="plain", thresholds={"balanced": 0.5})


def test_save_load_round_trip_predicts_identically(tmp_path):
    out = make_tiny_artifact(tmp_path / "art", size=32, seed=3, version="v-rt")
    card = registry.read_card(out)
    assert card.version == "v-rt"
    assert len(card.sha256) == 64
    assert card.created_at
    model, loaded_card = registry.load(out)
    assert loaded_card == card
    batch = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype(np.float32)
    probs = predict(model, batch)
    assert probs.shape == (3,)
    assert np.all((probs >= 0) & (probs <= 1))
    model2, _ = registry.load(out)
    assert np.allclose(predict(model2, batch), probs, atol=1e-6)
    assert not list(tmp_path.glob(".art.tmp-*"))


def test_save_replaces_existing_artifact_atomically(tmp_path):
    out = make_tiny_artifact(tmp_path / "art", size=32, seed=0, version="one")
    make_tiny_artifact(out, size=32, seed=1, version="two")
    assert registry.read_card(out).version == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_checksum_mismatch_is_refused(tmp_path):
    out = make_tiny_artifact(tmp_path / "art", size=32)
    card = registry.read_card(out)
    registry.write_card(dataclasses.replace(card, sha256="0" * 64), out)
    with pytest.raises(ChecksumMismatchError):
        registry.load(out)


def test_tampered_model_file_is_refused(tmp_path):
    out = make_tiny_artifact(tmp_path / "art", size=32)
    with (out / registry.MODEL_FILE).open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(ChecksumMismatchError):
        registry.verify(out)


def test_missing_card_is_invalid(tmp_path):
    with pytest.raises(InvalidArtifactError):
        registry.read_card(tmp_path)


def test_labels_at_operating_points():
    thresholds = {"balanced": 0.5, "high_sensitivity": 0.2}
    assert labels_at(0.3, thresholds) == {"balanced": False, "high_sensitivity": True}
    assert labels_at(0.5, thresholds) == {"balanced": True, "high_sensitivity": True}
    assert labels_at(0.1, thresholds) == {"balanced": False, "high_sensitivity": False}


def test_card_json_is_strict_json(tmp_path):
    out = make_tiny_artifact(tmp_path / "art", size=32)
    card = registry.read_card(out)
    metrics = {"test": {"sensitivity": float("nan"), "auroc": np.float64(0.5), "ci": (0.1, 0.9)}}
    registry.write_card(dataclasses.replace(card, metrics=metrics), out)
    text = (out / registry.CARD_FILE).read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["metrics"]["test"] == {"sensitivity": None, "auroc": 0.5, "ci": [0.1, 0.9]}
    registry.verify(out)


def test_json_safe_makes_plain_json_values_and_rounds_on_request():
    value = {
        1: (np.float32(0.25), float("nan"), np.int64(3)),
        "auroc": 0.812345678,
        "inf": float("inf"),
        "flag": True,
    }
    assert registry.json_safe(value) == {
        "1": [0.25, None, 3],
        "auroc": 0.812345678,
        "inf": None,
        "flag": True,
    }
    rounded = registry.json_safe(value, digits=5)
    assert rounded["auroc"] == 0.81235
    assert rounded["flag"] is True  # booleans are not numbers to round
    json.dumps(rounded, allow_nan=False)
