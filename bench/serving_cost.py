"""Cost per image of what a worker does with a model, through `ml.serving.Predictor.predict`
(preprocessing, the model pass with Grad-CAM and, for a model that localises, its candidates,
Grad-CAM resized to the image), for two models in the same run: e.g. the shipped locator against
the classifier it replaced (issue #15 budget: at most 1.3x).

    .venv/bin/python bench/serving_cost.py --models DIR [DIR ...] [--images samples] [--batch 32]
        [--repeat 7]

Images are the radiographs of `--images` (decoded once, outside the timing), repeated to fill a
batch. Reports the median and best ms per image over `--repeat` runs of a batch, models
interleaved so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="model artifact folders")
    parser.add_argument("--images", default=str(ROOT / "samples"), help="folder of radiographs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from ml.preprocess import read_image
    from ml.serving import Predictor

    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise SystemExit(f"no .jpg/.png images in {args.images}")
    decoded = [read_image(p) for p in files]
    batch = [decoded[i % len(decoded)] for i in range(args.batch)]
    predictors = [Predictor.load(m) for m in args.models]
    for p in predictors:
        p.predict(batch[:2])  # trace
    times: dict[str, list[float]] = {p.version: [] for p in predictors}
    for _ in range(args.repeat):
        for p in predictors:
            started = time.perf_counter()
            p.predict(batch, pass_size=args.batch)
            times[p.version].append((time.perf_counter() - started) * 1e3 / len(batch))
    base = statistics.median(times[predictors[0].version])
    print(f"{len(batch)} images per batch from {len(files)} files in {args.images}")
    for p in predictors:
        t = times[p.version]
        med = statistics.median(t)
        print(
            f"{p.version:24s} localises={p.localises!s:5s} median {med:6.1f} ms/image, "
            f"best {min(t):6.1f} ms/image, {med / base:4.2f}x the first"
        )


if __name__ == "__main__":
    main()
