"""Predict on image files: `python -m ml.predict --image PATH [--model DIR] [--out overlay.png]`.

Prints the label at the card's operating point(s) and the calibrated probability, and writes the Grad-CAM
overlay (with its caption) for the image. `predict_files` is the batched form for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"


def predict_files(
    paths: Sequence[str | Path], model_dir: str | Path | None = None, *, batch_size: int = 16
) -> list[float]:
    """Calibrated fracture probabilities for image files (the shipped model by default), batched."""
    from ml import registry
    from ml.inference import predict
    from ml.model import fold_batchnorm
    from ml.preprocess import preprocess, read_image

    model, card = registry.load(model_dir or DEFAULT_MODEL_DIR)
    model = fold_batchnorm(model)
    out: list[float] = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack(
            [preprocess(read_image(p), card.spec) for p in paths[start : start + batch_size]]
        )
        out.extend(float(p) for p in predict(model, batch, temperature=card.temperature))
    return out


def analyse_file(path: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """One image -> probability, labels per operating point and the overlay (H, W, 3) uint8 RGB."""
    from ml import registry
    from ml.gradcam import gradcam_batch, overlay
    from ml.inference import calibrated, labels_at
    from ml.model import fold_batchnorm
    from ml.preprocess import preprocess, read_image, unletterbox

    model, card = registry.load(model_dir or DEFAULT_MODEL_DIR)
    model = fold_batchnorm(model)
    image = read_image(path)
    x = preprocess(image, card.spec)[np.newaxis]
    logits, maps = gradcam_batch(model, x, layer=card.gradcam_layer)
    probability = float(calibrated(logits, card.temperature)[0])
    heatmap = unletterbox(maps[0], image.shape, card.spec.size)
    labels = labels_at(probability, card.thresholds)
    return {
        "model_version": card.version,
        "probability": probability,
        "operating_point": card.default_operating_point,
        "threshold": card.threshold,
        "label": "fractured" if labels[card.default_operating_point] else "not_fractured",
        "labels": {k: "fractured" if v else "not_fractured" for k, v in labels.items()},
        "thresholds": card.thresholds,
        "overlay": overlay(image, heatmap),
    }


def main(argv: list[str] | None = None) -> int:
    import cv2

    p = argparse.ArgumentParser(prog="python -m ml.predict", description=__doc__.split("\n")[0])
    p.add_argument("--image", required=True, type=Path)
    p.add_argument(
        "--model", type=Path, default=None, help="artifact folder (default: shipped model)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="overlay PNG (default: <image>_gradcam.png)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    from ml.preprocess import InvalidImageError

    try:
        result = analyse_file(args.image, args.model)
    except (InvalidImageError, FileNotFoundError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out = args.out or args.image.with_name(f"{args.image.stem}_gradcam.png")
    cv2.imwrite(str(out), cv2.cvtColor(result.pop("overlay"), cv2.COLOR_RGB2BGR))
    result["overlay_path"] = str(out)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"label: {result['label']} (operating point {result['operating_point']}, "
            f"threshold {result['threshold']:.3f})\n"
            f"probability of fracture: {result['probability']:.3f}\n"
            + "".join(
                f"  {k}: {v} (threshold {result['thresholds'][k]:.3f})\n"
                for k, v in result["labels"].items()
            )
            + f"overlay: {out}\n"
            "Decision support only: the heat-map localisation is approximate.\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
