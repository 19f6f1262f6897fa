"""Evaluate an artifact on one split: `python -m ml.evaluate --model DIR --data DIR --split test [--out DIR]`.

Reports AUROC with a bootstrap 95 % CI, PR-AUC, sensitivity/specificity at each operating point of the
card, sensitivity at 80 % / 90 % specificity, ECE (before and after the card's temperature) with a
reliability diagram, confusion matrices, a per-body-part table (from manifest.csv) and ROC/PR PNGs.
The operating points and temperature come from the card (fitted on validation); nothing is fitted here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ml import metrics
from ml.data import load_records, read_attributes, read_boxes, split_records
from ml.preprocess import read_image
from ml.registry import ModelCard, json_safe

if TYPE_CHECKING:
    from ml.serving import Predictor

logger = logging.getLogger(__name__)
BOOTSTRAP = 2000


def summarise(
    y: npt.ArrayLike,
    prob: npt.ArrayLike,
    card: ModelCard,
    *,
    raw: npt.ArrayLike | None = None,
    body_parts: list[str] | None = None,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics for labels `y` (0/1) and calibrated probabilities `prob` at the card's
    thresholds; `raw` are the uncalibrated probabilities (for the ECE before calibration)."""
    y = np.asarray(y, np.float64)
    prob = np.asarray(prob, np.float64)
    raw = prob if raw is None else np.asarray(raw, np.float64)
    auc = metrics.auroc(y, prob)
    lo, hi = metrics.bootstrap_ci(y, prob, metrics.auroc, n=bootstrap, seed=seed)
    ap_lo, ap_hi = metrics.bootstrap_ci(y, prob, metrics.average_precision, n=bootstrap, seed=seed)
    out: dict[str, Any] = {
        "n": len(y),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()) if len(y) else float("nan"),
        "auroc": auc,
        "auroc_ci95": [lo, hi],
        "pr_auc": metrics.average_precision(y, prob),
        "pr_auc_ci95": [ap_lo, ap_hi],
        "sensitivity_at_specificity": {
            "0.80": metrics.sensitivity_at_specificity(y, prob, 0.80),
            "0.90": metrics.sensitivity_at_specificity(y, prob, 0.90),
        },
        "temperature": card.temperature,
        "ece": metrics.ece(y, prob),
        "ece_uncalibrated": metrics.ece(y, raw),
        "reliability": metrics.reliability(y, prob),
        "operating_points": {
            name: metrics.at_threshold(y, prob, t) for name, t in card.thresholds.items()
        },
    }
    if body_parts is not None:
        out["per_body_part"] = per_group(y, prob, body_parts, card, bootstrap=bootstrap, seed=seed)
    return out


def per_group(
    y: npt.NDArray[np.float64],
    prob: npt.NDArray[np.float64],
    groups: list[str],
    card: ModelCard,
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC (with CI where both classes have >= 5 cases) and operating-point rates per group."""
    table: dict[str, Any] = {}
    names = np.array([g or "unknown" for g in groups])
    for name in sorted(set(names.tolist())):
        mask = names == name
        yy, pp = y[mask], prob[mask]
        row: dict[str, Any] = {"n": int(mask.sum()), "positives": int(yy.sum())}
        both = 0 < yy.sum() < len(yy)
        row["auroc"] = metrics.auroc(yy, pp) if both else None
        if both and min(yy.sum(), len(yy) - yy.sum()) >= 5:
            row["auroc_ci95"] = list(metrics.bootstrap_ci(yy, pp, n=bootstrap, seed=seed))
        row["operating_points"] = {
            k: {
                key: v
                for key, v in metrics.at_threshold(yy, pp, t).items()
                if key in ("sensitivity", "specificity", "confusion")
            }
            for k, t in card.thresholds.items()
        }
        table[name] = row
    return table


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, legend: str) -> Path:
    fig.axes[0].legend(loc=legend, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_roc(
    y: npt.ArrayLike,
    curves: Mapping[str, npt.ArrayLike],
    path: Path,
    title: str,
    *,
    thresholds: dict[str, float] | None = None,
) -> Path:
    """ROC curves of one or more models on the same images (PNG), with each named operating
    point of `thresholds` marked on the first curve. The one ROC plot: evaluation reports and the
    promotion gate's candidate-versus-active comparison."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    both = 0 < int(np.sum(np.asarray(y))) < np.asarray(y).size
    for name, prob in curves.items():
        if both:
            fpr, tpr, _ = metrics.roc_curve(y, prob)
            ax.plot(fpr, tpr, lw=1.8, label=f"{name}: AUROC {metrics.auroc(y, prob):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    first = next(iter(curves.values()), None)
    for i, (name, t) in enumerate((thresholds or {}).items()):
        if first is None or not both:
            break
        r = metrics.at_threshold(y, first, t)
        ax.plot(
            1 - r["specificity"],
            r["sensitivity"],
            "o",
            color=f"C{i + 3}",
            label=f"{name} (t={t:.2f})",
        )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, "lower right")


def plot_pr(y: npt.ArrayLike, prob: npt.ArrayLike, path: Path, title: str) -> Path:
    plt = _pyplot()
    y = np.asarray(y, np.float64)
    prob = np.asarray(prob, np.float64)
    order = np.argsort(-prob, kind="mergesort")
    tps = np.cumsum(y[order])
    precision = tps / np.arange(1, len(y) + 1)
    recall = tps / max(1.0, y.sum())
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.step(recall, precision, where="post", label=f"AP {metrics.average_precision(y, prob):.3f}")
    ax.axhline(y.mean(), color="grey", lw=0.8, ls="--", label=f"prevalence {y.mean():.2f}")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, "upper right")


