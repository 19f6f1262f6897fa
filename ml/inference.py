"""Batched inference on preprocessed images (the model outputs one logit)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ml import metrics

if TYPE_CHECKING:
    import keras

OPERATING_POINTS = ("balanced", "high_sensitivity")
_FORWARD: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _forward_fn(model: keras.Model) -> Any:
    """A compiled forward pass per model (cached while the model lives)."""
    import tensorflow as tf

    fn = _FORWARD.get(model)
    if fn is None:
        # One trace for every batch size: a new batch size must not cost a retrace while serving.
        spec = tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)

        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def fn(x: Any) -> Any:
            return tf.reshape(model(x, training=False), [-1])

        _FORWARD[model] = fn
    return fn


def predict_logits(
    model: keras.Model, batch: npt.NDArray[np.float32], *, batch_size: int = 32, tta: bool = False
) -> npt.NDArray[np.float32]:
    """(N, size, size, 1) float32 in [0, 255] -> (N,) logits; `tta` averages with the left-right flip."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[-1] != 1:
        raise ValueError(f"expected (N, size, size, 1), got {batch.shape}")
    fn = _forward_fn(model)
    out = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        logits = fn(chunk).numpy()
        if tta:
            logits = (logits + fn(np.ascontiguousarray(chunk[:, :, ::-1])).numpy()) / 2.0
        out.append(logits)
    if not out:
        return np.zeros((0,), np.float32)
    return np.concatenate(out).astype(np.float32)


def sigmoid(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """`ml.metrics.sigmoid` as float32 (what serving stores)."""
    return metrics.sigmoid(x).astype(np.float32)


def calibrated(logits: npt.ArrayLike, temperature: float = 1.0) -> npt.NDArray[np.float32]:
    """Logits -> probabilities after temperature scaling."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def predict(
    model: keras.Model,
    batch: npt.NDArray[np.float32],
    *,
    temperature: float = 1.0,
    batch_size: int = 32,
    tta: bool = False,
) -> npt.NDArray[np.float32]:
    """(N, size, size, 1) float32 in [0, 255] -> (N,) float32 probabilities of "fractured"."""
    return calibrated(predict_logits(model, batch, batch_size=batch_size, tta=tta), temperature)


def labels_at(probability: float, thresholds: dict[str, float]) -> dict[str, bool]:
    """{operating point: fractured?} for one probability (fractured when probability >= threshold)."""
    return {name: bool(probability >= float(t)) for name, t in thresholds.items()}
