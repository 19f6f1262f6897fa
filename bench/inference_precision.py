"""Would bfloat16 compute serve the same model? Speed and agreement of a bfloat16 copy of the served
graph (Keras `mixed_bfloat16`: bfloat16 compute, float32 weights, float32 logit) against the float32
graph that workers serve, on one split of a dataset.

    .venv/bin/python bench/inference_precision.py DATA [--model DIR] [--split test] [--repeat 7]

Reports the model pass (forward + Grad-CAM, `ml.gradcam.gradcam_batch`) in ms per image at batch 1
and 32 for both, then on every image of the split: AUROC of each, how far the calibrated
probabilities move, how many decisions flip at each operating point of the card, and how well the
heat-maps agree (Pearson correlation per image). Needs a CPU with native bfloat16 (AVX512_BF16 or
AMX) for the speed to mean anything. No database or broker needed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import inference_common as common


def bfloat16_copy(model: Any) -> Any:
    """The same layers and weights with bfloat16 compute; the classifier head stays float32."""
    import keras

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            dense = isinstance(layer, keras.layers.Dense)
            config["dtype"] = "float32" if dense else "mixed_bfloat16"
        return type(layer).from_config(config)

    out = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        out.get_layer(layer.name).set_weights(layer.get_weights())
    return out


def pass_ms(model: Any, layer: str, size: int, batch_size: int, repeat: int) -> float:
    import numpy as np

    from ml import gradcam

    batch = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 1))
    batch = batch.astype(np.float32)
    gradcam.gradcam_batch(model, batch, layer=layer)  # trace
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        gradcam.gradcam_batch(model, batch, layer=layer)
        times.append((time.perf_counter() - started) * 1e3 / batch_size)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="dataset folder (manifest.csv or split/class folders)")
    parser.add_argument("--model", help="model artifact folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import numpy as np

    from ml import gradcam, metrics, registry
    from ml import inference as ml_inference
    from ml.data import load_images, load_records, split_records
    from ml.model import fold_batchnorm

    path, description = common.model_dir(args.model)
    model, card = registry.load(path)
    served = fold_batchnorm(model)
    reduced = bfloat16_copy(served)
    layer, size = card.gradcam_layer, card.spec.size
    print(f"model: {description}; input {size} px")
    for name, graph in (("float32 (served)", served), ("bfloat16 copy", reduced)):
        for batch_size in (1, 32):
            ms = pass_ms(graph, layer, size, batch_size, args.repeat)
            print(f"{name:17s} batch {batch_size:2d}: median {ms:5.1f} ms/image")

    records = split_records(load_records(args.data), args.split)
    images = load_images(records, card.spec)[..., np.newaxis].astype(np.float32)
    labels = np.array([record.label for record in records])

    def run(graph: Any) -> tuple[Any, Any]:
        logits, cams = [], []
        for start in range(0, len(images), 32):
            batch_logits, batch_cams = gradcam.gradcam_batch(
                graph, images[start : start + 32], layer=layer
            )
            logits.append(batch_logits)
            cams.append(batch_cams)
        probabilities = ml_inference.calibrated(np.concatenate(logits), card.temperature)
        return probabilities, np.concatenate(cams)

    p32, cams32 = run(served)
    p16, cams16 = run(reduced)
    delta = np.abs(p32 - p16)
    print(f"{args.split}: {len(records)} images")
    print(
        f"AUROC float32 {metrics.auroc(labels, p32):.4f}, bfloat16 {metrics.auroc(labels, p16):.4f}"
    )
    print(f"probability change: median {np.median(delta):.4f}, max {delta.max():.4f}")
    for point, threshold in card.thresholds.items():
        flips = int(((p32 >= threshold) != (p16 >= threshold)).sum())
        print(f"decisions flipped at {point} ({threshold:.3f}): {flips}")
    agreement = []
    for a, b in zip(cams32.reshape(len(images), -1), cams16.reshape(len(images), -1), strict=True):
        if a.std() > 0 and b.std() > 0:
            agreement.append(float(np.corrcoef(a, b)[0, 1]))
        else:  # a flat map (no positive evidence): agreement only if both are flat
            agreement.append(1.0 if np.allclose(a, b, atol=1e-3) else 0.0)
    corr = np.array(agreement)
    print(
        f"heat-map correlation: median {np.median(corr):.4f}, 5th percentile "
        f"{np.percentile(corr, 5):.3f}, min {corr.min():.3f}, below 0.9: {(corr < 0.9).sum()}"
    )


if __name__ == "__main__":
    main()