def plot_reliability(
    y: npt.ArrayLike, curves: Mapping[str, npt.ArrayLike], path: Path, title: str
) -> Path:
    """Reliability diagrams (observed fracture rate per bin of predicted probability) of one or
    more sets of probabilities on the same images (PNG), each with its ECE. The one calibration
    plot: before/after temperature in evaluation reports, candidate/active at the gate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for name, prob in curves.items():
        rows = [r for r in metrics.reliability(y, prob) if r["count"]]
        ax.plot(
            [r["confidence"] for r in rows],
            [r["accuracy"] for r in rows],
            "o-",
            label=f"{name}: ECE {metrics.ece(y, prob):.3f}",
        )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction fractured")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, "upper left")


@dataclass
class SplitScores:
    """One model's outputs on every image of a split, as served (see `score_split`)."""

    ids: list[str]
    labels: list[int]
    probabilities: list[float]
    raw_probabilities: list[float]
    body_parts: list[str]
    shapes: list[tuple[int, int]] = field(default_factory=list)
    # expert boxes per image (pixels of the file), when the dataset has boxes.csv
    boxes: list[list[tuple[float, float, float, float]]] = field(default_factory=list)
    # the model's candidates per image, uncut (every local maximum up to the card's maximum)
    candidates: list[list[dict[str, float]]] = field(default_factory=list)
    # the Grad-CAM peak per image as a point candidate scored by the image's probability
    gradcam_peaks: list[list[dict[str, float]]] = field(default_factory=list)

    @property
    def has_boxes(self) -> bool:
        return any(self.boxes)


def score_split(
    predictor: Predictor,
    data: str | Path,
    split: str,
    *,
    gradcam: bool = True,
    chunk: int = 64,
) -> SplitScores:
    """Run `predictor` (the served graph) over every image of `split`: probabilities, candidates
    and Grad-CAM peaks, with the expert boxes of `boxes.csv` beside the dataset when present."""
    records = split_records(load_records(data), split)
    root = Path(data).parent if Path(data).is_file() else Path(data)
    boxes = read_boxes(root / "boxes.csv")
    scores = SplitScores([], [], [], [], [])
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        images = [read_image(r.path) for r in part]
        results = predictor.predict(images, heatmaps=gradcam, min_score=0.0)
        for record, image, result in zip(part, images, results, strict=True):
            scores.ids.append(record.id)
            scores.labels.append(int(record.label))
            scores.probabilities.append(result.probability)
            scores.raw_probabilities.append(float(metrics.sigmoid(result.logit)))
            scores.body_parts.append(record.body_part)
            scores.shapes.append((int(image.shape[0]), int(image.shape[1])))
            scores.boxes.append(list(boxes.get(record.id, [])))
            scores.candidates.append(result.candidates)
            peak = (
                metrics.heatmap_peak_candidate(result.heatmap) if result.heatmap is not None else []
            )
            scores.gradcam_peaks.append([{**c, "score": result.probability} for c in peak])
    return scores


