"""Per-image cost of one model pass (forward + Grad-CAM backward, and the heat-map head of a model
that localises: `ml.serving.Predictor.raw_outputs`) at several batch sizes, for the model as trained
and for the served inference graph (`Predictor.load`: BatchNorm folded): the measurements behind
INFERENCE_MODEL_BATCH=0 (auto) and folding.

    .venv/bin/python bench/inference_model_pass.py [--model DIR] [--sizes 1 4 8 16] [--repeat 5]
        [--intra-op N --parallel K]

With --intra-op N TensorFlow runs each operation on N threads (default: every core), and with
--parallel K that many threads run passes side by side (ms per image = wall time / images): e.g.
`--intra-op 1 --parallel 2` gives each core its own single-threaded pass instead of splitting every
operation over both.

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
    parser.add_argument("--intra-op", type=int, default=0, help="threads per operation (0: auto)")
    parser.add_argument("--parallel", type=int, default=1, help="passes run side by side")
    args = parser.parse_args()

    import threading

    import numpy as np
    import tensorflow as tf

    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, args.parallel))

    from ml import registry
    from ml.serving import Predictor

    path, description = common.model_dir(args.model)
    model, card = registry.load(path)
    size = card.spec.size
    print(
        f"model: {description}; input {size} px; intra-op threads {args.intra_op or 'auto'}, "
        f"{args.parallel} pass(es) side by side"
    )
    for name, predictor in (
        ("as trained", Predictor(model, card)),
        ("folded (served)", Predictor.load(path)),
    ):
        for batch_size in args.sizes:
            batch = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 1))
            batch = batch.astype(np.float32)
            predictor.raw_outputs(batch, gradcam=True, pass_size=batch_size)  # trace

            def passes(predictor=predictor, batch=batch, batch_size=batch_size) -> None:
                predictor.raw_outputs(batch, gradcam=True, pass_size=batch_size)

            times = []
            for _ in range(args.repeat):
                threads = [threading.Thread(target=passes) for _ in range(args.parallel)]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                elapsed = time.perf_counter() - started
                times.append(elapsed * 1e3 / (batch_size * args.parallel))
            print(
                f"{name:15s} batch {batch_size:3d}: median {statistics.median(times):6.1f} "
                f"ms/image, best {min(times):6.1f} ms/image"
            )


if __name__ == "__main__":
    main()
