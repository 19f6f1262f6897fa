"""Retraining's bridge into ml/: fingerprints and splits for snapshots, training, evaluation.

Like `diagnosis.inference` (serving), this module imports ml lazily and returns plain values, so the
web process never loads TensorFlow; ml's ValueErrors become domain errors here. It sits in the same
layer as `diagnosis.inference`: services call it, it imports nothing above the models.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnosis.exceptions import UnreadableImageError

if TYPE_CHECKING:
    from ml.snapshot import ImageFingerprint, SplitResult


def image_fingerprint(data: bytes, *, dihedral: bool = False) -> ImageFingerprint:
    """Perceptual hashes + thumbnails of an encoded image (identity first; `dihedral`: 8 variants)."""
    from ml import preprocess, snapshot

    try:
        return snapshot.fingerprint(preprocess.decode_image(data), dihedral=dihedral)
    except preprocess.InvalidImageError as exc:
        raise UnreadableImageError(f"The image could not be decoded: {exc}") from exc


def near_duplicate_pairs(
    queries: Sequence[ImageFingerprint],
    references: Sequence[ImageFingerprint],
    *,
    same_set: bool = False,
) -> list[tuple[int, int]]:
    from ml import snapshot

    return snapshot.near_duplicate_pairs(queries, references, same_set=same_set)


@dataclass(frozen=True)
class SplitInput:
    key: str
    label: str
    groups: tuple[str, ...]
    previous_split: str | None


def assign_splits(
    items: Sequence[SplitInput],
    *,
    open_splits: Sequence[str],
    links: Iterable[tuple[str, str]],
    seed: int,
) -> SplitResult:
    from ml import snapshot

    return snapshot.assign_splits(
        [snapshot.SplitItem(i.key, i.label, i.groups, i.previous_split) for i in items],
        open_splits=open_splits,
        links=links,
        seed=seed,
    )


def compare_aurocs(
    labels: Sequence[int], candidate: Sequence[float], active: Sequence[float], *, n_boot: int
) -> dict[str, float]:
    """Paired bootstrap of AUROC(candidate) - AUROC(active) on the same images."""
    from ml import snapshot

    return snapshot.paired_bootstrap_auroc_difference(labels, candidate, active, n_boot=n_boot)


def sensitivity_at(
    labels: Sequence[int], probabilities: Sequence[float], threshold: float
) -> float:
    from ml import snapshot

    return snapshot.sensitivity_at(labels, probabilities, threshold)


def specificity_at(
    labels: Sequence[int], probabilities: Sequence[float], threshold: float
) -> float:
    from ml import snapshot

    return snapshot.specificity_at(labels, probabilities, threshold)


# --- training -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutcome:
    artifact_dir: Path
    version: str


def train_model(
    *,
    config: dict[str, Any],
    data_dir: Path,
    out_dir: Path,
    init_from: Path | None,
    progress: Callable[[Mapping[str, Any]], None],
    should_stop: Callable[[], bool],
) -> TrainOutcome:
    """Train (or fine-tune from `init_from`) with ml.train; the artifact is saved atomically."""
    from ml import registry
    from ml import train as ml_train
    from ml.config import TrainConfig

    train_config = TrainConfig.from_dict(config)
    ml_train.train(
        train_config,
        data_dir,
        out_dir,
        init_from=init_from,
        progress=progress,
        should_stop=should_stop,
    )
    card = registry.read_card(out_dir) if (out_dir / registry.CARD_FILE).exists() else None
    return TrainOutcome(artifact_dir=out_dir, version=card.version if card else "")


# --- evaluation on the frozen test split ----------------------------------------------------------------


@dataclass(frozen=True)
class SplitScores:
    ids: list[str]
    labels: list[int]
    probabilities: list[float]
    body_parts: list[str]


def split_rows(data_dir: Path, split: str) -> list[dict[str, str]]:
    """Rows of a materialised snapshot's manifest.csv for one split, with their file paths."""
    with (data_dir / "manifest.csv").open(newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["split"] == split]
    for row in rows:
        (path,) = (data_dir / split / row["label"]).glob(f"{row['id']}.*")
        row["file"] = str(path)
    return rows


def score_split(*, artifact_dir: Path, rows: Sequence[dict[str, str]]) -> SplitScores:
    """Calibrated probabilities of one model on the rows (served the same way as in production:
    the card's preprocessing and temperature, no test-time augmentation)."""
    import numpy as np

    from ml import inference as ml_inference
    from ml import preprocess, registry

    model, card = registry.load(artifact_dir)
    probabilities: list[float] = []
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        batch = np.stack(
            [preprocess.preprocess(preprocess.read_image(r["file"]), card.spec) for r in chunk]
        )
        probabilities += [
            float(p) for p in ml_inference.predict(model, batch, temperature=card.temperature)
        ]
    return SplitScores(
        ids=[r["id"] for r in rows],
        labels=[int(r["label"] == "fractured") for r in rows],
        probabilities=probabilities,
        body_parts=[r.get("body_part", "") for r in rows],
    )