def localisation_metrics(scores: SplitScores, *, bootstrap: int = 1000) -> dict[str, Any]:
    """Top-1 localisation and FROC (issue #15 definitions in ml.metrics) of the model's candidates
    and of its Grad-CAM peak, with image-bootstrap 95 % CIs. Empty without expert boxes."""
    if not scores.has_boxes:
        return {}
    out: dict[str, Any] = {
        "fractured_images": sum(1 for b in scores.boxes if b),
        "boxes": sum(len(b) for b in scores.boxes),
    }
    sources = {"gradcam_peak": scores.gradcam_peaks}
    if any(scores.candidates):
        sources["candidates"] = scores.candidates
    n = len(scores.ids)
    for name, cands in sources.items():
        hits = metrics.top1_hits(cands, scores.boxes, scores.shapes)
        froc = metrics.froc_sensitivity(cands, scores.boxes, scores.shapes)

        def froc_at_1(idx: npt.NDArray[np.int64], cands: Any = cands) -> float:
            return metrics.froc_sensitivity(
                [cands[i] for i in idx],
                [scores.boxes[i] for i in idx],
                [scores.shapes[i] for i in idx],
                rates=(1.0,),
            )["fp1"]

        out[name] = {
            "top1": float(hits.mean()) if hits.size else None,
            "top1_ci95": list(
                metrics.bootstrap_over_images(
                    lambda idx, h=hits: float(h[idx].mean()), len(hits), n=bootstrap
                )
            )
            if hits.size
            else None,
            "top1_hits": int(hits.sum()),
            "froc_sensitivity": froc,
            "froc_fp1_ci95": list(
                metrics.bootstrap_over_images(froc_at_1, n, n=min(bootstrap, 300))
            ),
        }
    return out


def subgroup_auroc(
    scores: SplitScores, attributes: dict[str, dict[str, int]], *, bootstrap: int = BOOTSTRAP
) -> dict[str, Any]:
    """AUROC (95 % CI) on the subgroups of attributes.csv: without hardware, per region, per view."""
    y = np.asarray(scores.labels, np.float64)
    p = np.asarray(scores.probabilities, np.float64)
    attrs = [attributes.get(i, {}) for i in scores.ids]
    groups = {
        "all": [True] * len(y),
        "without_hardware": [a.get("hardware", 0) == 0 for a in attrs],
        "with_hardware": [a.get("hardware", 0) == 1 for a in attrs],
    }
    for flag in ("hand", "leg", "hip", "shoulder", "mixed", "frontal", "lateral", "oblique"):
        groups[flag] = [a.get(flag, 0) == 1 for a in attrs]
    table: dict[str, Any] = {}
    for name, mask_list in groups.items():
        mask = np.asarray(mask_list, bool)
        yy, pp = y[mask], p[mask]
        both = 0 < yy.sum() < len(yy)
        table[name] = {
            "n": int(mask.sum()),
            "positives": int(yy.sum()),
            "auroc": metrics.auroc(yy, pp) if both else None,
            "auroc_ci95": list(metrics.bootstrap_ci(yy, pp, n=bootstrap)) if both else None,
        }
    return table


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    out_dir: Path | None = None,
    bootstrap: int = BOOTSTRAP,
) -> dict[str, Any]:
    """Metrics of the artifact on `split` (see module doc); with `out_dir`, also metrics.json + PNGs."""
    from ml.serving import Predictor

    predictor = Predictor.load(model_dir)
    card = predictor.card
    if card is None:  # Predictor.load always reads the card
        raise ValueError("the artifact has no card")
    scores = score_split(predictor, data, split)
    if not scores.ids:
        raise ValueError(f"split {split!r} is empty")
    y = np.array(scores.labels, np.float64)
    prob = np.array(scores.probabilities, np.float64)
    raw = np.array(scores.raw_probabilities, np.float64)
    parts = scores.body_parts
    result = summarise(
        y, prob, card, raw=raw, body_parts=parts if any(parts) else None, bootstrap=bootstrap
    )
    result.update({"split": split, "model_version": card.version})
    root = Path(data).parent if Path(data).is_file() else Path(data)
    attributes = read_attributes(root / "attributes.csv")
    if attributes:
        result["subgroups"] = subgroup_auroc(scores, attributes, bootstrap=bootstrap)
    localisation = localisation_metrics(scores, bootstrap=min(bootstrap, 1000))
    if localisation:
        result["localisation"] = localisation
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{card.version} on {split} (n={len(y)})"
        result["plots"] = {
            "roc": plot_roc(
                y,
                {card.version: prob},
                out_dir / f"roc_{split}.png",
                title,
                thresholds=card.thresholds,
            ).name,
            "pr": plot_pr(y, prob, out_dir / f"pr_{split}.png", title).name,
            "reliability": plot_reliability(
                y,
                {"before (T=1)": raw, "after temperature": prob},
                out_dir / f"reliability_{split}.png",
                title,
            ).name,
        }
        (out_dir / f"metrics_{split}.json").write_text(
            json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n"
        )
        (out_dir / f"predictions_{split}.json").write_text(
            json.dumps(
                json_safe(
                    {
                        "ids": scores.ids,
                        "labels": scores.labels,
                        "probabilities": scores.probabilities,
                        "candidates": scores.candidates,
                        "gradcam_peaks": scores.gradcam_peaks,
                        "shapes": scores.shapes,
                    }
                )
            )
            + "\n"
        )
    return result


