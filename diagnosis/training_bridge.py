"""Retraining's bridge into ml/: fingerprints and splits for snapshots, training, evaluation.

Like `diagnosis.inference` (serving), this module imports ml lazily and returns plain values, so the
web process never loads TensorFlow; ml's ValueErrors become domain errors here. It sits in the same
layer as `diagnosis.inference`: services call it, it imports nothing above the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
