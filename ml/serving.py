"""The one way to run a model on images: `Predictor`.

A predictor is loaded once per process from a registry artifact (checksum verified, BatchNorm folded
into the convolutions: the graph that serves), and compiles one batch function per model that
returns, in a single pass, the classifier logit, the Grad-CAM map of the score that is served (the
logit, or for a model that localises, `ml.localise`, the card's fusion of logit and heat-map peak)
and, for a locator, the centre heat-map output. On top of it:

- `probabilities(raw)`: the calibrated probability (temperature scaling, or for a locator the
  Platt fusion of classifier logit and heat-map peak recorded in its card);
- `predict(images)`: per decoded image, an `ImagePrediction` with the probability, the decision at
  every operating point, the Grad-CAM map at the image's size and the ranked fracture candidates
  (boxes in the image's pixels).

Workers (diagnosis.inference), the promotion gate (ml.evaluate), `python -m ml.predict`,
`ml.predict.predict_files` / `locate_files` and the benchmarks all run models through this class, so
a candidate model is judged on exactly the graph that will serve it. No Django here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ml import localise, preprocess
from ml.config import ImageSpec
from ml.inference import calibrated, labels_at
from ml.model import LAST_CONV, LOGIT

if TYPE_CHECKING:
    import keras

    from ml.registry import ModelCard

MapFn = Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]]
DEFAULT_PASS = 32


@dataclass(frozen=True)
class ImagePrediction:
    """One image's outcome."""

    probability: float
    fractured_at: dict[str, bool]
    logit: float  # the classifier's raw logit (before calibration)
    # Grad-CAM of the served score, (H, W) in [0, 1] at the image's size (None if not asked).
    heatmap: npt.NDArray[np.float32] | None
    # Suspected fracture sites, best first: {"x0", "y0", "x1", "y1", "score"} in the image's pixels.
    candidates: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _serial_map(fn: Callable[[Any], Any], items: list[Any]) -> Iterable[Any]:
    return [fn(item) for item in items]


