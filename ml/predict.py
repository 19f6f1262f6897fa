"""Predict on image files: `python -m ml.predict --image PATH [--model DIR] [--out overlay.png]`.

Prints the label at the card's operating point(s) and the calibrated probability, and writes the Grad-CAM
overlay (with its caption) for the image. `predict_files` is the batched form for scripts.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.serving import Predictor

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "locate-256-v1"


@functools.lru_cache(maxsize=2)
def _predictor(model_dir: str, sha256: str) -> Predictor:
    """One predictor per artifact (folder + checksum) per process."""
    from ml.serving import Predictor

    return Predictor.load(model_dir, expected_sha256=sha256)


def load_predictor(model_dir: str | Path | None = None) -> Predictor:
    """The `ml.serving.Predictor` of an artifact (the shipped model by default), cached."""
    from ml import registry

    folder = Path(model_dir or DEFAULT_MODEL_DIR).resolve()
    return _predictor(str(folder), registry.read_card(folder).sha256)


def _batched(paths: Sequence[str | Path], batch_size: int) -> Iterator[list[Any]]:
    from ml.preprocess import read_image

    for start in range(0, len(paths), batch_size):
        yield [read_image(p) for p in paths[start : start + batch_size]]


def predict_files(
    paths: Sequence[str | Path], model_dir: str | Path | None = None, *, batch_size: int = 16
) -> list[float]:
    """Calibrated fracture probabilities for image files (the shipped model by default), batched:
    the probabilities the portal serves."""
    predictor = load_predictor(model_dir)
    out: list[float] = []
    for images in _batched(paths, batch_size):
        out.extend(r.probability for r in predictor.predict(images, heatmaps=False))
    return out


def locate_files(
    paths: Sequence[str | Path], model_dir: str | Path | None = None, *, batch_size: int = 16
) -> list[list[dict[str, float]]]:
    """Suspected fracture sites per image file, best first: each `{"x0", "y0", "x1", "y1",
    "score"}` in pixels of the file as read (EXIF orientation applied, origin top-left), score in
    [0, 1]. Every local maximum of the model's heat-map up to the card's maximum is returned,
    without the display cut the portal applies, so callers can draw FROC curves. A model that does
    not localise proposes its Grad-CAM peak as a point scored by the image's probability."""
    from ml.metrics import heatmap_peak_candidate

    predictor = load_predictor(model_dir)
    out: list[list[dict[str, float]]] = []
    for images in _batched(paths, batch_size):
        results = predictor.predict(images, heatmaps=not predictor.localises, min_score=0.0)
        for result in results:
            if predictor.localises:
                out.append([{k: float(v) for k, v in c.items()} for c in result.candidates])
            elif result.heatmap is not None:  # asked for above
                peak = heatmap_peak_candidate(result.heatmap)
                out.append([{**c, "score": result.probability} for c in peak])
    return out


def analyse_file(path: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """One image -> probability, labels per operating point, candidates and the overlay
    (H, W, 3) uint8 RGB with the Grad-CAM map and the candidate boxes drawn."""
    from ml.gradcam import draw_candidates, overlay
    from ml.preprocess import read_image

    predictor = load_predictor(model_dir)
    card = predictor.card
    if card is None:  # Predictor.load always reads the card
        raise ValueError("the artifact has no card")
    image = read_image(path)
    result = predictor.predict([image])[0]
    labels = result.fractured_at
    if result.heatmap is None:  # predict() computes it unless told not to
        raise ValueError("the model returned no heat-map")
    picture = overlay(image, result.heatmap)
    return {
        "model_version": card.version,
        "probability": result.probability,
        "operating_point": card.default_operating_point,
        "threshold": card.threshold,
        "label": "fractured" if labels[card.default_operating_point] else "not_fractured",
        "labels": {k: "fractured" if v else "not_fractured" for k, v in labels.items()},
        "thresholds": card.thresholds,
        "candidates": result.candidates,
        "overlay": draw_candidates(picture, result.candidates),
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
            + "".join(
                f"  suspected site {i}: x {c['x0']:.0f}-{c['x1']:.0f}, y {c['y0']:.0f}-{c['y1']:.0f}"
                f" (score {c['score']:.2f})\n"
                for i, c in enumerate(result["candidates"], 1)
            )
            + f"overlay: {out}\n"
            "Decision support only: the heat-map localisation is approximate.\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
