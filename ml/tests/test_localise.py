"""The locator (ml.localise), the one predictor (ml.serving) and the outside API
(ml.predict.locate_files / predict_files): real models with random weights, real files."""

from __future__ import annotations

import numpy as np
import pytest

from ml import localise, metrics
from ml.config import ImageSpec

pytestmark = pytest.mark.slow  # builds and traces EfficientNet-Lite0 graphs (seconds each)


def test_targets_put_a_unit_peak_at_each_box_centre_and_its_log_size():
    heat, wh, mask = localise.heat_targets([(100, 40, 132, 56)], 256)
    assert heat.shape == (16, 16)
    assert mask.sum() == 1
    i, j = np.unravel_index(int(heat.argmax()), heat.shape)
    assert (i, j) == (48 // 16, 116 // 16)
    assert heat[i, j] == 1.0
    assert wh[i, j] == pytest.approx([np.log(32 / 256), np.log(16 / 256)])
    assert heat[i, j + 3] < 0.2  # a Gaussian, not a plateau
    empty, _, none = localise.heat_targets([], 256)
    assert empty.max() == 0
    assert none.sum() == 0


def test_decoding_maps_peaks_back_to_the_pixels_of_the_image():
    # A 200 x 400 image letterboxed into 256: scale 0.64, 64 px of padding above and below.
    geometry = localise.Geometry(200, 400, 256)
    loc = np.full((16, 16, 3), -8.0, np.float32)
    loc[..., 1:] = np.log(16 / 256)
    loc[7, 4, 0] = 3.0  # cell centre (72, 120) in the input -> (112.5, 87.5) in the image
    loc[9, 12, 0] = 1.0
    cands = localise.decode_candidates(loc, geometry, max_candidates=5, min_score=0.5)
    assert [round(c["score"], 3) for c in cands] == [0.953, 0.731]
    first = cands[0]
    cx, cy = (first["x0"] + first["x1"]) / 2, (first["y0"] + first["y1"]) / 2
    assert cx == pytest.approx(112.5, abs=0.6)
    assert cy == pytest.approx(87.5, abs=0.6)
    assert first["x1"] - first["x0"] == pytest.approx(16 / 0.64, abs=0.2)
    assert metrics.candidate_hits(
        (first["x0"], first["y0"], first["x1"], first["y1"]), (100, 80, 125, 95), (200, 400)
    )
    # a peak inside the letterbox padding is not a site in the image
    pad = np.full((16, 16, 3), -8.0, np.float32)
    pad[0, 8, 0] = 4.0
    pad[..., 1:] = np.log(8 / 256)
    assert localise.decode_candidates(pad, geometry, min_score=0.01) == []


def test_full_model_equals_upper_over_cached_lower_features():
    spec = ImageSpec(size=64)
    full = localise.build_locator(spec, seed=1)
    lower, upper = localise.build_lower(full), localise.build_upper(spec)
    assert localise.copy_weights(full, upper) > 10
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    logit_a, loc_a = full(x, training=False)
    logit_b, loc_b = upper(lower(x, training=False), training=False)
    assert loc_a.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(np.asarray(logit_a), np.asarray(logit_b), atol=1e-5)
    np.testing.assert_allclose(np.asarray(loc_a), np.asarray(loc_b), atol=1e-5)


@pytest.fixture(scope="module")
def locator_dir(tmp_path_factory):
    from ml.testing import make_tiny_locator_artifact

    return make_tiny_locator_artifact(tmp_path_factory.mktemp("locator") / "tiny")


def test_predictor_serves_the_folded_graph_with_the_same_outputs(locator_dir):
    from ml import registry
    from ml.serving import Predictor

    served = Predictor.load(locator_dir)
    model, card = registry.load(locator_dir)
    as_trained = Predictor(model, card)
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 1)).astype("float32")
    a, b = served.raw_outputs(x, gradcam=True), as_trained.raw_outputs(x, gradcam=True)
    np.testing.assert_allclose(a["logit"], b["logit"], atol=1e-4)
    np.testing.assert_allclose(a["loc"], b["loc"], atol=1e-4)
    np.testing.assert_allclose(a["cam"], b["cam"], atol=1e-3)
    # the card's fusion: sigmoid(logit + 0.5 * heat peak)
    peak = localise.heat_peak_logit(a["loc"])
    expected = 1 / (1 + np.exp(-(a["logit"] + 0.5 * peak)))
    np.testing.assert_allclose(served.probabilities(a), expected, rtol=1e-5)


