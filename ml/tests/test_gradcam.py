from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ml.config import ImageSpec
from ml.gradcam import (
    CAPTION,
    colorize,
    gradcam_batch,
    gradcam_heatmap,
    heatmap_from_png,
    heatmap_png,
    overlay,
)
from ml.model import LAST_CONV, build_model


def _planted(n: int, size: int, rng: np.random.Generator):
    """Noise images; positives carry a bright 6x6 square at a random place."""
    x = rng.uniform(20, 40, (n, size, size, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    where = []
    for i in range(n):
        r, c = rng.integers(2, size - 8, 2)
        where.append((r + 3, c + 3))
        if y[i]:
            x[i, r : r + 6, c : c + 6] = 255.0
    return x, y, np.array(where)


def test_heatmap_shape_and_range():
    model = build_model(ImageSpec(size=32), width=4, depth=2, seed=0)
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 1)).astype(np.float32)
    heatmap = gradcam_heatmap(model, image, layer=LAST_CONV)
    assert heatmap.shape == (16, 16)
    assert heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() <= heatmap.max() <= 1.0


def test_batch_matches_single_images_and_model_logits():
    model = build_model(ImageSpec(size=32), width=4, depth=2, seed=1)
    batch = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 1)).astype(np.float32)
    logits, maps = gradcam_batch(model, batch, layer=LAST_CONV)
    assert logits.shape == (3,)
    assert maps.shape == (3, 16, 16)
    direct = np.asarray(model(batch, training=False)).reshape(-1)
    assert np.allclose(logits, direct, atol=1e-4)
    for i in range(3):
        assert np.allclose(maps[i], gradcam_heatmap(model, batch[i], layer=LAST_CONV), atol=1e-4)


def test_gradcam_peaks_on_planted_feature():
    import keras

    size = 32
    rng = np.random.default_rng(0)
    x, y, _ = _planted(384, size, rng)
    model = build_model(ImageSpec(size=size), width=8, depth=2, dropout=0.0, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    xt, yt, where = _planted(40, size, np.random.default_rng(7))
    logits, maps = gradcam_batch(model, xt, layer=LAST_CONV)
    pos = yt == 1
    assert logits[pos].mean() > logits[~pos].mean() + 2.0  # it learnt the feature
    hits = 0
    for hm, (r, c) in zip(maps[pos], where[pos], strict=True):
        up = np.kron(hm, np.ones((size // hm.shape[0],) * 2, np.float32))  # back to pixels
        near = np.zeros(up.shape, bool)
        near[max(0, r - 6) : r + 6, max(0, c - 6) : c + 6] = True
        ys, xs = np.nonzero(up >= 0.5 * up.max())
        centroid_ok = abs(ys.mean() - r) <= 6 and abs(xs.mean() - c) <= 6
        hits += bool(up[near].mean() > 3 * up[~near].mean() and centroid_ok)
    assert hits >= 0.8 * pos.sum()


def test_colorize_is_transparent_where_cold():
    hm = np.zeros((20, 30), np.float32)
    hm[5:10, 5:10] = 1.0
    rgba = colorize(hm)
    assert rgba.shape == (20, 30, 4)
    assert rgba.dtype == np.uint8
    assert rgba[0, 0, 3] == 0
    assert rgba[7, 7, 3] == 255


def test_overlay_shape_and_caption():
    image = np.full((120, 200), 128, np.uint8)
    hm = np.zeros((8, 8), np.float32)
    hm[2, 2] = 1.0
    out = overlay(image, hm)
    assert out.shape == (120, 200, 3)
    assert out.dtype == np.uint8
    assert "approximate" in CAPTION
    bottom = out[-12:]
    assert bottom.max() >= 200  # white caption text on a dark band
    assert (bottom < 60).mean() > 0.5
    assert not np.array_equal(out[:40, :60], np.full((40, 60, 3), 128))  # heat blended in
    float_in = overlay(image.astype(np.float32)[..., None], hm)
    assert np.array_equal(out, float_in)


def test_heatmap_png_decodes_to_the_colorized_rgba_and_back_to_the_heat_levels():
    rng = np.random.default_rng(3)
    hm = cv2.resize(rng.random((8, 8)).astype(np.float32), (61, 47))
    data = heatmap_png(hm)
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "P"
        rgba = np.asarray(decoded.convert("RGBA"))
    np.testing.assert_array_equal(rgba, colorize(hm))  # what any viewer shows
    levels = heatmap_from_png(data)
    assert levels.shape == (47, 61)
    assert levels.dtype == np.float32
    assert np.abs(levels - hm).max() <= 0.5 / 255 + 1e-6


def test_heatmap_from_png_refuses_other_images():
    out = io.BytesIO()
    Image.new("RGBA", (4, 4)).save(out, "PNG")
    with pytest.raises(ValueError, match="palette"):
        heatmap_from_png(out.getvalue())
    with pytest.raises(ValueError, match="unreadable"):
        heatmap_from_png(b"not a png")
