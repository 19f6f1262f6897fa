"""The only bridge from diagnosis into ml/.

TensorFlow is imported lazily, inside the worker process that runs a prediction (never at import
time of this module, the services or the tasks), and each model is loaded once per process, cached
by (artifact folder, sha256). Functions take plain values (bytes, paths, dicts) and return
dataclasses; ml's ValueErrors become domain errors here.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from diagnosis.exceptions import ModelArtifactError, UnreadableImageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ml.registry import ModelCard
    from ml.serving import Predictor

logger = logging.getLogger(__name__)

# zlib level 1: encoding both PNGs of an image took 15 ms instead of 24 ms at level 3 (2 cores),
# for ~10 % more bytes; the heat-maps are smooth and small either way.
PNG_COMPRESSION = 1


@dataclass(frozen=True)
class CardInfo:
    """What the registry stores about an artifact (read from card.json, no TensorFlow)."""

    version: str
    architecture: str
    input_spec: dict[str, Any]
    gradcam_layer: str
    thresholds: dict[str, float]
    default_operating_point: str
    temperature: float
    metrics: dict[str, Any]
    sha256: str
    card: dict[str, Any]


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: calibrated probability, decision per operating point, heat-map PNG."""

    probability: float
    fractured_at: dict[str, bool]
    # The colourised heat-map at the canonical image size, as a palette PNG with transparency
    # (the layer the pages and API clients put over the image; `overlay_render` burns it in).
    heatmap_png: bytes
    # Suspected fracture sites from a model that localises, best first: {"x0", "y0", "x1", "y1",
    # "score"} in pixels of the canonical image (empty for a classifier-only model).
    candidates: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def artifact_path(artifact_dir: str) -> Path:
    """Registry paths are stored relative to the project when inside it (portable across hosts)."""
    path = Path(artifact_dir)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


