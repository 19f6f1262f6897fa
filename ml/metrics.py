"""Binary-classification metrics, calibration and operating points (numpy only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _check(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return y, s


def auroc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN if one class is absent."""
    y, s = _check(y_true, score)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(
    y_true: npt.ArrayLike, score: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds): one point per distinct score, from the strictest threshold down.

    A case is positive when score >= threshold; the first point is (0, 0) at +inf.
    """
    y, s = _check(y_true, score)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(1.0, y.sum()), max(1.0, len(y) - y.sum())
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thresholds


def average_precision(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """PR-AUC as average precision: sum over positives' ranks of precision (step interpolation)."""
    y, s = _check(y_true, score)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    precision = tps / (distinct + 1)
    recall = tps / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def confusion(y_true: npt.ArrayLike, prob: npt.ArrayLike, threshold: float) -> dict[str, int]:
    """tp/fp/tn/fn with positive = prob >= threshold."""
    y, p = _check(y_true, prob)
    pred = p >= threshold
    return {
        "tp": int(np.sum(pred & (y == 1))),
        "fp": int(np.sum(pred & (y == 0))),
        "tn": int(np.sum(~pred & (y == 0))),
        "fn": int(np.sum(~pred & (y == 1))),
    }


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def at_threshold(y_true: npt.ArrayLike, prob: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, balanced accuracy and the confusion matrix at a threshold."""
    c = confusion(y_true, prob, threshold)
    sens = _ratio(c["tp"], c["tp"] + c["fn"])
    spec = _ratio(c["tn"], c["tn"] + c["fp"])
    return {
        "threshold": float(threshold),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _ratio(c["tp"], c["tp"] + c["fp"]),
        "npv": _ratio(c["tn"], c["tn"] + c["fn"]),
        "balanced_accuracy": (sens + spec) / 2.0,
        "confusion": c,
    }


def sensitivity_at_specificity(
    y_true: npt.ArrayLike, score: npt.ArrayLike, specificity: float
) -> float:
    """Highest sensitivity over thresholds whose specificity is >= `specificity`."""
    fpr, tpr, _ = roc_curve(y_true, score)
    ok = (1.0 - fpr) >= specificity - 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def youden_threshold(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the higher threshold)."""
    fpr, tpr, thr = roc_curve(y_true, score)
    j = tpr - fpr
    j[0] = -np.inf  # +inf threshold is not usable
    return float(thr[int(np.argmax(j))])


def threshold_for_sensitivity(y_true: npt.ArrayLike, score: npt.ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity reaches `target` (so specificity is as high as possible)."""
    _, tpr, thr = roc_curve(y_true, score)
    ok = np.nonzero(tpr >= target - 1e-12)[0]
    ok = ok[np.isfinite(thr[ok])]
    if len(ok) == 0:
        return float(np.min(np.asarray(score, dtype=np.float64)))
    return float(thr[ok[0]])


def ece(y_true: npt.ArrayLike, prob: npt.ArrayLike, bins: int = 10) -> float:
    """Expected calibration error with `bins` equal-width probability bins."""
    table = reliability(y_true, prob, bins)
    n = sum(row["count"] for row in table)
    return float(
        sum(
            row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]
        )
        / max(1, n)
    )


def reliability(y_true: npt.ArrayLike, prob: npt.ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """Per-bin mean predicted probability (confidence), observed positive rate (accuracy), count."""
    y, p = _check(y_true, prob)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        count = int(mask.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(p[mask].mean()) if count else float("nan"),
                "accuracy": float(y[mask].mean()) if count else float("nan"),
            }
        )
    return rows


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """The logistic function in float64, written with tanh (no overflow for large |x|). The one
    sigmoid of the project: serving (`ml.inference.calibrated`), calibration and evaluation."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def nll(y_true: npt.ArrayLike, logits: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T)."""
    y, z = _check(y_true, logits)
    z = z / temperature
    # log(1 + exp(-|z|)) + max(z, 0) - y z  (stable)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y_true: npt.ArrayLike, logits: npt.ArrayLike) -> float:
    """Temperature T > 0 minimising the NLL of sigmoid(logits / T) (golden-section on log T)."""
    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return nll(y_true, logits, math.exp(log_t))

    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def bootstrap_ci(
    y_true: npt.ArrayLike,
    score: npt.ArrayLike,
    metric: Any = auroc,
    *,
    n: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of `metric`, resampling cases with replacement
    (stratified by class, so every resample has both classes)."""
    y, s = _check(y_true, score)
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    values = np.empty(n, np.float64)
    for i in range(n):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        values[i] = metric(y[idx], s[idx])
    lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def fit_platt(y_true: npt.ArrayLike, logits: npt.ArrayLike) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the NLL of sigmoid(a * logit + b) (Newton's method).

    Unlike a temperature alone, the offset b also corrects a shifted base rate (e.g. after training
    with class weights, which calibrates the logits for a balanced prior).
    """
    y, z = _check(y_true, logits)
    a, b = 1.0, 0.0
    for _ in range(100):
        p = sigmoid(a * z + b)
        w = np.clip(p * (1 - p), 1e-12, None)
        grad = np.array([np.sum((p - y) * z), np.sum(p - y)])
        hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        hess += 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    if a <= 0:  # a useless or inverted score: fall back to the base rate
        return 1e-3, float(np.log(max(y.mean(), 1e-6) / max(1 - y.mean(), 1e-6)))
    return float(a), float(b)


# --- Localisation (issue #15 definitions) ---------------------------------------------------------------
#
# A candidate is a box (x0, y0, x1, y1) in pixels of the image as read (EXIF applied, origin top-left)
# with a score in [0, 1]; a point candidate (a heat-map peak) has x0 == x1 and y0 == y1. It HITS an
# expert box when its centre lies inside that box grown by 5 % of the image's longer side on every
# side, and its own area is at most 25 % of the image.

HIT_MARGIN = 0.05
MAX_CANDIDATE_AREA = 0.25
FROC_RATES = (0.25, 0.5, 1.0)

Box = tuple[float, float, float, float]


def candidate_hits(candidate: Box, box: Box, image_hw: tuple[int, int]) -> bool:
    """Whether `candidate` hits the expert `box` in an image of shape (height, width)."""
    height, width = float(image_hw[0]), float(image_hw[1])
    cx0, cy0, cx1, cy1 = (float(v) for v in candidate)
    if abs(cx1 - cx0) * abs(cy1 - cy0) > MAX_CANDIDATE_AREA * height * width:
        return False
    margin = HIT_MARGIN * max(height, width)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    cx, cy = (cx0 + cx1) / 2.0, (cy0 + cy1) / 2.0
    return (bx0 - margin <= cx <= bx1 + margin) and (by0 - margin <= cy <= by1 + margin)


def _ranked(candidates: list[dict[str, float]]) -> list[dict[str, float]]:
    return sorted(candidates, key=lambda c: -float(c["score"]))


def _as_box(c: dict[str, float]) -> Box:
    return (float(c["x0"]), float(c["y0"]), float(c["x1"]), float(c["y1"]))


def top1_hits(
    candidates: list[list[dict[str, float]]],
    boxes: list[list[Box]],
    shapes: list[tuple[int, int]],
) -> npt.NDArray[np.bool_]:
    """Per fractured image (one with at least one expert box): does its best candidate hit a box?
    Images without expert boxes are left out; an image without candidates is a miss."""
    out = []
    for cands, truth, shape in zip(candidates, boxes, shapes, strict=True):
        if not truth:
            continue
        ranked = _ranked(cands)
        out.append(
            bool(ranked) and any(candidate_hits(_as_box(ranked[0]), b, shape) for b in truth)
        )
    return np.asarray(out, dtype=bool)


def top1_localisation(
    candidates: list[list[dict[str, float]]],
    boxes: list[list[Box]],
    shapes: list[tuple[int, int]],
) -> float:
    """Share of fractured images whose highest-scoring candidate hits an expert box (NaN if none)."""
    hits = top1_hits(candidates, boxes, shapes)
    return float(hits.mean()) if hits.size else float("nan")


def froc_points(
    candidates: list[list[dict[str, float]]],
    boxes: list[list[Box]],
    shapes: list[tuple[int, int]],
) -> dict[str, FloatArray]:
    """The FROC curve over every distinct candidate score, strictest first.

    At threshold t: sensitivity = share of expert boxes hit by at least one candidate with
    score >= t; false positives per image = candidates with score >= t that hit no box, averaged
    over ALL images of the split (fractured and not). Returns arrays `thresholds`, `sensitivity`,
    `fp_per_image` (the first point is +inf: nothing proposed).
    """
    n_images = len(candidates)
    n_boxes = sum(len(b) for b in boxes)
    # Per candidate: its score, whether it is a false positive, and the boxes (global ids) it hits.
    scores: list[float] = []
    false_positive: list[bool] = []
    hit_ids: list[list[int]] = []
    offset = 0
    for cands, truth, shape in zip(candidates, boxes, shapes, strict=True):
        for c in cands:
            hits = [offset + j for j, b in enumerate(truth) if candidate_hits(_as_box(c), b, shape)]
            scores.append(float(c["score"]))
            false_positive.append(not hits)
            hit_ids.append(hits)
        offset += len(truth)
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    thresholds, sens, fppi = [np.inf], [0.0], [0.0]
    found: set[int] = set()
    fps = 0
    for rank, k in enumerate(order):
        found.update(hit_ids[k])
        fps += int(false_positive[k])
        last_of_score = rank == len(order) - 1 or scores[order[rank + 1]] != scores[k]
        if last_of_score:
            thresholds.append(scores[k])
            sens.append(len(found) / n_boxes if n_boxes else float("nan"))
            fppi.append(fps / n_images if n_images else float("nan"))
    return {
        "thresholds": np.asarray(thresholds, np.float64),
        "sensitivity": np.asarray(sens, np.float64),
        "fp_per_image": np.asarray(fppi, np.float64),
    }


def froc_sensitivity(
    candidates: list[list[dict[str, float]]],
    boxes: list[list[Box]],
    shapes: list[tuple[int, int]],
    rates: tuple[float, ...] = FROC_RATES,
) -> dict[str, float]:
    """{"fp<rate>": the highest sensitivity reached at no more than `rate` false positives per image}."""
    curve = froc_points(candidates, boxes, shapes)
    out = {}
    for rate in rates:
        ok = curve["fp_per_image"] <= rate + 1e-12
        out[f"fp{rate:g}"] = float(curve["sensitivity"][ok].max()) if ok.any() else 0.0
    return out


def heatmap_peak_candidate(heatmap: npt.ArrayLike) -> list[dict[str, float]]:
    """A heat-map (H, W) aligned with the image -> its peak as one point candidate (score = the
    peak's value); none for an all-zero map."""
    hm = np.asarray(heatmap, dtype=np.float64)
    if hm.ndim != 2 or hm.size == 0 or not np.isfinite(hm).any() or float(np.nanmax(hm)) <= 0:
        return []
    y, x = np.unravel_index(int(np.nanargmax(hm)), hm.shape)
    px, py = float(x) + 0.5, float(y) + 0.5
    return [{"x0": px, "y0": py, "x1": px, "y1": py, "score": float(np.clip(hm[y, x], 0.0, 1.0))}]


def bootstrap_over_images(
    metric: Any, n_images: int, *, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of `metric(indices)`, resampling images with replacement
    (for localisation metrics, whose unit is the image)."""
    if n_images == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([metric(rng.integers(0, n_images, n_images)) for _ in range(n)], np.float64)
    lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