def _ece(labels: Any, probabilities: Any, bins: int = 10) -> float:
    import numpy as np

    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def split_metrics(
    scores: SplitScores, thresholds: Mapping[str, float], *, n_boot: int
) -> dict[str, Any]:
    """AUROC with a bootstrap 95% CI, sensitivity/specificity at each operating point, ECE."""
    import numpy as np

    from ml import snapshot

    y = np.asarray(scores.labels, dtype=bool)
    p = np.asarray(scores.probabilities, dtype=np.float64)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    boots = []
    if pos.size and neg.size:
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            boots.append(snapshot.auroc(y[idx], p[idx]))
    auroc = snapshot.auroc(y, p)
    return {
        "n": len(scores.labels),
        "positives": int(y.sum()),
        "auroc": round(auroc, 4) if auroc == auroc else None,
        "auroc_ci": (
            [round(float(np.quantile(boots, 0.025)), 4), round(float(np.quantile(boots, 0.975)), 4)]
            if boots
            else None
        ),
        "ece": round(_ece(y, p), 4),
        "operating_points": {
            name: {
                "threshold": float(t),
                "sensitivity": round(snapshot.sensitivity_at(y, p, float(t)), 4),
                "specificity": round(snapshot.specificity_at(y, p, float(t)), 4),
            }
            for name, t in thresholds.items()
        },
    }


def _plots(
    labels: Sequence[int], curves: Mapping[str, Sequence[float]], out_dir: Path
) -> dict[str, Path]:
    """ROC curves and reliability diagrams of the models on the same images (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(labels, dtype=bool)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, probs in curves.items():
        p = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-p, kind="mergesort")
        tpr = np.concatenate([[0.0], np.cumsum(y[order]) / max(1, y.sum())])
        fpr = np.concatenate([[0.0], np.cumsum(~y[order]) / max(1, (~y).sum())])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, frozen test split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    edges = np.linspace(0, 1, 11)
    for name, probs in curves.items():
        p = np.asarray(probs, dtype=np.float64)
        index = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
        xs, ys = [], []
        for b in range(10):
            mask = index == b
            if mask.any():
                xs.append(p[mask].mean())
                ys.append(y[mask].mean())
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="predicted probability", ylabel="observed fracture rate", title="Calibration")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png")
    plt.close(fig)
    return {"roc": out_dir / "roc.png", "calibration": out_dir / "calibration.png"}


@dataclass(frozen=True)
class CandidateEvaluation:
    candidate: dict[str, Any]
    active: dict[str, Any] | None
    comparison: dict[str, float] | None
    plots: dict[str, Path]


def evaluate_candidate(
    *,
    candidate_dir: Path,
    active_dir: Path | None,
    data_dir: Path,
    split: str,
    plots_dir: Path,
    n_boot: int,
) -> CandidateEvaluation:
    """Both models on the same images of `split`: metrics at each model's own operating points,
    the paired bootstrap of the AUROC difference, ROC and calibration plots."""
    from ml import registry

    rows = split_rows(data_dir, split)
    if not rows:
        raise UnreadableImageError(f"The snapshot has no {split} images to evaluate on.")
    candidate_scores = score_split(artifact_dir=candidate_dir, rows=rows)
    candidate_card = registry.read_card(candidate_dir)
    candidate = split_metrics(candidate_scores, candidate_card.thresholds, n_boot=n_boot)
    curves = {f"candidate {candidate_card.version}": candidate_scores.probabilities}
    active = comparison = None
    if active_dir is not None:
        active_scores = score_split(artifact_dir=active_dir, rows=rows)
        active_card = registry.read_card(active_dir)
        active = split_metrics(active_scores, active_card.thresholds, n_boot=n_boot)
        active["version"] = active_card.version
        curves[f"active {active_card.version}"] = active_scores.probabilities
        if 0 < sum(candidate_scores.labels) < len(rows):
            comparison = {
                k: round(v, 4)
                for k, v in compare_aurocs(
                    candidate_scores.labels,
                    candidate_scores.probabilities,
                    active_scores.probabilities,
                    n_boot=n_boot,
                ).items()
            }
    return CandidateEvaluation(
        candidate=candidate,
        active=active,
        comparison=comparison,
        plots=_plots(candidate_scores.labels, curves, plots_dir),
    )
