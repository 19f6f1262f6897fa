"""Model serving speed: single-image latency and batched throughput against the naive per-image way.

    .venv/bin/python bench/ml_speed.py --model ml/weights/lite0-256-v1 --images samples [--n 40] [--batch 16]

Measures, on the same model in the same run:
- latency of one image, end to end: decode + preprocess + predict + Grad-CAM (one forward/backward pass
  through `ml.serving.Predictor`, the graph the workers serve), p50/p95 over --n runs after warm-up;
- batched throughput of the same work (the predictor on --batch images at a time);
- batched predict-only throughput (the predictor without Grad-CAM);
- the naive baseline most apps use: `model.predict(x[None])` per image (predict only), and the naive
  Grad-CAM of the Keras example (a new gradient model and an eager tape per image, a second forward pass).
Prints a JSON summary (also written to bench/results/ml_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--n", type=int, default=40, help="single-image runs")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    from ml.train import configure_threads

    configure_threads(args.threads)
    import keras
    import tensorflow as tf

    from ml.preprocess import decode_image
    from ml.serving import Predictor

    predictor = Predictor.load(args.model)  # the served graph, as the workers load it
    model, card = predictor.model, predictor.card
    assert card is not None

    def gradcam_pass(x: np.ndarray) -> dict:
        return predictor.raw_outputs(x, gradcam=True, pass_size=len(x))

    def predict_pass(x: np.ndarray) -> dict:
        return predictor.raw_outputs(x, pass_size=len(x))

    paths = sorted(
        q for q in args.images.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    blobs = [q.read_bytes() for q in paths]
    if not blobs:
        raise SystemExit("no images")
    total = -(-max(args.n, args.batch * 4) // args.batch) * args.batch  # whole batches only
    work = [blobs[i % len(blobs)] for i in range(total)]

    def prep(blob: bytes) -> np.ndarray:
        return predictor.prepare(decode_image(blob))

    # warm-up (traces the compiled functions for batch 1 and the batch size)
    x1 = prep(work[0])[np.newaxis]
    for _ in range(3):
        gradcam_pass(x1)
        predict_pass(x1)
    xb = np.stack([prep(b) for b in work[: args.batch]])
    gradcam_pass(xb)
    predict_pass(xb)

    # 1. single image end to end
    stages: dict[str, list[float]] = {"preprocess": [], "predict_gradcam": [], "total": []}
    for blob in work[: args.n]:
        t0 = time.perf_counter()
        x = prep(blob)[np.newaxis]
        t1 = time.perf_counter()
        gradcam_pass(x)
        t2 = time.perf_counter()
        stages["preprocess"].append(t1 - t0)
        stages["predict_gradcam"].append(t2 - t1)
        stages["total"].append(t2 - t0)

    # 2. batched predict + Grad-CAM, and predict only
    def batched(fn) -> float:  # images per second, preprocessing included
        t0 = time.perf_counter()
        for start in range(0, total, args.batch):
            chunk = np.stack([prep(b) for b in work[start : start + args.batch]])
            fn(chunk)
        return total / (time.perf_counter() - t0)

    batched_gc = batched(gradcam_pass)
    batched_pred = batched(predict_pass)

    # 3. naive: model.predict one image at a time; Keras-example Grad-CAM per image
    model.predict(x1, verbose=0)
    t0 = time.perf_counter()
    for blob in work:
        model.predict(prep(blob)[np.newaxis], verbose=0)
    naive_pred = total / (time.perf_counter() - t0)

    def naive_gradcam(x: np.ndarray) -> np.ndarray:
        grad_model = keras.Model(
            model.input, [model.get_layer(card.gradcam_layer).output, model.output]
        )
        with tf.GradientTape() as tape:
            fmap, logits = grad_model(x)
            score = logits[:, 0]
        grads = tape.gradient(score, fmap)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heat = tf.squeeze(fmap[0] @ pooled[..., tf.newaxis])
        return (tf.maximum(heat, 0) / (tf.reduce_max(heat) + 1e-9)).numpy()

    naive_gradcam(x1)
    n_naive = min(total, 16)
    t0 = time.perf_counter()
    for blob in work[:n_naive]:
        x = prep(blob)[np.newaxis]
        model.predict(x, verbose=0)
        naive_gradcam(x)
    naive_full = n_naive / (time.perf_counter() - t0)

    result = {
        "model": card.version,
        "architecture": card.architecture,
        "input": card.spec.size,
        "threads": args.threads or os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "single_image_ms": {k: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for k, v in stages.items()},
        "throughput_img_per_s": {
            "batched_predict_gradcam": batched_gc,
            "batched_predict": batched_pred,
            "naive_model_predict_per_image": naive_pred,
            "naive_predict_plus_keras_example_gradcam": naive_full,
        },
        "speedup": {
            "batched_predict_vs_naive_predict": batched_pred / naive_pred,
            "batched_predict_gradcam_vs_naive_predict_gradcam": batched_gc / naive_full,
            "batched_predict_gradcam_vs_naive_predict_only": batched_gc / naive_pred,
        },
        "batch": args.batch,
        "images": total,
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ml_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