# --- the promotion gate's evaluation: candidate against active on the frozen test split ---------------


class EmptySplitError(ValueError):
    """The split to evaluate on has no images."""


def _finite(value: float | None, digits: int = 4) -> float | None:
    if value is None or value != value:  # NaN -> None (JSON)
        return None
    return round(float(value), digits)


def split_metrics(
    scores: SplitScores, thresholds: dict[str, float], *, n_boot: int
) -> dict[str, Any]:
    """AUROC with its bootstrap 95 % CI, PR-AUC, ECE, each operating point's sensitivity,
    specificity and confusion matrix, and top-1 localisation where the split has expert boxes (the
    model's candidates if it localises, else its Grad-CAM peak)."""
    y, p = scores.labels, scores.probabilities
    both = 0 < sum(y) < len(y)
    ci = metrics.bootstrap_ci(y, p, n=n_boot) if both else (float("nan"), float("nan"))
    points = {}
    for name, threshold in thresholds.items():
        at = metrics.at_threshold(y, p, float(threshold))
        points[name] = {
            "threshold": float(threshold),
            "sensitivity": _finite(at["sensitivity"]),
            "specificity": _finite(at["specificity"]),
            "confusion": at["confusion"],
        }
    out: dict[str, Any] = {
        "n": len(y),
        "positives": int(sum(y)),
        "auroc": _finite(metrics.auroc(y, p)) if both else None,
        "auroc_ci": [_finite(ci[0]), _finite(ci[1])] if both else None,
        "pr_auc": _finite(metrics.average_precision(y, p)) if both else None,
        "ece": _finite(metrics.ece(y, p)),
        "operating_points": points,
    }
    if scores.has_boxes:
        source = "candidates" if any(scores.candidates) else "gradcam_peak"
        cands = scores.candidates if source == "candidates" else scores.gradcam_peaks
        hits = metrics.top1_hits(cands, scores.boxes, scores.shapes)
        out["localisation"] = {
            "source": source,
            "top1": _finite(float(hits.mean())) if hits.size else None,
            "fractured_images": int(hits.size),
        }
    return out


def localisation_hits(scores: SplitScores) -> npt.NDArray[np.bool_]:
    """Per fractured image of the split: does the model's best mark hit an expert box?"""
    cands = scores.candidates if any(scores.candidates) else scores.gradcam_peaks
    return metrics.top1_hits(cands, scores.boxes, scores.shapes)


def compare_localisation(
    candidate: SplitScores, active: SplitScores, *, n_boot: int, seed: int = 0
) -> dict[str, float] | None:
    """Paired bootstrap over fractured images of top-1(candidate) - top-1(active); None without
    expert boxes."""
    a, b = localisation_hits(candidate), localisation_hits(active)
    if not a.size or a.size != b.size:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (n_boot, a.size))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    return {
        "difference": float(a.mean() - b.mean()),
        "lower": float(np.quantile(diffs, 0.025)),
        "upper": float(np.quantile(diffs, 0.975)),
        "top1_candidate": float(a.mean()),
        "top1_active": float(b.mean()),
        "fractured_images": int(a.size),
    }


