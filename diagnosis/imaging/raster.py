"""PNG and JPEG: decode with Pillow under strict settings and convert to 8-bit grayscale."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import depth
from diagnosis.imaging.strict import warnings_as_errors

_PILLOW_FORMATS = {"png": ("PNG",), "jpeg": ("JPEG",)}
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def decode_raster(data: bytes, kind: str, *, max_pixels: int) -> np.ndarray:
    """Fully decode one PNG/JPEG frame, EXIF-transposed, as a (H, W) uint8 array."""
    return decode_raster_full(data, kind, max_pixels=max_pixels)[0]


def decode_raster_full(
    data: bytes, kind: str, *, max_pixels: int
) -> tuple[np.ndarray, depth.FullDepth | None]:
    """Fully decode one PNG/JPEG frame, EXIF-transposed: the (H, W) uint8 canonical, and for a
    grayscale image of more than 8 bits (16-bit PNG) its exact values in the same orientation.

    Warnings (truncated data, decompression bombs, corrupt EXIF) are errors; nothing is decoded
    lazily or leniently (`ImageFile.LOAD_TRUNCATED_IMAGES` stays off).
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings_as_errors("PIL"):
        try:
            with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[kind]) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise InvalidUploadError(
                        f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
                        code="image_too_large",
                    )
                if getattr(im, "n_frames", 1) != 1:
                    raise InvalidUploadError(
                        "Animated or multi-frame images are not accepted; upload one frame.",
                        code="multi_frame",
                    )
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # also drops the orientation tag
                return to_gray_u8(im), _full_depth(im)
        except InvalidUploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidUploadError(
                "The image has too many pixels.", code="image_too_large"
            ) from exc
        except Exception as exc:  # hostile input: any decoder failure is a 400
            raise InvalidUploadError(
                "The image is corrupt or truncated and cannot be decoded.", code="corrupt_image"
            ) from exc


def _full_depth(im: Image.Image) -> depth.FullDepth | None:
    """A high-bit-depth grayscale image's samples, exactly (no file window: the full range)."""
    if im.mode not in _HIGH_BIT_MODES or im.mode == "F":
        return None
    return depth.pack(np.asarray(im))


def to_gray_u8(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W) uint8 grayscale.

    High bit depths are scaled over the range of values actually present (no wrap-around, order
    preserved); alpha is composited over black; CMYK/palette/RGB go through Pillow's luminance.
    """
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode in _HIGH_BIT_MODES:
        return scale_to_u8(np.asarray(im))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in _ALPHA_MODES:
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        return np.array(Image.alpha_composite(black, im.convert("RGBA")).convert("L"))
    if mode == "1":
        return np.array(im.convert("L"), dtype=np.uint8)
    return np.array(im.convert("RGB").convert("L"), dtype=np.uint8)


def scale_to_u8(values: Any, *, inplace: bool = False) -> np.ndarray:
    """Linear min..max scaling of any numeric array to uint8 (a constant image becomes 0).

    `inplace=True` lets a float32 input be overwritten (saves a full-size copy)."""
    arr = np.asarray(values, dtype=np.float32)
    if (arr is values and not inplace) or not arr.flags.writeable:
        arr = arr.copy()
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    arr -= lo
    arr *= 255.0 / (hi - lo)
    return to_u8(arr)


def to_u8(arr: np.ndarray) -> np.ndarray:
    """Round and clip a float32 array to uint8, overwriting it instead of allocating temporaries."""
    np.rint(arr, out=arr)
    np.clip(arr, 0, 255, out=arr)
    return arr.astype(np.uint8)


def encode_png(gray: np.ndarray) -> bytes:
    """The canonical file: 8-bit grayscale PNG, no metadata chunks."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()
