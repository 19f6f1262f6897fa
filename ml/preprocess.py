"""Decode and preprocess radiographs (OpenCV, Pillow and numpy only; shared by training and serving)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from ml.config import ImageSpec

MAX_PIXELS = 60_000_000


class InvalidImageError(ValueError):
    """The bytes are not a single decodable still image we can use."""


def _to_uint8(array: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """Integer images of more than 8 bits -> uint8 by their bit depth (12-bit data stays bright)."""
    if array.dtype == np.uint8:
        return array.astype(np.uint8, copy=False)
    if array.dtype.kind == "f":
        floats = cast("npt.NDArray[np.floating[Any]]", array)
        lo, hi = float(np.nanmin(floats)), float(np.nanmax(floats))
        scaled = (floats - lo) / (hi - lo) if hi > lo else np.zeros_like(floats)
        return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    values = array.astype(np.int64)
    values = np.clip(values, 0, None)
    peak = int(values.max()) if values.size else 0
    bits = max(8, math.ceil(math.log2(peak + 1))) if peak > 0 else 8
    full = (1 << bits) - 1
    # Exact for data written as 8-bit * 257 (the usual 8 -> 16-bit widening).
    out: npt.NDArray[np.uint8] = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return out


def decode_image(data: bytes) -> npt.NDArray[np.uint8]:
    """PNG/JPEG/TIFF bytes -> grayscale uint8 (H, W); 16-bit, RGB(A), palette and CMYK handled.

    EXIF orientation is applied. Raises InvalidImageError for anything else.
    """
    if not data:
        raise InvalidImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image  # opened as an ImageFile, then transposed or converted
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InvalidImageError(f"image too large: {img.width}x{img.height}")
                if getattr(img, "n_frames", 1) != 1:
                    raise InvalidImageError("multi-frame images are not supported")
                img.load()
                img = ImageOps.exif_transpose(img)
                mode = img.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    array = np.asarray(img)
                    if mode == "I":
                        array = array.astype(np.int64)
                    return np.ascontiguousarray(_to_uint8(array))
                if mode == "F":
                    return np.ascontiguousarray(_to_uint8(np.asarray(img)))
                if mode == "L":
                    return np.array(img, dtype=np.uint8)
                if mode == "1":
                    return np.array(img.convert("L"), dtype=np.uint8)
                if mode in ("LA", "RGBA", "PA"):
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                    img = Image.alpha_composite(background, img)
                return np.array(img.convert("L"), dtype=np.uint8)
    except InvalidImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise InvalidImageError(f"cannot decode image: {exc.__class__.__name__}") from exc


def read_image(path: str | Path) -> npt.NDArray[np.uint8]:
    """Decode an image file -> grayscale uint8 (H, W)."""
    return decode_image(Path(path).read_bytes())


def letterbox_geometry(shape_hw: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an image of shape (H, W) scaled into a `size` x `size` square."""
    height, width = int(shape_hw[0]), int(shape_hw[1])
    if height < 1 or width < 1:
        raise InvalidImageError(f"empty image of shape {shape_hw}")
    scale = size / max(height, width)
    h = min(size, max(1, round(height * scale)))
    w = min(size, max(1, round(width * scale)))
    return (size - h) // 2, (size - w) // 2, h, w


def apply_clahe(image: npt.NDArray[np.uint8], clip: float) -> npt.NDArray[np.uint8]:
    """Contrast-limited adaptive histogram equalisation, 8x8 tiles."""
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(8, 8))
    return np.asarray(clahe.apply(image), np.uint8)


def preprocess(image: npt.NDArray[np.uint8], spec: ImageSpec) -> npt.NDArray[np.float32]:
    """CLAHE + letterbox: (H, W) uint8 -> (size, size, 1) float32 in [0, 255] (padding is 0)."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        desc = f"{image.ndim}-D {image.dtype}" if isinstance(image, np.ndarray) else type(image)
        raise InvalidImageError(f"expected a 2-D uint8 array, got {desc}")
    top, left, h, w = letterbox_geometry(image.shape, spec.size)
    eq = apply_clahe(image, spec.clahe_clip) if spec.clahe else image
    shrinking = h < image.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(eq, (w, h), interpolation=interpolation)
    out = np.zeros((spec.size, spec.size), np.float32)
    out[top : top + h, left : left + w] = resized
    return out[..., np.newaxis]


def preprocess_bytes(data: bytes, spec: ImageSpec) -> npt.NDArray[np.float32]:
    """decode_image + preprocess."""
    return preprocess(decode_image(data), spec)


def unletterbox(
    map_2d: npt.NDArray[np.floating], shape_hw: tuple[int, int], size: int
) -> npt.NDArray[np.float32]:
    """A map over the model input (any resolution, e.g. a Grad-CAM grid) -> (H, W) float32 map
    aligned with the original image of shape `shape_hw` (the letterbox padding is cut away)."""
    if map_2d.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {map_2d.shape}")
    full = cv2.resize(map_2d.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    top, left, h, w = letterbox_geometry(shape_hw, size)
    crop = full[top : top + h, left : left + w]
    height, width = int(shape_hw[0]), int(shape_hw[1])
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