def _gate_plots(
    labels: list[int], curves: dict[str, list[float]], out_dir: Path
) -> dict[str, Path]:
    """ROC curves and reliability diagrams of the models on the same images (PNG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "roc": plot_roc(labels, curves, out_dir / "roc.png", "ROC, frozen test split"),
        "calibration": plot_reliability(labels, curves, out_dir / "calibration.png", "Calibration"),
    }


@dataclass(frozen=True)
class CandidateEvaluation:
    candidate: dict[str, Any]
    active: dict[str, Any] | None
    comparison: dict[str, float] | None
    plots: dict[str, Path]
    # paired comparison of top-1 localisation (None without expert boxes in the split)
    localisation: dict[str, float] | None = None


def compare_candidate(
    *,
    candidate_dir: Path,
    active_dir: Path | None,
    data_dir: Path,
    split: str,
    plots_dir: Path,
    n_boot: int,
) -> CandidateEvaluation:
    """Both models, each loaded as it serves (`Predictor.load`: checksum, folded BatchNorm), on the
    same images of `split`: metrics at each model's own operating points, the paired bootstrap of
    the AUROC difference and of the top-1 localisation difference, ROC and calibration plots."""
    from ml.serving import Predictor
    from ml.snapshot import paired_bootstrap_auroc_difference

    candidate_predictor = Predictor.load(candidate_dir)
    candidate_scores = score_split(candidate_predictor, data_dir, split)
    if not candidate_scores.labels:
        raise EmptySplitError(f"split {split!r} has no images")
    candidate = split_metrics(candidate_scores, candidate_predictor.thresholds, n_boot=n_boot)
    curves = {f"candidate {candidate_predictor.version}": candidate_scores.probabilities}
    active = comparison = localisation = None
    if active_dir is not None:
        active_predictor = Predictor.load(active_dir)
        active_scores = score_split(active_predictor, data_dir, split)
        active = split_metrics(active_scores, active_predictor.thresholds, n_boot=n_boot)
        active["version"] = active_predictor.version
        curves[f"active {active_predictor.version}"] = active_scores.probabilities
        if 0 < sum(candidate_scores.labels) < len(candidate_scores.labels):
            comparison = {
                k: round(v, 4)
                for k, v in paired_bootstrap_auroc_difference(
                    candidate_scores.labels,
                    candidate_scores.probabilities,
                    active_scores.probabilities,
                    n_boot=n_boot,
                ).items()
            }
        localisation = compare_localisation(candidate_scores, active_scores, n_boot=n_boot)
    return CandidateEvaluation(
        candidate=candidate,
        active=active,
        comparison=comparison,
        plots=_gate_plots(candidate_scores.labels, curves, plots_dir),
        localisation=localisation,
    )


def record_in_card(model_dir: Path, result: dict[str, Any], plots_from: Path | None) -> ModelCard:
    """Store `result` as card.metrics[split] and copy the plots into the artifact (model untouched)."""
    import dataclasses
    import shutil

    from ml import registry

    card = registry.verify(model_dir)
    slim = {k: v for k, v in result.items() if k not in ("reliability",)}
    card = dataclasses.replace(card, metrics={**card.metrics, result["split"]: slim})
    if plots_from is not None:
        dest = Path(model_dir) / registry.PLOTS_DIR
        dest.mkdir(exist_ok=True)
        for name in result.get("plots", {}).values():
            shutil.copyfile(Path(plots_from) / name, dest / name)
    registry.write_card(card, model_dir)
    return card


def _format(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model_version']} on {result['split']}: n={result['n']} "
        f"positives={result['positives']}",
        f"AUROC {result['auroc']:.3f} (95% CI {result['auroc_ci95'][0]:.3f}-"
        f"{result['auroc_ci95'][1]:.3f})  PR-AUC {result['pr_auc']:.3f}",
        f"sensitivity at 80%/90% specificity: {result['sensitivity_at_specificity']['0.80']:.3f} / "
        f"{result['sensitivity_at_specificity']['0.90']:.3f}",
        f"ECE {result['ece']:.3f} (before temperature {result['ece_uncalibrated']:.3f}, "
        f"T={result['temperature']:.3f})",
    ]
    for name, op in result["operating_points"].items():
        c = op["confusion"]
        lines.append(
            f"{name:>16} t={op['threshold']:.3f}: sensitivity {op['sensitivity']:.3f} "
            f"specificity {op['specificity']:.3f}  TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}"
        )
    for part, row in result.get("per_body_part", {}).items():
        auc = "  n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
        bal = row["operating_points"].get("balanced", {})
        lines.append(
            f"  {part:>16}: n={row['n']:4d} pos={row['positives']:3d} AUROC {auc} "
            f"sens {bal.get('sensitivity', float('nan')):.3f} spec {bal.get('specificity', float('nan')):.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="artifact folder")
    p.add_argument("--data", required=True, type=Path, help="split/label/ folder or manifest.csv")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics JSON and PNGs")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    p.add_argument(
        "--write-card",
        action="store_true",
        help="record the metrics (and plots) in the artifact's card",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = evaluate(args.model, args.data, args.split, out_dir=args.out, bootstrap=args.bootstrap)
    if args.write_card:
        record_in_card(args.model, result, args.out)
    sys.stdout.write(_format(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
