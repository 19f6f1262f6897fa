"""Retraining's bridge into ml/: fingerprints and splits for snapshots, training, evaluation.

Like `diagnosis.inference` (serving), this module imports ml lazily and returns plain values, so the
web process never loads TensorFlow; ml's ValueErrors become domain errors here. It sits in the same
layer as `diagnosis.inference`: services call it, it imports nothing above the models.
"""

from __future__ import annotations

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


def file_fingerprints(
    paths: Sequence[Path], *, cache_dir: Path | None = None
) -> list[ImageFingerprint | None]:
    """Identity fingerprints of image files (None where unreadable), in order.

    With `cache_dir`, the whole list is cached in one .npz keyed by every file's path, size and
    modification time, so a base dataset folder is decoded once, not at every snapshot.
    """
    import hashlib

    import numpy as np

    from ml import preprocess, snapshot

    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256()
        for path in paths:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        cache_file = cache_dir / f"fingerprints-{digest.hexdigest()[:24]}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as cached:  # each key access reads the array: once each
                ok, hashes = cached["ok"], cached["hashes"]
                thumbs = cached["thumbs"].astype(np.float32)
            return [
                snapshot.ImageFingerprint(hashes=hashes[i : i + 1], thumbs=thumbs[i : i + 1])
                if ok[i]
                else None
                for i in range(len(paths))
            ]
    prints: list[ImageFingerprint | None] = []
    for path in paths:
        try:
            prints.append(snapshot.fingerprint(preprocess.read_image(path)))
        except (preprocess.InvalidImageError, OSError):
            prints.append(None)
    if cache_file is not None and prints:
        size = snapshot.THUMB_SIZE
        blank = np.zeros((size, size), np.float16)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            ok=np.array([p is not None for p in prints]),
            hashes=np.array([p.hashes[0] if p else 0 for p in prints], dtype=np.uint64),
            thumbs=np.stack([p.thumbs[0].astype(np.float16) if p else blank for p in prints]),
        )
        tmp.replace(cache_file)
    return prints


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


# --- training -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutcome:
    artifact_dir: Path | None  # None when cancelled (nothing was written)
    version: str
    cancelled: bool
    best_val_auroc: float
    epochs_run: int
    seconds: float


def train_model(
    *,
    config: dict[str, Any],
    data_dir: Path,
    out_dir: Path,
    work_dir: Path,
    init_from: Path | None,
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> TrainOutcome:
    """Train (or fine-tune `init_from`) with ml.train on the snapshot folder. The artifact is saved
    by `ml.registry.save` (temp folder + atomic rename); checkpoints stay under `work_dir`.

    A fine-tune starts from the active model's own training configuration (learning rates, batch
    size, balancing, which blocks are unfrozen); the keys in `config` override it."""
    from ml import registry
    from ml import train as ml_train
    from ml.config import TrainConfig

    settings_: dict[str, Any] = {}
    if init_from is not None:
        inherited = registry.read_card(init_from).training.get("config") or {}
        settings_.update(
            {k: v for k, v in inherited.items() if k not in {"version", "max_train_images"}}
        )
    settings_.update(config)
    result = ml_train.train(
        TrainConfig.from_dict(settings_),
        data_dir,
        out_dir,
        init_from=init_from,
        progress=progress,
        should_stop=should_stop,
        work_dir=work_dir,
        show_progress=False,
    )
    return TrainOutcome(
        artifact_dir=result.artifact_dir,
        version=result.card.version if result.card else "",
        cancelled=result.cancelled,
        best_val_auroc=float(result.best_val_auroc),
        epochs_run=len(result.history),
        seconds=float(result.seconds),
    )


# --- evaluation on the frozen test split ----------------------------------------------------------------


@dataclass(frozen=True)
class SplitScores:
    ids: list[str]
    labels: list[int]
    probabilities: list[float]
    body_parts: list[str]


def score_split(*, artifact_dir: Path, data_dir: Path, split: str) -> SplitScores:
    """Calibrated probabilities of one model on a split of a materialised snapshot, computed as in
    production (the card's preprocessing and temperature, no test-time augmentation)."""
    import numpy as np

    from ml import data as ml_data
    from ml import inference as ml_inference
    from ml import preprocess, registry

    records = ml_data.split_records(ml_data.load_records(data_dir), split)
    model, card = registry.load(artifact_dir)
    probabilities: list[float] = []
    for start in range(0, len(records), 64):
        chunk = records[start : start + 64]
        batch = np.stack(
            [preprocess.preprocess(preprocess.read_image(r.path), card.spec) for r in chunk]
        )
        probabilities += [
            float(p) for p in ml_inference.predict(model, batch, temperature=card.temperature)
        ]
    return SplitScores(
        ids=[r.id for r in records],
        labels=[int(r.label) for r in records],
        probabilities=probabilities,
        body_parts=[r.body_part for r in records],
    )


def _finite(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if value == value else None  # NaN -> None (JSON)


def split_metrics(
    scores: SplitScores, thresholds: Mapping[str, float], *, n_boot: int
) -> dict[str, Any]:
    """AUROC with its bootstrap 95% CI, PR-AUC, ECE, and each operating point's sensitivity,
    specificity and confusion matrix (ml.metrics)."""
    from ml import metrics

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
    return {
        "n": len(y),
        "positives": int(sum(y)),
        "auroc": _finite(metrics.auroc(y, p)) if both else None,
        "auroc_ci": [_finite(ci[0]), _finite(ci[1])] if both else None,
        "pr_auc": _finite(metrics.average_precision(y, p)) if both else None,
        "ece": _finite(metrics.ece(y, p)),
        "operating_points": points,
    }


def _plots(
    labels: Sequence[int], curves: Mapping[str, Sequence[float]], out_dir: Path
) -> dict[str, Path]:
    """ROC curves and reliability diagrams of the models on the same images (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml import metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    both = 0 < sum(labels) < len(labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, probs in curves.items():
        if both:
            fpr, tpr, _ = metrics.roc_curve(labels, probs)
            ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics.auroc(labels, probs):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, frozen test split")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, probs in curves.items():
        rows = [r for r in metrics.reliability(labels, probs) if r["count"]]
        ax.plot(
            [r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="predicted probability", ylabel="observed fracture rate", title="Calibration")
    ax.legend(loc="upper left", fontsize=7)
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

    candidate_scores = score_split(artifact_dir=candidate_dir, data_dir=data_dir, split=split)
    if not candidate_scores.labels:
        raise UnreadableImageError(f"The snapshot has no {split} images to evaluate on.")
    candidate_card = registry.read_card(candidate_dir)
    candidate = split_metrics(candidate_scores, candidate_card.thresholds, n_boot=n_boot)
    curves = {f"candidate {candidate_card.version}": candidate_scores.probabilities}
    active = comparison = None
    if active_dir is not None:
        active_scores = score_split(artifact_dir=active_dir, data_dir=data_dir, split=split)
        active_card = registry.read_card(active_dir)
        active = split_metrics(active_scores, active_card.thresholds, n_boot=n_boot)
        active["version"] = active_card.version
        curves[f"active {active_card.version}"] = active_scores.probabilities
        if 0 < sum(candidate_scores.labels) < len(candidate_scores.labels):
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