class Predictor:
    """A loaded model ready to serve (see the module docstring)."""

    def __init__(
        self,
        model: keras.Model,
        card: ModelCard | None = None,
        *,
        spec: ImageSpec | None = None,
        localisation: dict[str, Any] | None = None,
    ) -> None:
        """`spec` and `localisation` stand in for a card's (a model being trained has none yet)."""
        self.model = model
        self.card = card
        self.spec = spec or (card.spec if card is not None else ImageSpec())
        self.gradcam_layer = (card.gradcam_layer if card is not None else "") or LAST_CONV
        self.localisation: dict[str, Any] = (
            dict(card.localisation) if card is not None else dict(localisation or {})
        )
        self.thresholds: dict[str, float] = (
            {k: float(v) for k, v in card.thresholds.items()} if card is not None else {}
        )
        self.temperature = float(card.temperature) if card is not None else 1.0
        self._functions: dict[bool, Any] = {}

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, artifact_dir: str | Path, *, expected_sha256: str = "") -> Predictor:
        """Verify the artifact's checksum (and that it is `expected_sha256` when given), load it and
        fold its BatchNorm layers. Raises ml.registry's InvalidArtifactError/ChecksumMismatchError."""
        from ml import registry
        from ml.model import fold_batchnorm

        model, card = registry.load(artifact_dir)
        if expected_sha256 and card.sha256 != expected_sha256:
            raise registry.ChecksumMismatchError(
                "the artifact on disk is not the registered version (sha256)"
            )
        return cls(fold_batchnorm(model), card)

    @property
    def version(self) -> str:
        return self.card.version if self.card is not None else ""

    @property
    def localises(self) -> bool:
        return bool(self.localisation)

    # --- the compiled pass ---------------------------------------------------------------------

    def _function(self, gradcam: bool) -> Any:
        fn = self._functions.get(gradcam)
        if fn is not None:
            return fn
        import keras
        import tensorflow as tf

        model = self.model
        logit_tensor = model.get_layer(LOGIT).output
        outputs = [logit_tensor]
        if self.localises:
            outputs.append(model.get_layer(self.localisation.get("output", localise.LOC)).output)
        if gradcam:
            outputs.insert(0, model.get_layer(self.gradcam_layer).output)
        graph = keras.Model(model.input, outputs)
        signature = [tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)]
        localises = self.localises
        fusion = self.localisation.get("fusion") if localises else None
        if fusion:
            fusion = {k: float(fusion[k]) for k in ("logit", "heat_peak")}

        if gradcam:
            # one trace for every batch size
            @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
            def fn(x: Any) -> tuple[Any, Any, Any]:
                with tf.GradientTape() as tape:
                    outs = graph(x, training=False)
                    fmap, logits = outs[0], tf.reshape(outs[1], [-1])
                    score = logits
                    if fusion:
                        # a locator serves the fusion of its logit and its heat-map peak: the map
                        # explains that served score, not the classifier logit alone
                        peak = tf.reduce_max(outs[2][..., 0], axis=(1, 2))
                        score = fusion["logit"] * logits + fusion["heat_peak"] * peak
                    # each image's score depends only on its own features: one gradient of the sum
                    total = tf.reduce_sum(score)
                grads = tape.gradient(
                    total, fmap, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
                weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                cam = tf.nn.relu(tf.reduce_sum(fmap * weights, axis=-1))
                cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True))
                loc = outs[2] if localises else tf.zeros((tf.shape(x)[0], 0, 0, 0))
                return logits, cam, loc

        else:

            @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
            def fn(x: Any) -> tuple[Any, Any, Any]:
                outs = graph(x, training=False)
                outs = outs if isinstance(outs, list | tuple) else [outs]
                logits = tf.reshape(outs[0], [-1])
                loc = outs[1] if localises else tf.zeros((tf.shape(x)[0], 0, 0, 0))
                return logits, tf.zeros((tf.shape(x)[0], 0, 0)), loc

        self._functions[gradcam] = fn
        return fn

    def raw_outputs(
        self,
        batch: npt.NDArray[np.float32],
        *,
        gradcam: bool = False,
        pass_size: int = DEFAULT_PASS,
    ) -> dict[str, Any]:
        """(N, size, size, 1) preprocessed -> {"logit": (N,), "cam": (N, h, w) or None,
        "loc": (N, g, g, 3) or None} in passes of `pass_size`."""
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4 or batch.shape[-1] != 1:
            raise ValueError(f"expected (N, size, size, 1), got {batch.shape}")
        fn = self._function(gradcam)
        logits, cams, locs = [], [], []
        for start in range(0, len(batch), max(1, pass_size)):
            lg, cam, loc = self._model_pass(fn, batch[start : start + pass_size])
            logits.append(lg.numpy())
            cams.append(cam.numpy())
            locs.append(loc.numpy())
        if not logits:
            return {"logit": np.zeros(0, np.float32), "cam": None, "loc": None}
        return {
            "logit": np.concatenate(logits).astype(np.float32),
            "cam": np.concatenate(cams).astype(np.float32) if gradcam else None,
            "loc": np.concatenate(locs).astype(np.float32) if self.localises else None,
        }

    @staticmethod
    def _model_pass(fn: Any, chunk: npt.NDArray[np.float32]) -> tuple[Any, Any, Any]:
        """One call of the compiled function on one chunk (a seam for counting passes)."""
        logits, cams, locs = fn(chunk)
        return logits, cams, locs

    # --- post-processing -----------------------------------------------------------------------

    def probabilities(
        self, raw: dict[str, Any], *, temperature: float | None = None
    ) -> npt.NDArray[np.float32]:
        """Calibrated probabilities of "fractured" from `raw_outputs`: sigmoid(z / T), z the
        classifier logit, or for a locator the card's fusion of classifier logit and heat-map peak;
        T the card's temperature (1 for a locator, whose fusion is its calibration) unless the
        registry holds another one for this version (`temperature`)."""
        logit = np.asarray(raw["logit"], np.float64)
        fusion = self.localisation.get("fusion") if self.localises else None
        if fusion and raw.get("loc") is not None:
            peak = localise.heat_peak_logit(raw["loc"])
            logit = fusion["logit"] * logit + fusion["heat_peak"] * peak + fusion["bias"]
        return calibrated(logit, self.temperature if temperature is None else temperature)

    def candidates(
        self,
        loc: npt.NDArray[np.floating],
        shape_hw: tuple[int, int],
        *,
        min_score: float | None = None,
    ) -> list[dict[str, float]]:
        """One image's LOC output -> candidates in the image's pixels, best first (the card's cut
        unless `min_score` is given; 0 keeps every local maximum up to the card's maximum)."""
        cut = float(self.localisation.get("min_score", 0.0)) if min_score is None else min_score
        return localise.decode_candidates(
            loc,
            localise.Geometry(int(shape_hw[0]), int(shape_hw[1]), self.spec.size),
            max_candidates=int(self.localisation.get("max_candidates", 5)),
            min_score=cut,
        )

    def prepare(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """A decoded (H, W) uint8 image -> the model input (size, size, 1)."""
        return preprocess.preprocess(image, self.spec)

    def predict(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        *,
        pass_size: int = DEFAULT_PASS,
        heatmaps: bool = True,
        min_score: float | None = None,
        temperature: float | None = None,
        thresholds: dict[str, float] | None = None,
        map_fn: MapFn = _serial_map,
    ) -> list[ImagePrediction]:
        """Decoded grayscale images -> one ImagePrediction each, in order. `map_fn` runs the
        per-image work (preprocessing, heat-map resizing, candidate decoding) e.g. on a thread pool.
        `temperature` and `thresholds` override the card's (the registry row of a version may hold
        re-tuned ones). Timings are milliseconds per image (a shared model pass divided evenly)."""
        if not images:
            return []

        def prep(image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], float]:
            started = time.perf_counter()
            return self.prepare(image), (time.perf_counter() - started) * 1e3

        prepared = list(map_fn(prep, list(images)))
        tensors = np.stack([t for t, _ in prepared])
        started = time.perf_counter()
        raw = self.raw_outputs(tensors, gradcam=heatmaps, pass_size=pass_size or len(tensors))
        model_ms = (time.perf_counter() - started) * 1e3 / len(tensors)
        probs = self.probabilities(raw, temperature=temperature)
        operating_points = self.thresholds if thresholds is None else thresholds

        def finish(i: int) -> ImagePrediction:
            started = time.perf_counter()
            shape = images[i].shape[:2]
            heat = (
                preprocess.unletterbox(raw["cam"][i], shape, self.spec.size)
                if raw["cam"] is not None
                else None
            )
            cands = (
                self.candidates(raw["loc"][i], shape, min_score=min_score)
                if raw["loc"] is not None
                else []
            )
            p = float(probs[i])
            return ImagePrediction(
                probability=p,
                fractured_at=labels_at(p, operating_points),
                logit=float(raw["logit"][i]),
                heatmap=heat,
                candidates=cands,
                timings={
                    "preprocess_ms": round(prepared[i][1], 2),
                    "model_ms": round(model_ms, 2),
                    "gradcam_ms": round((time.perf_counter() - started) * 1e3, 2),
                },
            )

        return list(map_fn(finish, list(range(len(images)))))

    def warm_up(self) -> None:
        """Trace the serving function (first call costs seconds) before the first real image."""
        size = self.spec.size
        self.raw_outputs(np.zeros((1, size, size, 1), np.float32), gradcam=True)
