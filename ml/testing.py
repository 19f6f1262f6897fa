"""Helpers for tests elsewhere in the project (real artifacts, random weights, built in seconds)."""

from __future__ import annotations

from pathlib import Path

from ml.config import ImageSpec
from ml.model import LAST_CONV, build_model
from ml.registry import ModelCard, save


def make_tiny_artifact(
    out_dir: Path, *, size: int = 64, seed: int = 0, version: str = "tiny-test"
) -> Path:
    """A random-weight tiny plain CNN saved through `ml.registry.save`; returns `out_dir`."""
    spec = ImageSpec(size=size)
    model = build_model(spec, arch="plain", width=4, depth=2, seed=seed)
    card = ModelCard(
        version=version,
        architecture="plain",
        spec=spec,
        gradcam_layer=LAST_CONV,
        thresholds={"balanced": 0.5, "high_sensitivity": 0.3},
        metrics={},
        training={"note": "random weights, for tests only", "seed": seed},
    )
    save(model, card, out_dir)
    return Path(out_dir)


def make_tiny_locator_artifact(
    out_dir: Path, *, size: int = 64, seed: int = 0, version: str = "tiny-locator-test"
) -> Path:
    """A random-weight EfficientNet-Lite0 locator (ml.localise) at a small input, saved through
    `ml.registry.save` with a localisation section in its card; returns `out_dir`."""
    from ml import localise

    spec = ImageSpec(size=size)
    model = localise.build_locator(spec, seed=seed)
    card = ModelCard(
        version=version,
        architecture="efficientnet_lite0_locator",
        spec=spec,
        gradcam_layer=localise.GRADCAM_LAYER,
        thresholds={"balanced": 0.5, "high_sensitivity": 0.3},
        localisation={
            "output": localise.LOC,
            "stride": localise.STRIDE,
            "fusion": {"logit": 1.0, "heat_peak": 0.5, "bias": 0.0},
            "max_candidates": 3,
            "min_score": 0.0,
        },
        training={"note": "random weights, for tests only", "seed": seed},
    )
    save(model, card, out_dir)
    return Path(out_dir)