def test_locator_gradcam_explains_the_served_score_at_the_head(locator_dir):
    """The map is Grad-CAM of the fused score (logit + 0.5 * heat peak, the card's fusion) at the
    head's last hidden layer, computed here independently on the unfolded model."""
    import keras
    import tensorflow as tf

    from ml import registry
    from ml.model import LOGIT
    from ml.serving import Predictor

    served = Predictor.load(locator_dir)
    assert served.gradcam_layer == localise.GRADCAM_LAYER
    model, _ = registry.load(locator_dir)
    graph = keras.Model(
        model.input,
        [
            model.get_layer(localise.GRADCAM_LAYER).output,
            model.get_layer(LOGIT).output,
            model.get_layer(localise.LOC).output,
        ],
    )
    x = np.full((2, 64, 64, 1), 60, np.float32)
    x[0, 20:40, 20:40] = 255
    x[1, 8:24, 36:60] = 230
    with tf.GradientTape() as tape:
        fmap, logit, loc = graph(x, training=False)
        peak = tf.reduce_max(loc[..., 0], axis=(1, 2))
        total = tf.reduce_sum(tf.reshape(logit, [-1]) + 0.5 * peak)
    grads = tape.gradient(total, fmap)
    cam = tf.nn.relu(tf.reduce_sum(fmap * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1))
    cam = np.asarray(cam)
    expected = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    got = served.raw_outputs(x, gradcam=True)["cam"]
    assert got.shape == (2, 4, 4)  # stride 16
    # not empty: the logit alone has no gradient at the head, the fused score has
    assert (got.max(axis=(1, 2)) == 1.0).all()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_predictor_returns_probability_labels_heatmap_and_candidates(locator_dir):
    from ml.serving import Predictor

    predictor = Predictor.load(locator_dir)
    images = [np.full((90, 120), 60, np.uint8), np.full((150, 80), 200, np.uint8)]
    images[0][30:50, 40:60] = 255
    results = predictor.predict(images)
    assert len(results) == 2
    for image, result in zip(images, results, strict=True):
        assert 0.0 <= result.probability <= 1.0
        assert set(result.fractured_at) == {"balanced", "high_sensitivity"}
        assert result.heatmap.shape == image.shape
        assert 1 <= len(result.candidates) <= 3
        scores = [c["score"] for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
        for c in result.candidates:
            assert 0 <= c["x0"] < c["x1"] <= image.shape[1]
            assert 0 <= c["y0"] < c["y1"] <= image.shape[0]
        assert set(result.timings) == {"preprocess_ms", "model_ms", "gradcam_ms"}


def test_locate_files_and_predict_files_agree_with_the_predictor(locator_dir, tmp_path):
    from PIL import Image

    from ml.predict import locate_files, predict_files
    from ml.serving import Predictor

    paths = []
    for i, (h, w) in enumerate([(70, 110), (120, 64)]):
        array = np.random.default_rng(i).integers(0, 255, (h, w), dtype=np.uint8)
        path = tmp_path / f"image{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    located = locate_files(paths, model_dir=locator_dir)
    probabilities = predict_files(paths, model_dir=locator_dir)
    direct = Predictor.load(locator_dir).predict(
        [np.asarray(Image.open(p)) for p in paths], heatmaps=False, min_score=0.0
    )
    assert probabilities == pytest.approx([r.probability for r in direct], abs=1e-6)
    assert len(located) == 2
    for cands, result in zip(located, direct, strict=True):
        assert [set(c) for c in cands] == [{"x0", "y0", "x1", "y1", "score"}] * len(cands)
        assert cands == [{k: pytest.approx(v) for k, v in c.items()} for c in result.candidates]


def test_warm_start_refuses_a_locator_of_another_size(locator_dir):
    from ml.train_locate import LocateConfig, warm_start

    with pytest.raises(ValueError, match=r"at 64 px, this run trains .* at 96 px"):
        warm_start(None, locator_dir, LocateConfig(size=96))
