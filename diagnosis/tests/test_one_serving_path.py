"""One way to run a model: the worker (diagnosis.inference.run_batch), the promotion gate
(training_bridge.evaluate_candidate -> ml.evaluate) and the outside API (ml.predict) all go through
ml.serving.Predictor, so a candidate is judged on exactly the numbers it will serve."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diagnosis import inference, training_bridge

pytestmark = pytest.mark.slow  # builds and traces small Keras models


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """test/{fractured,not_fractured}/*.png of assorted sizes, fractured ones with a bright bar,
    and boxes.csv marking the bars."""
    root = tmp_path_factory.mktemp("gate-data")
    rng = np.random.default_rng(3)
    rows = []
    for label in ("fractured", "not_fractured"):
        folder = root / "test" / label
        folder.mkdir(parents=True)
        for i in range(6):
            h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
            image = rng.integers(20, 90, (h, w), dtype=np.uint8)
            if label == "fractured":
                y, x = int(rng.integers(5, h - 15)), int(rng.integers(5, w - 15))
                image[y : y + 8, x : x + 12] = 250
                rows.append(
                    {
                        "id": f"{label}{i}",
                        "split": "test",
                        "x0": x,
                        "y0": y,
                        "x1": x + 12,
                        "y1": y + 8,
                        "polygon": "",
                    }
                )
            (folder / f"{label}{i}.png").write_bytes(_png(image))
    with (root / "boxes.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "split", "x0", "y0", "x1", "y1", "polygon"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def locator(tmp_path_factory) -> Path:
    from ml.testing import make_tiny_locator_artifact

    return make_tiny_locator_artifact(tmp_path_factory.mktemp("gate-locator") / "loc")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("gate-classifier") / "cls", size=64)


def _worker(artifact: Path, files: list[Path]) -> list[inference.ImageResult]:
    from ml import registry

    card = registry.read_card(artifact)
    results = inference.run_batch(
        artifact_dir=str(artifact),
        sha256=card.sha256,
        images=[f.read_bytes() for f in files],
        thresholds=card.thresholds,
        temperature=card.temperature,
    )
    assert all(isinstance(r, inference.ImageResult) for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("which", ["locator", "classifier"])
def test_gate_and_worker_produce_the_same_numbers(which, request, dataset, tmp_path):
    from ml import evaluate, metrics
    from ml.serving import Predictor

    artifact = request.getfixturevalue(which)
    scores = evaluate.score_split(Predictor.load(artifact), dataset, "test")
    files = [
        dataset
        / "test"
        / ("fractured" if i.startswith("fractured") else "not_fractured")
        / f"{i}.png"
        for i in scores.ids
    ]
    served = _worker(artifact, files)
    assert scores.probabilities == pytest.approx([r.probability for r in served], abs=1e-6)
    if which == "locator":
        for gate_cands, worker in zip(scores.candidates, served, strict=True):
            # the gate sees every candidate, the worker stores those above the card's cut (0 here)
            assert gate_cands == worker.candidates
    else:
        assert all(r.candidates == [] for r in served)

    evaluation = training_bridge.evaluate_candidate(
        candidate_dir=artifact,
        active_dir=None,
        data_dir=dataset,
        split="test",
        plots_dir=tmp_path / "plots",
        n_boot=50,
    )
    labels = [1 if i.startswith("fractured") else 0 for i in scores.ids]
    expected = metrics.auroc(labels, [r.probability for r in served])
    assert evaluation.candidate["auroc"] == pytest.approx(round(expected, 4), abs=1e-4)
    assert evaluation.candidate["localisation"]["fractured_images"] == 6


def test_gate_compares_top1_localisation_of_candidate_and_active(
    locator, classifier, dataset, tmp_path
):
    evaluation = training_bridge.evaluate_candidate(
        candidate_dir=locator,
        active_dir=classifier,
        data_dir=dataset,
        split="test",
        plots_dir=tmp_path / "plots",
        n_boot=100,
    )
    loc = evaluation.localisation
    assert loc is not None
    assert loc["fractured_images"] == 6
    assert loc["lower"] <= loc["difference"] <= loc["upper"]
    assert loc["difference"] == pytest.approx(loc["top1_candidate"] - loc["top1_active"])
    assert evaluation.candidate["localisation"]["source"] == "candidates"
    assert evaluation.active["localisation"]["source"] == "gradcam_peak"
    assert (tmp_path / "plots" / "roc.png").is_file()


def test_promotion_refuses_a_candidate_that_localises_worse():
    from diagnosis.services.models import promotion_decide

    comparison = {"difference": 0.01, "lower": -0.005, "upper": 0.03}
    worse = {
        "difference": -0.2,
        "lower": -0.31,
        "upper": -0.1,
        "top1_candidate": 0.4,
        "top1_active": 0.6,
        "fractured_images": 80,
    }
    decision = promotion_decide(
        test_positives=80,
        test_negatives=400,
        comparison=comparison,
        candidate_sensitivity=0.9,
        active_sensitivity=0.9,
        localisation=worse,
        localisation_margin=0.05,
    )
    assert decision["promote"] is False
    assert decision["checks"]["localisation"] is False
    assert any("top-1 localisation 0.400 vs 0.600" in r for r in decision["reasons"])
    fine = {**worse, "difference": 0.0, "lower": -0.04, "upper": 0.05}
    assert (
        promotion_decide(
            test_positives=80,
            test_negatives=400,
            comparison=comparison,
            candidate_sensitivity=0.9,
            active_sensitivity=0.9,
            localisation=fine,
            localisation_margin=0.05,
        )["promote"]
        is True
    )
