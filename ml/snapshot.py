"""Dataset snapshot helpers: near-duplicate detection and a deterministic, group-aware split.

Pure numpy/OpenCV. The split keeps every group (one patient, a cluster of near-duplicate images) inside
one split, keeps items that already have a split where they are (so a frozen test split stays frozen
across snapshots) and places new groups by a seeded, label-stratified greedy assignment.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.70, "val": 0.15, "test": 0.15}
THUMB_SIZE = 64


@dataclass(frozen=True)
class ImageFingerprint:
    """Perceptual hashes (one per dihedral variant: identity first) and equalised thumbnails."""

    hashes: npt.NDArray[np.uint64]  # (V,) V = 1 or 8
    thumbs: npt.NDArray[np.float32]  # (V, 64, 64) zero-mean, unit-norm


def _variants(image: npt.NDArray[np.uint8], dihedral: bool) -> list[npt.NDArray[np.uint8]]:
    if not dihedral:
        return [image]
    return [
        np.ascontiguousarray(np.rot90(flipped, k))
        for flipped in (image, image[:, ::-1])
        for k in range(4)
    ]


def _phash(image: npt.NDArray[np.uint8]) -> np.uint64:
    small = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def _thumb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    small = cv2.equalizeHist(
        cv2.resize(image, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    ).astype(np.float32)
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


def fingerprint(image: npt.NDArray[np.uint8], *, dihedral: bool = False) -> ImageFingerprint:
    """(H, W) uint8 -> hashes and thumbnails; `dihedral` adds the 7 flipped/rotated variants."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected 2-D uint8, got {image.ndim}-D {image.dtype}")
    variants = _variants(image, dihedral)
    return ImageFingerprint(
        hashes=np.array([_phash(v) for v in variants], dtype=np.uint64),
        thumbs=np.stack([_thumb(v) for v in variants]),
    )


def _popcount64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    as_bytes = values.reshape(-1, 1).view(np.uint8)
    counts: npt.NDArray[np.int64] = (
        np.unpackbits(as_bytes, axis=1).sum(axis=1).reshape(values.shape).astype(np.int64)
    )
    return counts


def near_duplicate_pairs(
    queries: Sequence[ImageFingerprint],
    references: Sequence[ImageFingerprint],
    *,
    max_hash_distance: int = 10,
    min_ncc: float = 0.96,
    same_set: bool = False,
) -> list[tuple[int, int]]:
    """Pairs (query index, reference index) that show the same picture.

    A pair is a candidate when the perceptual hashes of any query variant and the reference are within
    `max_hash_distance` bits; it is confirmed when the normalised cross-correlation of the equalised
    thumbnails is >= `min_ncc` (a small hash distance alone also matches different patients in the
    same standard view). With `same_set`, queries and references are one list and i < j is reported.
    """
    if not queries or not references:
        return []
    ref_hashes = np.array([r.hashes[0] for r in references], dtype=np.uint64)
    ref_thumbs = np.stack([r.thumbs[0] for r in references])
    pairs: list[tuple[int, int]] = []
    for qi, query in enumerate(queries):
        distances = _popcount64(query.hashes[:, None] ^ ref_hashes[None, :])  # (V, R)
        candidates = np.flatnonzero(distances.min(axis=0) <= max_hash_distance)
        if same_set:
            candidates = candidates[candidates > qi]
        if candidates.size == 0:
            continue
        ncc = np.einsum("vhw,rhw->vr", query.thumbs, ref_thumbs[candidates]).max(axis=0)
        pairs.extend((qi, int(ri)) for ri in candidates[ncc >= min_ncc])
    return pairs


@dataclass(frozen=True)
class SplitItem:
    key: str
    label: str
    groups: tuple[str, ...] = ()  # items sharing any group key are kept together
    previous_split: str | None = None  # keeps it (e.g. the frozen test split)


@dataclass
class SplitResult:
    splits: dict[str, str]  # key -> split
    group_of: dict[str, str]  # key -> group id
    excluded: dict[str, str] = field(default_factory=dict)  # key -> reason


