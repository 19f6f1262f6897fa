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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ml import metrics
from ml.data import load_images, load_records, split_records
from ml.registry import ModelCard, json_safe

logger = logging.getLogger(__name__)
BOOTSTRAP = 2000


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def summarise(
    y: npt.ArrayLike,
    logits: npt.ArrayLike,
    card: ModelCard,
    *,
    body_parts: list[str] | None = None,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics for labels `y` (0/1) and model logits, at the card's temperature and thresholds."""
    y = np.asarray(y, np.float64)
    z = np.asarray(logits, np.float64)
    prob = _sigmoid(z / card.temperature)
    raw = _sigmoid(z)
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


def plot_roc(
    y: npt.ArrayLike, prob: npt.ArrayLike, card: ModelCard, path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = metrics.roc_curve(y, prob)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot(fpr, tpr, lw=1.8, label=f"AUROC {metrics.auroc(y, prob):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for i, (name, t) in enumerate(card.thresholds.items()):
        r = metrics.at_threshold(y, prob, t)
        ax.plot(
            1 - r["specificity"],
            r["sensitivity"],
            "o",
            color=f"C{i + 1}",
            label=f"{name} (t={t:.2f})",
        )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pr(y: npt.ArrayLike, prob: npt.ArrayLike, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(
    y: npt.ArrayLike, prob: npt.ArrayLike, raw: npt.ArrayLike, path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for p, label, color in ((raw, "before (T=1)", "C3"), (prob, "after temperature", "C0")):
        rows = [r for r in metrics.reliability(y, p) if r["count"]]
        ax.plot(
            [r["confidence"] for r in rows],
            [r["accuracy"] for r in rows],
            "o-",
            color=color,
            label=f"{label}: ECE {metrics.ece(y, p):.3f}",
        )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction fractured")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predict_split(
    model_dir: str | Path, data: str | Path, split: str, *, tta: bool = False
) -> tuple[ModelCard, list[Any], npt.NDArray[np.float32]]:
    """(card, records, logits) for every image of `split`."""
    from ml import registry
    from ml.inference import predict_logits

    model, card = registry.load(model_dir)
    records = split_records(load_records(data), split)
    if not records:
        raise ValueError(f"split {split!r} is empty")
    images = load_images(records, card.spec)[..., np.newaxis].astype(np.float32)
    return card, records, predict_logits(model, images, tta=tta)


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    out_dir: Path | None = None,
    tta: bool = False,
    bootstrap: int = BOOTSTRAP,
) -> dict[str, Any]:
    """Metrics of the artifact on `split` (see module doc); with `out_dir`, also metrics.json + PNGs."""
    card, records, logits = predict_split(model_dir, data, split, tta=tta)
    y = np.array([r.label for r in records], np.float64)
    parts = [r.body_part for r in records]
    result = summarise(
        y, logits, card, body_parts=parts if any(parts) else None, bootstrap=bootstrap
    )
    result.update({"split": split, "model_version": card.version, "tta": tta})
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        prob = _sigmoid(logits.astype(np.float64) / card.temperature)
        raw = _sigmoid(logits.astype(np.float64))
        title = f"{card.version} on {split} (n={len(y)})"
        result["plots"] = {
            "roc": plot_roc(y, prob, card, out_dir / f"roc_{split}.png", title).name,
            "pr": plot_pr(y, prob, out_dir / f"pr_{split}.png", title).name,
            "reliability": plot_reliability(
                y, prob, raw, out_dir / f"reliability_{split}.png", title
            ).name,
        }
        (out_dir / f"metrics_{split}.json").write_text(
            json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n"
        )
        np.savez(
            out_dir / f"predictions_{split}.npz",
            ids=[r.id for r in records],
            y=y,
            logits=logits,
            body_part=parts,
        )
    return result


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
    p.add_argument("--tta", action="store_true", help="average with the left-right flip")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    p.add_argument(
        "--write-card",
        action="store_true",
        help="record the metrics (and plots) in the artifact's card",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = evaluate(
        args.model, args.data, args.split, out_dir=args.out, tta=args.tta, bootstrap=args.bootstrap
    )
    if args.write_card:
        record_in_card(args.model, result, args.out)
    sys.stdout.write(_format(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
