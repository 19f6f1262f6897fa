"""The full-depth canonical: the image's real values (DICOM Modality LUT / rescale applied, or a
16-bit PNG's samples) kept losslessly beside the 8-bit canonical, for windowing in the viewer.

It is stored as a 16-bit grayscale PNG of unsigned samples `s` with a linear map to the file's
units, `value = s * slope + intercept`, in the same orientation as the 8-bit canonical. Values of
the file are integers (DICOM stored values, Modality LUT output, PNG samples): when they span at
most 65,536 steps, `s = value_int - min` and the map is exact; a wider span (32-bit DICOM) is
quantised linearly to 16 bits and marked `exact: false`. MONOCHROME1 is not inverted in the
samples (windows apply to the values, as in the file): `invert` tells the viewer to show low
values bright, as the 8-bit canonical does.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FullDepth", "encode_png16", "file_window", "pack"]

_MAX_SPAN = 65535
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FullDepth:
    samples: np.ndarray  # (H, W) uint16
    slope: float  # value = sample * slope + intercept, in the file's units
    intercept: float
    window: tuple[float, float] | None  # (centre, width) from the file, in its units; None: none
    invert: bool  # MONOCHROME1: low values are shown bright
    exact: bool  # False when a span wider than 16 bits was quantised

    @property
    def value_range(self) -> tuple[float, float]:
        """(lowest, highest) value present, in the file's units."""
        lo = float(self.samples.min()) * self.slope + self.intercept
        hi = float(self.samples.max()) * self.slope + self.intercept
        return (min(lo, hi), max(lo, hi))

    def params(self) -> dict[str, Any]:
        """What the viewer needs to turn samples into values and window them (JSON-ready)."""
        lo, hi = self.value_range
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "min": lo,
            "max": hi,
            "window": list(self.window) if self.window is not None else None,
            "invert": self.invert,
            "exact": self.exact,
        }


def pack(
    values: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    invert: bool = False,
) -> FullDepth:
    """Integer `values` (H, W), meaning `values * slope + intercept`, as 16-bit samples.

    Exact when max - min <= 65535; otherwise quantised linearly over min..max."""
    if values.dtype.kind not in "iu":
        raise TypeError("full-depth values must be integers")
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise ValueError("the value map is not finite")
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo
    if span <= _MAX_SPAN:
        shifted = values.astype(np.int64 if values.dtype.itemsize > 2 else np.int32)
        shifted -= lo
        samples = shifted.astype(np.uint16)
        return FullDepth(
            samples=samples,
            slope=float(slope),
            intercept=float(intercept + slope * lo),
            window=window,
            invert=invert,
            exact=True,
        )
    scaled = values.astype(np.float64)
    scaled -= lo
    scaled *= _MAX_SPAN / span
    np.rint(scaled, out=scaled)
    return FullDepth(
        samples=scaled.astype(np.uint16),
        slope=float(slope * span / _MAX_SPAN),
        intercept=float(intercept + slope * lo),
        window=window,
        invert=invert,
        exact=False,
    )


def encode_png16(samples: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG of `samples` (H, W) uint16: no metadata chunks, not interlaced.

    Written here rather than by Pillow, whose per-row adaptive filtering takes about three times
    as long on 16-bit images: every row uses the Sub filter (a difference with the sample to the
    left, vectorised), then zlib at level 1, as the 8-bit canonical."""
    big_endian = np.ascontiguousarray(samples, dtype=">u2")
    height, width = big_endian.shape
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ValueError("image size out of PNG range")
    rows = big_endian.view(np.uint8).reshape(height, width * 2)
    filtered = np.empty((height, width * 2 + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1:3] = rows[:, :2]
    np.subtract(rows[:, 2:], rows[:, :-2], out=filtered[:, 3:])  # modulo 256, as PNG defines
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit grey, no interlace
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(filtered, 1)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def file_window(centre: Any, width: Any) -> tuple[float, float] | None:
    """The first (centre, width) pair of a multi-valued window, or None when either is absent,
    not a number or the width is not positive."""

    def first(value: Any) -> float | None:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            value = value[0] if len(value) else None
        if value in (None, ""):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    c, w = first(centre), first(width)
    if c is None or w is None or w <= 0:
        return None
    return (c, w)
