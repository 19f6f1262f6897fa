"""Train the fracture locator: `python -m ml.train_locate --data DIR --out DIR [options]`.

EfficientNet-Lite0 (ImageNet) with the centre heat-map head of `ml.localise`, supervised by the
image labels AND the expert fracture boxes (`boxes.csv` beside the manifest; a dataset snapshot
exports the radiologists' final boxes in the same format).

Recipe, chosen for two CPU cores (see the model card for what each choice did on val):
- The stem and stages 1-4 stay at their ImageNet weights (BatchNorm in inference mode). Their
  output (stride 16) is computed ONCE per training image and augmentation variant and cached, so an
  epoch only runs stages 5-7 and the heads: about 10x less work than training end to end.
- `--variants` augmented copies per training image (flip, rotation, scale, shift, contrast, gamma;
  the boxes move with the pixels), one drawn per image per epoch.
- Loss: weighted binary cross-entropy on the image label + CenterNet focal loss on the centre
  heat-map (every image: fracture-free images teach the map to stay cold, also on orthopaedic
  hardware) + L1 on the log box size at the centres.
- Model selection on val (AUROC of the fused score + top-1 localisation); calibration (Platt over
  the classifier logit and the heat-map peak) and operating points fitted on val.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ml import localise, metrics
from ml.config import ImageSpec
from ml.data import Record, load_records, read_boxes, split_records
from ml.preprocess import preprocess, read_image

logger = logging.getLogger(__name__)

BoxList = list[tuple[float, float, float, float]]
_COMPILED: dict[int, Any] = {}


@dataclasses.dataclass(frozen=True)
class LocateConfig:
    arch: str = "efficientnet_lite0"
    size: int = 256
    epochs: int = 24
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 1e-4
    heat_weight: float = 1.0
    size_weight: float = 0.1
    variants: int = 6
    seed: int = 0
    dropout: float = 0.2
    max_train_images: int = 0
    version: str = ""
    # An artifact folder of a locator with the same architecture and input size: the run starts
    # from its weights (warm start, e.g. retraining the active model on new labels) instead of
    # ImageNet's. The frozen lower part is ImageNet's in both.
    init_from: str = ""

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(size=self.size)


# --- Data --------------------------------------------------------------------------------------------


def dataset_root(data: Path) -> Path:
    return data.parent if data.is_file() else data


def _affine(size: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], bool]:
    flip = bool(rng.random() < 0.5)
    angle = rng.uniform(-12.0, 12.0)
    scale = float(np.exp(rng.uniform(-0.15, 0.2)))
    matrix = np.asarray(cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale), np.float64)
    matrix[:, 2] += rng.uniform(-0.06, 0.06, 2) * size
    return matrix, flip


def augment_with_boxes(
    image: npt.NDArray[np.float32], boxes: BoxList, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], BoxList]:
    """A preprocessed (size, size) image and its boxes (model-input pixels) -> augmented copies.
    Padding stays 0; a box leaving the image is dropped."""
    size = image.shape[0]
    matrix, flip = _affine(size, rng)
    src = image[:, ::-1] if flip else image
    out = cv2.warpAffine(
        np.ascontiguousarray(src), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0
    )
    gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
    contrast = rng.uniform(0.85, 1.15)
    out = np.clip((out / 255.0) ** gamma * 255.0 * contrast, 0, 255).astype(np.float32)
    moved: BoxList = []
    for x0, y0, x1, y1 in boxes:
        if flip:
            x0, x1 = size - x1, size - x0
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
        pts = corners @ matrix.T
        nx0, ny0 = pts.min(axis=0)
        nx1, ny1 = pts.max(axis=0)
        # the rotated box's bounding box overstates the fracture: shrink it back to its area
        cx, cy = (nx0 + nx1) / 2, (ny0 + ny1) / 2
        w = (x1 - x0) * math.hypot(matrix[0, 0], matrix[0, 1])
        h = (y1 - y0) * math.hypot(matrix[0, 0], matrix[0, 1])
        if 0 <= cx < size and 0 <= cy < size:
            moved.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return out, moved


@dataclasses.dataclass
class Split:
    records: list[Record]
    labels: npt.NDArray[np.float32]
    shapes: list[tuple[int, int]]
    boxes: list[BoxList]  # in pixels of the image file
    images: npt.NDArray[np.float32]  # (N, size, size) preprocessed, identity


def load_split(records: list[Record], boxes: dict[str, BoxList], spec: ImageSpec) -> Split:
    images, shapes = [], []
    for r in records:
        raw = read_image(r.path)
        shapes.append((int(raw.shape[0]), int(raw.shape[1])))
        images.append(preprocess(raw, spec)[..., 0])
    return Split(
        records=records,
        labels=np.array([r.label for r in records], np.float32),
        shapes=shapes,
        boxes=[list(boxes.get(r.id, [])) for r in records],
        images=np.stack(images).astype(np.float32)
        if images
        else np.zeros((0, spec.size, spec.size), np.float32),
    )


def _compiled(model: Any) -> Any:
    """model(x, training=False) as one traced graph for every batch size (eager calls cost ~3x)."""
    import tensorflow as tf

    fn = _COMPILED.get(id(model))
    if fn is None:
        signature = [tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)]
        fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
        _COMPILED[id(model)] = fn
    return fn


def lower_features(
    lower: Any, images: npt.NDArray[np.float32], batch: int = 64
) -> npt.NDArray[Any]:
    fn = _compiled(lower)
    out = [
        np.asarray(fn(images[start : start + batch, ..., None]))
        for start in range(0, len(images), batch)
    ]
    if not out:
        return np.zeros((0, *lower.output.shape[1:]), np.float16)
    return np.concatenate(out).astype(np.float16)


# --- Training ----------------------------------------------------------------------------------------


def _losses(
    tf: Any, logit: Any, loc: Any, y: Any, heat: Any, wh: Any, mask: Any, pos_w: float
) -> tuple[Any, Any, Any]:
    logit = tf.reshape(logit, [-1])
    bce = tf.nn.weighted_cross_entropy_with_logits(labels=y, logits=logit, pos_weight=pos_w)
    cls_loss = tf.reduce_mean(bce) / ((1.0 + pos_w) / 2.0)
    z = loc[..., 0]
    p = tf.sigmoid(z)
    pos = tf.cast(heat >= 0.999, tf.float32)
    log_p, log_not_p = tf.math.log_sigmoid(z), tf.math.log_sigmoid(-z)
    pos_loss = -tf.reduce_sum(pos * log_p * tf.square(1.0 - p))
    neg_loss = -tf.reduce_sum((1.0 - pos) * log_not_p * tf.square(p) * tf.pow(1.0 - heat, 4.0))
    n_pos = tf.maximum(1.0, tf.reduce_sum(pos))
    heat_loss = (pos_loss + neg_loss) / n_pos
    size_loss = tf.reduce_sum(tf.abs(loc[..., 1:] - wh) * mask[..., None]) / tf.maximum(
        1.0, tf.reduce_sum(mask)
    )
    return cls_loss, heat_loss, size_loss


def evaluate_outputs(
    logits: npt.NDArray[Any], locs: npt.NDArray[Any], split: Split, size: int
) -> dict[str, float]:
    """Validation summary from raw outputs (model selection; no calibration)."""
    peak = localise.heat_peak_logit(locs)
    cands = [
        localise.decode_candidates(loc, localise.Geometry(*shape, size), max_candidates=5)
        for loc, shape in zip(locs, split.shapes, strict=True)
    ]
    return {
        "auroc_logit": metrics.auroc(split.labels, logits),
        "auroc_heat": metrics.auroc(split.labels, peak),
        "auroc_sum": metrics.auroc(split.labels, logits + peak),
        "top1": metrics.top1_localisation(cands, split.boxes, split.shapes),
        **metrics.froc_sensitivity(cands, split.boxes, split.shapes),
    }


def run_upper(
    upper: Any, feats: npt.NDArray[Any], batch: int = 128
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    fn = _compiled(upper)
    logits, locs = [], []
    for start in range(0, len(feats), batch):
        lg, lc = fn(feats[start : start + batch].astype(np.float32))
        logits.append(np.asarray(lg).reshape(-1))
        locs.append(np.asarray(lc))
    return np.concatenate(logits), np.concatenate(locs)


def fit_fusion(
    y: npt.NDArray[Any], logit: npt.NDArray[Any], peak: npt.NDArray[Any]
) -> tuple[float, float, float]:
    """Logistic regression of the label on (classifier logit, heat-map peak logit) by Newton steps
    with a small ridge: the calibrated probability is sigmoid(a logit + b peak + c)."""
    x = np.c_[logit, peak, np.ones_like(logit)].astype(np.float64)
    w = np.zeros(3)
    ridge = np.diag([1e-3, 1e-3, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + ridge @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess + 1e-9 * np.eye(3), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1]), float(w[2])


def warm_start(full: Any, artifact: Path, config: LocateConfig) -> None:
    """Copy every weight of the locator at `artifact` into `full` (built for `config`). Raises
    ValueError when it is not a locator of the same architecture and input size."""
    from ml import registry

    card = registry.read_card(artifact)
    expected = f"{config.arch}_locator"
    if card.architecture != expected or card.spec.size != config.size:
        raise ValueError(
            f"cannot start from {artifact.name}: it is a {card.architecture} at "
            f"{card.spec.size} px, this run trains a {expected} at {config.size} px"
        )
    source, _ = registry.load(artifact)
    weighted = sum(1 for layer in full.layers if layer.weights)
    copied = localise.copy_weights(source, full)
    if copied != weighted:
        raise ValueError(f"cannot start from {artifact.name}: {copied} of {weighted} layers match")


def train(data: Path, out: Path, config: LocateConfig, *, log: Any = logger.info) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from ml.model import fold_batchnorm
    from ml.registry import ModelCard, save

    started = time.time()
    rng = np.random.default_rng(config.seed)
    keras.utils.set_random_seed(config.seed)
    root = dataset_root(data)
    records = load_records(data)
    boxes = read_boxes(root / "boxes.csv")
    spec = config.spec
    train_records = split_records(records, "train")
    if config.max_train_images:
        train_records = list(rng.permutation(np.array(train_records, dtype=object)))[
            : config.max_train_images
        ]
    train_split = load_split(train_records, boxes, spec)
    val_split = load_split(split_records(records, "val"), boxes, spec)
    if not len(train_split.records) or not len(val_split.records):
        raise ValueError("the dataset needs train and val images")
    log(
        f"loaded {len(train_split.records)} train / {len(val_split.records)} val images "
        f"({time.time() - started:.0f} s)"
    )

    full = localise.build_locator(spec, config.arch, dropout=config.dropout, pretrained=True)
    if config.init_from:
        warm_start(full, Path(config.init_from), config)
        log(f"starting from the weights of {Path(config.init_from).name}")
    # Frozen part, served folded (same outputs, about half the work): only ever run forward here.
    lower = localise.build_lower(fold_batchnorm(full), config.arch)
    upper = localise.build_upper(spec, config.arch, dropout=config.dropout)
    localise.copy_weights(full, upper)

    # Cached lower features: variant 0 is the identity, the others augmented (boxes moved along).
    grid = spec.size // localise.STRIDE
    n = len(train_split.records)
    variants = max(1, config.variants)
    feats = np.zeros((variants, n, grid, grid, lower.output.shape[-1]), np.float16)
    heat_t = np.zeros((variants, n, grid, grid), np.float16)
    wh_t = np.zeros((variants, n, grid, grid, 2), np.float32)
    mask_t = np.zeros((variants, n, grid, grid), np.float16)
    for v in range(variants):
        imgs = np.empty_like(train_split.images)
        for i in range(n):
            in_boxes = [
                localise.Geometry(*train_split.shapes[i], spec.size).to_input(b)
                for b in train_split.boxes[i]
            ]
            if v == 0:
                imgs[i], moved = train_split.images[i], in_boxes
            else:
                imgs[i], moved = augment_with_boxes(train_split.images[i], in_boxes, rng)
            heat_t[v, i], wh_t[v, i], mask_t[v, i] = localise.heat_targets(moved, spec.size)
        feats[v] = lower_features(lower, imgs)
        log(f"cached variant {v + 1}/{variants} ({time.time() - started:.0f} s)")
    val_feats = lower_features(lower, val_split.images)

    for layer in upper.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    variables = upper.trainable_variables
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        config.lr * 0.1, total, warmup_target=config.lr, warmup_steps=steps_per_epoch
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    n_pos = float(train_split.labels.sum())
    pos_w = float((n - n_pos) / max(1.0, n_pos))

    @tf.function  # type: ignore[untyped-decorator]
    def step(x: Any, y: Any, heat: Any, wh: Any, mask: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            logit, loc = upper(x, training=True)
            c, h, s = _losses(tf, logit, loc, y, heat, wh, mask, pos_w)
            loss = c + config.heat_weight * h + config.size_weight * s
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return c, h, s

    best: dict[str, Any] = {"score": -1.0}
    history = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.time()
        order = rng.permutation(n)
        pick = rng.integers(0, variants, n)
        sums = np.zeros(3)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            chosen = pick[idx]
            losses = step(
                feats[chosen, idx].astype(np.float32),
                train_split.labels[idx],
                heat_t[chosen, idx].astype(np.float32),
                wh_t[chosen, idx],
                mask_t[chosen, idx].astype(np.float32),
            )
            sums += [float(o) * len(idx) for o in losses]
        logits, locs = run_upper(upper, val_feats)
        summary = evaluate_outputs(logits, locs, val_split, spec.size)
        score = summary["auroc_sum"] + summary["top1"]
        row = {
            "epoch": epoch,
            "seconds": round(time.time() - t0, 1),
            "cls_loss": sums[0] / n,
            "heat_loss": sums[1] / n,
            "size_loss": sums[2] / n,
            **{f"val_{k}": v for k, v in summary.items()},
        }
        history.append(row)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "weights": upper.get_weights()}

    upper.set_weights(best["weights"])
    localise.copy_weights(upper, full)
    served = fold_batchnorm(full)
    # Calibration and operating points on val, from the graph that serves.
    from ml.serving import Predictor

    predictor = Predictor(served, spec=spec, localisation={"output": localise.LOC})
    raw = predictor.raw_outputs(val_split.images[..., None])
    peak = localise.heat_peak_logit(raw["loc"])
    a, b, c = fit_fusion(val_split.labels.astype(np.float64), raw["logit"], peak)
    prob = 1.0 / (1.0 + np.exp(-(a * raw["logit"] + b * peak + c)))
    balanced = metrics.youden_threshold(val_split.labels, prob)
    high_sens = metrics.threshold_for_sensitivity(val_split.labels, prob, 0.90)
    cands = [
        localise.decode_candidates(loc, localise.Geometry(*shape, spec.size), max_candidates=5)
        for loc, shape in zip(raw["loc"], val_split.shapes, strict=True)
    ]
    curve = metrics.froc_points(cands, val_split.boxes, val_split.shapes)
    ok = curve["fp_per_image"] <= 1.0
    min_score = float(curve["thresholds"][ok][-1]) if ok.any() else 0.5
    version = config.version or f"locate-{config.size}-{time.strftime('%Y%m%d')}"
    card = ModelCard(
        version=version,
        architecture=f"{config.arch}_locator",
        spec=spec,
        gradcam_layer=localise.GRADCAM_LAYER,
        thresholds={"balanced": float(balanced), "high_sensitivity": float(high_sens)},
        default_operating_point="balanced",
        temperature=1.0,
        localisation={
            "output": localise.LOC,
            "stride": localise.STRIDE,
            "fusion": {"logit": a, "heat_peak": b, "bias": c},
            "max_candidates": 5,
            "min_score": round(min_score, 4),
            "min_score_rule": "the candidate score at 1 false positive per image on val",
        },
        training={
            # the warm start by name only (no machine paths in a card)
            "config": {**dataclasses.asdict(config), "init_from": Path(config.init_from).name},
            "best_epoch": best["epoch"],
            "history": history,
            "data": {
                "train": n,
                "train_positives": int(n_pos),
                "train_boxes": int(sum(len(b) for b in train_split.boxes)),
                "val": len(val_split.records),
            },
            "seconds": round(time.time() - started, 1),
            "keras": keras.__version__,
        },
    )
    save(full, card, out)
    log(f"saved {out} (best epoch {best['epoch']}, {time.time() - started:.0f} s)")
    return {"card": card.to_dict(), "history": history}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ml.train_locate", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--data", required=True, type=Path, help="dataset folder (manifest.csv, boxes.csv)"
    )
    p.add_argument("--out", required=True, type=Path, help="artifact folder to write")
    defaults = LocateConfig()
    for f in dataclasses.fields(LocateConfig):
        if f.name in ("arch",):
            continue
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(getattr(defaults, f.name)),
            default=getattr(defaults, f.name),
        )
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from ml.train import configure_threads

    configure_threads(args.threads or None)
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(LocateConfig) if f.name != "arch"
    }

    def log(message: str) -> None:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()

    train(args.data, args.out, LocateConfig(**values), log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
