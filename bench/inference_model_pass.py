"""Per-image cost of one model pass (forward + Grad-CAM backward, `ml.gradcam.gradcam_batch`) at
several batch sizes, for the model as trained and for the served inference graph
(`ml.model.fold_batchnorm`): the measurements behind INFERENCE_MODEL_BATCH=0 (auto) and folding.

    .venv/bin/python bench/inference_model_pass.py [--model DIR] [--sizes 1 4 8 16] [--repeat 5]

Without --model: the shipped model if present, else the random-weight EfficientNet-Lite0 that
bench/inference_common.py builds. No database or broker needed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import inference_common as common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model artifact folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from ml import gradcam, registry
    from ml.model import fold_batchnorm

    path, description = common.model_dir(args.model)
    model, card = registry.load(path)
    size = card.spec.size
    print(f"model: {description}; input {size} px")
    for name, graph in (("as trained", model), ("folded (served)", fold_batchnorm(model))):
        for batch_size in args.sizes:
            batch = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 1))
            batch = batch.astype(np.float32)
            gradcam.gradcam_batch(graph, batch, layer=card.gradcam_layer)  # trace this shape
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                gradcam.gradcam_batch(graph, batch, layer=card.gradcam_layer)
                times.append((time.perf_counter() - started) * 1e3 / batch_size)
            print(
                f"{name:15s} batch {batch_size:3d}: median {statistics.median(times):6.1f} "
                f"ms/image, best {min(times):6.1f} ms/image"
            )


if __name__ == "__main__":
    main()
