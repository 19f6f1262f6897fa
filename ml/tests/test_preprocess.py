from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.config import ImageSpec
from ml.preprocess import (
    InvalidImageError,
    decode_image,
    letterbox_geometry,
    preprocess,
    read_image,
    unletterbox,
)
from ml.tests.conftest import png_bytes


def test_decode_samples_are_gray_uint8(sample_files):
    assert len(sample_files) == 20  # samples/manifest.csv
    for path in sample_files:
        img = read_image(path)
        assert img.dtype == np.uint8
        assert img.ndim == 2
        assert min(img.shape) > 32


def test_decode_rgb_palette_rgba_cmyk():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (40, 30), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(decode_image(png_bytes(rgb)), gray)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (40, 30)
    assert np.abs(out.astype(int) - gray).mean() < 6
    rgba = np.dstack([rgb, np.full((40, 30), 255, np.uint8)])
    assert np.array_equal(decode_image(png_bytes(rgba)), gray)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=95)
    assert decode_image(buf.getvalue()).shape == (40, 30)


def test_sixteen_bit_png_matches_its_eight_bit_version():
    rng = np.random.default_rng(1)
    img8 = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(img16).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue())
    assert np.array_equal(decoded, img8)
    spec = ImageSpec(size=64)
    assert np.array_equal(
        preprocess(decoded, spec), preprocess(decode_image(png_bytes(img8)), spec)
    )


def test_twelve_bit_data_is_not_left_dark():
    img12 = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(img12).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.max() == 255
    assert out.min() == 0


def test_exif_orientation_is_applied():
    img = np.zeros((20, 50), np.uint8)
    img[:, :10] = 255  # bright on the left
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (50, 20)
    assert out[:10].mean() > 200  # the bright band is now at the top


@pytest.mark.parametrize(
    "data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"<svg></svg>"]
)
def test_garbage_raises_invalid_image(data):
    with pytest.raises(InvalidImageError):
        decode_image(data)


def test_truncated_jpeg_raises(sample_files):
    data = sample_files[0].read_bytes()
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 2])


def test_preprocess_shape_range_and_determinism(sample_files):
    spec = ImageSpec(size=128)
    img = read_image(sample_files[0])
    a = preprocess(img, spec)
    b = preprocess(img, spec)
    assert a.shape == (128, 128, 1)
    assert a.dtype == np.float32
    assert a.min() >= 0.0
    assert a.max() <= 255.0
    assert np.array_equal(a, b)


def test_preprocess_letterboxes_tall_image():
    img = np.random.default_rng(0).integers(1, 255, (300, 150), np.uint8)
    out = preprocess(img, ImageSpec(size=64))
    assert out.shape == (64, 64, 1)
    assert out[:, :16].max() == 0  # left padding
    assert out[:, 48:].max() == 0  # right padding
    assert out[:, 16:48].min() > 0


def test_preprocess_without_clahe_keeps_intensities():
    img = np.full((32, 32), 100, np.uint8)
    out = preprocess(img, ImageSpec(size=32, clahe=False))
    assert np.all(out == 100)


def test_preprocess_rejects_wrong_input():
    with pytest.raises(InvalidImageError):
        preprocess(np.zeros((8, 8, 3), np.uint8), ImageSpec(size=32))
    with pytest.raises(InvalidImageError):
        preprocess(np.zeros((8, 8), np.float32), ImageSpec(size=32))


def test_letterbox_geometry_and_unletterbox_roundtrip():
    assert letterbox_geometry((300, 150), 64) == (0, 16, 64, 32)
    assert letterbox_geometry((100, 400), 64) == (24, 0, 16, 64)
    # A map that is 1 inside the image area and 0 in the padding maps back to all ones.
    top, left, h, w = letterbox_geometry((120, 240), 64)
    grid = np.zeros((64, 64), np.float32)
    grid[top : top + h, left : left + w] = 1.0
    back = unletterbox(grid, (120, 240), 64)
    assert back.shape == (120, 240)
    assert back.min() > 0.99
    # A hot spot in the upper-left of the image lands in the upper-left of the original.
    spot = np.zeros((8, 8), np.float32)
    spot[2, 0] = 1.0
    back = unletterbox(spot, (120, 240), 64)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert y < 30
    assert x < 40