class _UnionFind:
    def __init__(self, keys: Iterable[str]) -> None:
        self.parent = {k: k for k in keys}

    def find(self, key: str) -> str:
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _stable_hash(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def assign_splits(
    items: Sequence[SplitItem],
    *,
    open_splits: Sequence[str] = SPLITS,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    links: Iterable[tuple[str, str]] = (),
    seed: int = 0,
) -> SplitResult:
    """Deterministic group-aware split.

    Items linked by a shared group key or by `links` (e.g. near-duplicate pairs) form one group.
    Items with a `previous_split` keep it. A new item whose group already sits in one split joins it
    if that split is open, and is excluded otherwise (e.g. the same patient as a frozen test image); a
    new item whose group already spans several splits is excluded. Wholly new groups go to the open
    splits by a label-stratified greedy assignment, largest groups first, ties broken by a seeded hash.
    """
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("item keys must be unique")
    unknown = set(open_splits) - set(SPLITS)
    if unknown or not open_splits:
        raise ValueError(f"open_splits must be a non-empty subset of {SPLITS}")
    by_key = {item.key: item for item in items}
    uf = _UnionFind(keys)
    first_with_group: dict[str, str] = {}
    for item in items:
        for group in item.groups:
            if group in first_with_group:
                uf.union(item.key, first_with_group[group])
            else:
                first_with_group[group] = item.key
    for a, b in links:
        if a in by_key and b in by_key:
            uf.union(a, b)

    components: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        components[uf.find(key)].append(key)
    group_of = {
        key: "g" + _stable_hash(0, root)[:12]
        for root, members in components.items()
        for key in members
    }

    splits: dict[str, str] = {}
    excluded: dict[str, str] = {}
    new_components: list[list[str]] = []
    for members in components.values():
        placed = {by_key[k].previous_split for k in members if by_key[k].previous_split}
        for k in members:
            if by_key[k].previous_split:
                splits[k] = by_key[k].previous_split  # type: ignore[assignment]
        newcomers = [k for k in members if not by_key[k].previous_split]
        if not newcomers:
            continue
        if not placed:
            new_components.append(newcomers)
        elif len(placed) > 1:
            excluded.update(dict.fromkeys(newcomers, "group_spans_splits"))
        else:
            (target,) = placed
            if target in open_splits:
                splits.update(dict.fromkeys(newcomers, str(target)))
            else:
                excluded.update(dict.fromkeys(newcomers, f"group_in_frozen_{target}"))

    labels = sorted({item.label for item in items})
    weight = {s: float(fractions.get(s, 0.0)) for s in open_splits}
    total_weight = sum(weight.values())
    if total_weight <= 0:
        raise ValueError("fractions of the open splits must be positive")
    target_share = {s: w / total_weight for s, w in weight.items()}
    current = {s: dict.fromkeys(labels, 0) for s in open_splits}
    for key, split in splits.items():
        if split in current:
            current[split][by_key[key].label] += 1
    totals = {label: sum(current[s][label] for s in open_splits) for label in labels}
    for members in new_components:
        for k in members:
            totals[by_key[k].label] += 1

    new_components.sort(key=lambda m: (-len(m), _stable_hash(seed, m[0])))
    for members in new_components:
        counts = dict.fromkeys(labels, 0)
        for k in members:
            counts[by_key[k].label] += 1

        def cost(split: str, counts: dict[str, int] = counts) -> float:
            delta = 0.0
            for label, n in counts.items():
                want = target_share[split] * totals[label]
                have = current[split][label]
                delta += (have + n - want) ** 2 - (have - want) ** 2
            return delta

        best = min(open_splits, key=lambda s: (cost(s), -target_share[s]))
        for k in members:
            splits[k] = best
            current[best][by_key[k].label] += 1
    return SplitResult(splits=splits, group_of=group_of, excluded=excluded)


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); labels are 0/1."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]  # ties share their average rank
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def paired_bootstrap_auroc_difference(
    labels: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same images, with a paired, class-stratified bootstrap CI.

    Returns {"difference", "lower", "upper", "auroc_a", "auroc_b", "n_boot"}.
    """
    y = np.asarray(labels, dtype=bool)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if not (len(y) == len(a) == len(b)):
        raise ValueError("labels and both score arrays must have the same length")
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("both classes are needed to compare AUROC")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        diffs[i] = auroc(y[idx], a[idx]) - auroc(y[idx], b[idx])
    auroc_a, auroc_b = auroc(y, a), auroc(y, b)
    return {
        "difference": auroc_a - auroc_b,
        "lower": float(np.quantile(diffs, alpha / 2)),
        "upper": float(np.quantile(diffs, 1 - alpha / 2)),
        "auroc_a": auroc_a,
        "auroc_b": auroc_b,
        "n_boot": float(n_boot),
    }


def sensitivity_at(labels: npt.ArrayLike, probabilities: npt.ArrayLike, threshold: float) -> float:
    """Share of positives with probability >= threshold."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probabilities, dtype=np.float64)
    if not y.any():
        return float("nan")
    return float((p[y] >= threshold).mean())


def specificity_at(labels: npt.ArrayLike, probabilities: npt.ArrayLike, threshold: float) -> float:
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.all():
        return float("nan")
    return float((p[~y] < threshold).mean())
