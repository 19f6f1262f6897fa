"""The localisation definitions of issue #15 (ml.metrics), against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ml import metrics

SHAPE = (200, 400)  # height, width: the longer side is 400, so the hit margin is 20 px


def cand(x0, y0, x1, y1, score=0.5):
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": score}


def test_a_hit_needs_the_centre_inside_the_box_grown_by_five_percent_of_the_longer_side():
    box = (100, 50, 120, 70)
    assert metrics.candidate_hits((105, 55, 115, 65), box, SHAPE)  # centre inside
    assert metrics.candidate_hits((139, 60, 139, 60), box, SHAPE)  # 19 px right of the box
    assert metrics.candidate_hits((140, 60, 140, 60), box, SHAPE)  # exactly on the grown edge
    assert not metrics.candidate_hits((141, 60, 141, 60), box, SHAPE)  # 21 px: outside
    assert not metrics.candidate_hits((110, 91, 110, 91), box, SHAPE)  # 21 px below


def test_a_candidate_larger_than_a_quarter_of_the_image_never_hits():
    box = (0, 0, 400, 200)
    quarter = (0, 0, 200, 100)  # exactly 25 %
    assert metrics.candidate_hits(quarter, box, SHAPE)
    assert not metrics.candidate_hits((0, 0, 201, 100), box, SHAPE)


def test_top1_uses_the_best_candidate_and_skips_images_without_boxes():
    boxes = [[(10, 10, 20, 20)], [], [(300, 100, 320, 120)]]
    candidates = [
        [cand(300, 150, 310, 160, 0.9), cand(12, 12, 18, 18, 0.8)],  # best misses
        [cand(0, 0, 5, 5, 0.99)],  # no fracture: not counted in top-1
        [cand(305, 105, 315, 115, 0.7)],  # hit
    ]
    hits = metrics.top1_hits(candidates, boxes, [SHAPE] * 3)
    assert hits.tolist() == [False, True]
    assert metrics.top1_localisation(candidates, boxes, [SHAPE] * 3) == pytest.approx(0.5)
    assert metrics.top1_localisation([[]], [[(1, 1, 2, 2)]], [SHAPE]) == 0.0  # nothing proposed


def test_froc_counts_boxes_found_and_false_positives_over_all_images():
    # image 0: two fractures, image 1: none, image 2: one fracture
    boxes = [[(10, 10, 20, 20), (200, 100, 210, 110)], [], [(300, 100, 320, 120)]]
    candidates = [
        [cand(12, 12, 18, 18, 0.9), cand(380, 180, 390, 190, 0.6)],
        [cand(50, 50, 60, 60, 0.8)],
        [cand(305, 105, 315, 115, 0.7), cand(310, 110, 312, 112, 0.5)],  # two hits on one box
    ]
    curve = metrics.froc_points(candidates, boxes, [SHAPE] * 3)
    assert curve["thresholds"].tolist() == [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5]
    # found boxes out of 3, false positives over 3 images
    assert curve["sensitivity"].tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert curve["fp_per_image"].tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    sens = metrics.froc_sensitivity(candidates, boxes, [SHAPE] * 3)
    assert sens == pytest.approx({"fp0.25": 1 / 3, "fp0.5": 2 / 3, "fp1": 2 / 3})


def test_froc_groups_equal_scores_into_one_threshold():
    boxes = [[(10, 10, 20, 20)], []]
    candidates = [[cand(12, 12, 18, 18, 0.5)], [cand(50, 50, 60, 60, 0.5)]]
    curve = metrics.froc_points(candidates, boxes, [SHAPE] * 2)
    assert curve["thresholds"].tolist() == [np.inf, 0.5]
    assert curve["sensitivity"].tolist() == [0.0, 1.0]
    assert curve["fp_per_image"].tolist() == [0.0, 0.5]


def test_a_heatmap_peak_is_a_point_candidate():
    heat = np.zeros((50, 80))
    heat[30, 70] = 0.9
    (peak,) = metrics.heatmap_peak_candidate(heat)
    assert (peak["x0"], peak["y0"]) == (70.5, 30.5)
    assert peak["x0"] == peak["x1"]
    assert peak["y0"] == peak["y1"]
    assert peak["score"] == pytest.approx(0.9)
    assert metrics.heatmap_peak_candidate(np.zeros((4, 4))) == []


def test_image_bootstrap_interval_contains_the_estimate():
    hits = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], bool)
    lo, hi = metrics.bootstrap_over_images(lambda idx: float(hits[idx].mean()), len(hits), n=500)
    assert lo <= hits.mean() <= hi
    assert 0.0 <= lo < hi <= 1.0