def artifact_dir_for_storage(path: Path) -> str:
    """The inverse of `artifact_path`: relative to the project when inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def _card_info(card: ModelCard) -> CardInfo:
    """The card as plain JSON values (`ml.registry.json_safe`: a NaN sensitivity on a subgroup
    without positives becomes null, which jsonb and SQLite's JSON_VALID accept)."""
    from ml.registry import json_safe

    return CardInfo(
        version=card.version,
        architecture=card.architecture,
        input_spec=json_safe(card.spec.to_dict()),
        gradcam_layer=card.gradcam_layer,
        thresholds=json_safe({k: float(v) for k, v in card.thresholds.items()}),
        default_operating_point=card.default_operating_point,
        temperature=float(card.temperature),
        metrics=json_safe(dict(card.metrics)),
        sha256=card.sha256,
        card=json_safe(card.to_dict()),
    )


def artifact_verify(artifact_dir: Path) -> CardInfo:
    """Read card.json and check model.keras against its sha256 (hashing only, no TensorFlow)."""
    from ml import registry

    try:
        return _card_info(registry.verify(artifact_dir))
    except (registry.InvalidArtifactError, registry.ChecksumMismatchError) as exc:
        raise ModelArtifactError(str(exc)) from exc
    except OSError as exc:
        raise ModelArtifactError(f"cannot read the artifact folder: {exc.strerror}") from exc


@functools.lru_cache(maxsize=2)
def _load(artifact_dir: str, sha256: str) -> Predictor:
    """Load once per process; keyed by folder and checksum so a replaced artifact reloads. The
    predictor serves the folded graph (BatchNormalization folded into the convolutions: same
    outputs, about half the work per model pass), the one ml.serving builds for every caller."""
    from ml import registry  # TensorFlow is first imported here, in the worker child
    from ml.serving import Predictor

    started = time.perf_counter()
    try:
        predictor = Predictor.load(artifact_path(artifact_dir), expected_sha256=sha256)
    except (registry.InvalidArtifactError, registry.ChecksumMismatchError) as exc:
        raise ModelArtifactError(str(exc)) from exc
    logger.info(
        "model loaded",
        extra={
            "model_version": predictor.version,
            "load_ms": (time.perf_counter() - started) * 1e3,
        },
    )
    return predictor


def model_preload(*, artifact_dir: str, sha256: str) -> None:
    """Load (and trace) the model ahead of the first task, e.g. when a worker child starts."""
    _load(artifact_dir, sha256).warm_up()


def runtime_warm_up() -> None:
    """Import TensorFlow and the ml modules (seconds) before any task needs them."""
    import tensorflow  # noqa: F401

    import ml.gradcam
    import ml.preprocess
    import ml.registry
    import ml.serving  # noqa: F401


def model_pass_size(waiting: int) -> int:
    """Images per model pass: settings.INFERENCE_MODEL_BATCH, or with 0 (auto) everything waiting.
    Batching pays on CPU too: with the shipped model on 2 cores a pass of 16 took 14.7 ms per
    image against 21.4 ms one at a time (bench/inference_model_pass.py, docs/benchmarks.md)."""
    configured = int(getattr(settings, "INFERENCE_MODEL_BATCH", 0) or 0)
    return configured if configured > 0 else max(1, waiting)


@functools.cache
def _image_pool() -> ThreadPoolExecutor:
    """Threads for the per-image work of a batch (decoding, preprocessing, heat-map encoding): it
    runs in OpenCV, Pillow and zlib, which release the GIL, so a batch uses every core between
    model passes instead of one (the model pass itself is multi-threaded by TensorFlow). Created
    in the worker child on first use, never before the fork."""
    return ThreadPoolExecutor(
        max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="inference-image"
    )


def _map(pool: ThreadPoolExecutor, fn: Any, items: list[Any]) -> list[Any]:
    """`fn` over `items` in order: on the pool for several, inline for one (nothing to share)."""
    if len(items) < 2:
        return [fn(item) for item in items]
    return list(pool.map(fn, items))


def _encode_png(array: npt.NDArray[np.uint8]) -> bytes:
    import cv2

    if array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def overlay_render(*, image: bytes, heatmap_png: bytes) -> bytes:
    """The captioned overlay PNG (radiograph with the heat-map and its caption burned in) from a
    canonical image and its stored heat-map; rendered when first asked for (no TensorFlow)."""
    from ml import gradcam, preprocess

    try:
        decoded = preprocess.decode_image(image)
        heatmap = gradcam.heatmap_from_png(heatmap_png)
    except (preprocess.InvalidImageError, ValueError) as exc:
        raise UnreadableImageError(f"The overlay cannot be rendered: {exc}") from exc
    return _encode_png(gradcam.overlay(decoded, heatmap))


def run_batch(
    *,
    artifact_dir: str,
    sha256: str,
    images: list[bytes],
    thresholds: dict[str, float],
    temperature: float,
    pass_size: int = 0,
) -> list[ImageResult | UnreadableImageError]:
    """Predict a batch of canonical images through the process's `ml.serving.Predictor`; each
    model pass (forward + Grad-CAM backward) takes `pass_size` images (0: `model_pass_size()`).

    `thresholds` and `temperature` are the registered version's (they may differ from its card
    after an admin re-tuned them; a locator's card fuses its classifier and heat-map outputs
    first, with temperature 1).
    Returns one entry per input, in order: an ImageResult, or an UnreadableImageError for an image
    that cannot be decoded (the others still run). Timings are milliseconds per image; a shared
    model pass is divided evenly over its images.
    """
    from ml import gradcam, preprocess

    predictor = _load(artifact_dir, sha256)
    pool = _image_pool()

    def decode(data: bytes) -> tuple[Any, float] | UnreadableImageError:
        started = time.perf_counter()
        try:
            return preprocess.decode_image(data), (time.perf_counter() - started) * 1e3
        except preprocess.InvalidImageError as exc:
            return UnreadableImageError(f"The image could not be decoded: {exc}")

    decoded = _map(pool, decode, images)
    readable = [i for i, d in enumerate(decoded) if not isinstance(d, UnreadableImageError)]
    outcomes: list[ImageResult | UnreadableImageError | None] = [
        d if isinstance(d, UnreadableImageError) else None for d in decoded
    ]
    if not readable:
        return [o for o in outcomes if o is not None]
    size = pass_size if pass_size > 0 else model_pass_size(len(readable))
    predictions = predictor.predict(
        [decoded[i][0] for i in readable],  # type: ignore[index]
        pass_size=size,
        temperature=temperature,
        thresholds=thresholds,
        map_fn=lambda fn, items: _map(pool, fn, items),
    )

    def render(item: tuple[int, Any]) -> tuple[int, ImageResult]:
        index, prediction = item
        started = time.perf_counter()
        png = gradcam.heatmap_png(prediction.heatmap)
        timings = dict(prediction.timings)
        timings["preprocess_ms"] = round(timings.get("preprocess_ms", 0.0) + decoded[index][1], 2)  # type: ignore[index]
        timings["gradcam_ms"] = round(
            timings.get("gradcam_ms", 0.0) + (time.perf_counter() - started) * 1e3, 2
        )
        return index, ImageResult(
            probability=prediction.probability,
            fractured_at=prediction.fractured_at,
            heatmap_png=png,
            candidates=prediction.candidates,
            timings=timings,
        )

    for index, result in _map(pool, render, list(zip(readable, predictions, strict=True))):
        outcomes[index] = result
    return [o for o in outcomes if o is not None]
