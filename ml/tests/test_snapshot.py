"""Group-aware splitting, near-duplicate detection and the paired AUROC comparison."""

from __future__ import annotations

import numpy as np
import pytest

from ml.snapshot import (
    SplitItem,
    assign_splits,
    auroc,
    fingerprint,
    near_duplicate_pairs,
    paired_bootstrap_auroc_difference,
    sensitivity_at,
)


def _image(seed: int, shape=(120, 90)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (12, 9), dtype=np.uint8)
    import cv2

    return cv2.resize(base, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def test_near_duplicates_found_through_flip_and_reencode_not_between_different_images():
    import cv2

    a, b = _image(1), _image(2)
    a_flipped = np.ascontiguousarray(a[:, ::-1])
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(a, (60, 80)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    a_small_jpeg = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    refs = [fingerprint(a), fingerprint(b)]
    queries = [fingerprint(a_flipped, dihedral=True), fingerprint(a_small_jpeg, dihedral=True)]
    pairs = near_duplicate_pairs(queries, refs)
    assert sorted(pairs) == [(0, 0), (1, 0)]
    assert near_duplicate_pairs([fingerprint(b, dihedral=True)], [fingerprint(a)]) == []


def test_fingerprint_rejects_non_grayscale():
    with pytest.raises(ValueError):
        fingerprint(np.zeros((4, 4, 3), np.uint8))


def _items(n: int, *, prefix: str = "r", groups_of: int = 1, positive_every: int = 4):
    return [
        SplitItem(
            key=f"{prefix}{i:03d}",
            label="fractured" if i % positive_every == 0 else "not_fractured",
            groups=(f"patient-{prefix}{i // groups_of}",),
        )
        for i in range(n)
    ]


def test_split_is_deterministic_group_aware_and_stratified():
    items = _items(200, groups_of=2)
    first = assign_splits(items, seed=3)
    again = assign_splits(list(reversed(items)), seed=3)
    assert first.splits == again.splits
    by_group: dict[str, set[str]] = {}
    for item in items:
        by_group.setdefault(item.groups[0], set()).add(first.splits[item.key])
    assert all(len(s) == 1 for s in by_group.values())
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        members = [i for i in items if first.splits[i.key] == split]
        assert abs(len(members) / len(items) - share) < 0.03
        positives = sum(i.label == "fractured" for i in members)
        assert positives > 0


def test_previous_splits_are_kept_and_new_items_never_enter_a_frozen_test_split():
    old = assign_splits(_items(60), seed=0)
    previous = [
        SplitItem(key=i.key, label=i.label, groups=i.groups, previous_split=old.splits[i.key])
        for i in _items(60)
    ]
    test_key = next(k for k, s in old.splits.items() if s == "test")
    test_patient = next(i.groups[0] for i in previous if i.key == test_key)
    newcomers = [
        *_items(40, prefix="n"),
        SplitItem(key="same-patient-as-test", label="fractured", groups=(test_patient,)),
        SplitItem(key="dup-of-test", label="fractured"),
    ]
    result = assign_splits(
        previous + newcomers,
        open_splits=("train", "val"),
        links=[("dup-of-test", test_key)],
    )
    for item in previous:
        assert result.splits[item.key] == old.splits[item.key]
    assert result.excluded == {
        "same-patient-as-test": "group_in_frozen_test",
        "dup-of-test": "group_in_frozen_test",
    }
    assert {result.splits[i.key] for i in newcomers if i.key in result.splits} <= {"train", "val"}
    assert result.group_of["dup-of-test"] == result.group_of[test_key]


def test_new_item_bridging_two_splits_is_excluded():
    items = [
        SplitItem(key="a", label="fractured", groups=("p1",), previous_split="train"),
        SplitItem(key="b", label="fractured", groups=("p2",), previous_split="val"),
        SplitItem(key="c", label="fractured", groups=("p1", "p2")),
    ]
    result = assign_splits(items, open_splits=("train", "val"))
    assert result.excluded == {"c": "group_spans_splits"}


def test_auroc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80).astype(bool)
    s = np.round(rng.random(80), 1)
    pairs = [(p > n) + 0.5 * (p == n) for p in s[y] for n in s[~y]]
    assert auroc(y, s) == pytest.approx(np.mean(pairs))


def test_paired_bootstrap_brackets_the_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(bool)
    good = y + rng.normal(0, 0.6, 300)
    weak = y + rng.normal(0, 1.5, 300)
    out = paired_bootstrap_auroc_difference(y, good, weak, n_boot=300, seed=5)
    assert out["lower"] < out["difference"] < out["upper"]
    assert out["lower"] > 0
    assert out == paired_bootstrap_auroc_difference(y, good, weak, n_boot=300, seed=5)
    same = paired_bootstrap_auroc_difference(y, good, good, n_boot=50)
    assert same["lower"] == same["upper"] == 0.0


def test_sensitivity_at_threshold():
    assert sensitivity_at([1, 1, 0, 1], [0.9, 0.2, 0.95, 0.5], 0.5) == pytest.approx(2 / 3)
