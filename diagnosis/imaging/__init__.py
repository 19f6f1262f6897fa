"""Upload validation and canonicalisation of radiographs (PNG, JPEG, DICOM).

`validate_upload(data, filename)` is the single entry point: it sniffs the real type from the bytes
(never the name or Content-Type), checks the dimensions from the header before decoding, decodes
fully and strictly, and re-encodes one 8-bit grayscale PNG (which drops EXIF, trailers and any
appended payload). Every rejection raises `InvalidUploadError` with a stable `code`:

- `empty_file` (400), `file_too_large` (413): size checks, before anything is parsed;
- `unsupported_format`: not PNG, JPEG (baseline/extended/progressive) or DICOM, whatever its name,
  or DICOM in a compression we do not decode (see `dicom.SUPPORTED_COMPRESSIONS`);
- `image_too_large`: header dimensions above settings.UPLOAD_MAX_PIXELS;
- `multi_frame`: APNG, multi-picture JPEG or multi-frame DICOM;
- `corrupt_image`: malformed, truncated or otherwise undecodable PNG/JPEG;
- `invalid_dicom`: DICOM that cannot be parsed, lacks an image, or whose pixel data does not match
  its header or is truncated or corrupt (also non-DICOM bytes in a file named `.dcm`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from PIL import Image

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import depth, dicom, names, raster, sniff

__all__ = ["CanonicalImage", "file_too_large_error", "validate_upload"]

logger = logging.getLogger(__name__)

_DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")


@dataclass(frozen=True)
class CanonicalImage:
    png_bytes: bytes  # 8-bit grayscale PNG, the only form that is ever served
    width: int
    height: int
    source_format: str  # "png", "jpeg" or "dicom" (XrayImage.SourceFormat values)
    bit_depth: int
    sha256: str  # of the uploaded bytes
    display_name: str  # sanitised client file name, display only
    dicom_metadata: dict[str, Any] = field(default_factory=dict)  # de-identified technical tags
    # What settings.KEEP_ORIGINAL_UPLOADS keeps (DICOM: the de-identified data set); else None.
    original_bytes: bytes | None = None
    original_extension: str = ""
    # Grayscale DICOM and 16-bit PNG: the exact values as a 16-bit grayscale PNG (no metadata), in
    # the 8-bit canonical's orientation, and how to read and window them (`depth.FullDepth.params`).
    depth_png_bytes: bytes | None = None
    depth_params: dict[str, Any] = field(default_factory=dict)


def validate_upload(
    data: bytes, filename: str, *, keep_original: bool | None = None
) -> CanonicalImage:
    """Validate one uploaded file and return its canonical form (see the module docstring)."""
    if keep_original is None:
        keep_original = settings.KEEP_ORIGINAL_UPLOADS
    try:
        return _validate(data, filename, keep_original=keep_original)
    except InvalidUploadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        # Safety net: the decoders map their own failures; anything else a hostile file provokes
        # is still a 400, never a 500. Only the exception type is logged (messages may quote PHI).
        logger.warning("unexpected validation failure", extra={"error_type": type(exc).__name__})
        raise InvalidUploadError(
            "The file could not be read as an image.", code="corrupt_image"
        ) from exc


def _validate(data: bytes, filename: str, *, keep_original: bool) -> CanonicalImage:
    size = len(data)
    if size == 0:
        raise InvalidUploadError("The file is empty.", code="empty_file")
    if size > settings.UPLOAD_MAX_FILE_BYTES:
        raise file_too_large_error()
    max_pixels = settings.UPLOAD_MAX_PIXELS
    # Pillow's own bomb guard at our cap, also for JPEG inside DICOM (decoded through Pillow).
    Image.MAX_IMAGE_PIXELS = max_pixels
    kind = sniff.sniff(data)
    bit_depth = 8
    metadata: dict[str, Any] = {}
    original: bytes | None = None
    full_depth: depth.FullDepth | None = None
    if kind == "png":
        bit_depth = _check_png_header(data, max_pixels)
        gray, full_depth = raster.decode_raster_full(data, "png", max_pixels=max_pixels)
        original = data if keep_original else None
    elif kind == "jpeg":
        bit_depth = _check_jpeg_header(data, max_pixels)
        gray = raster.decode_raster(data, "jpeg", max_pixels=max_pixels)
        original = data if keep_original else None
    elif kind in ("dicom", "dicom_raw"):
        result = dicom.decode_dicom(
            data,
            has_preamble=kind == "dicom",
            max_pixels=max_pixels,
            keep_original=keep_original,
        )
        gray, bit_depth, metadata = result.pixels, result.bit_depth, result.metadata
        full_depth = result.full_depth
        original = result.deidentified_bytes
    elif (filename or "").lower().endswith(_DICOM_EXTENSIONS):
        raise InvalidUploadError(
            "The file is named like DICOM but has no DICOM file header; export the image from "
            "the viewer or PACS as a DICOM file and upload that.",
            code="invalid_dicom",
        )
    else:
        what = "" if kind == "unknown" else f" ({kind})"
        raise InvalidUploadError(
            f"Unsupported file type{what}: upload PNG, JPEG or DICOM images.",
            code="unsupported_format",
        )
    height, width = gray.shape
    source_format = "dicom" if kind.startswith("dicom") else kind
    return CanonicalImage(
        png_bytes=raster.encode_png(gray),
        width=int(width),
        height=int(height),
        source_format=source_format,
        bit_depth=bit_depth,
        sha256=hashlib.sha256(data).hexdigest(),
        display_name=names.sanitize_display_name(filename),
        dicom_metadata=metadata,
        original_bytes=original,
        original_extension={"png": "png", "jpeg": "jpg", "dicom": "dcm"}[source_format],
        depth_png_bytes=depth.encode_png16(full_depth.samples) if full_depth else None,
        depth_params=full_depth.params() if full_depth else {},
    )


def file_too_large_error() -> InvalidUploadError:
    """The `file_too_large` (413) error, for callers that can refuse before reading a file."""
    return InvalidUploadError(
        f"The file is larger than the {_human_size(settings.UPLOAD_MAX_FILE_BYTES)} limit.",
        code="file_too_large",
        status_code=413,
    )


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.0f} MB"
    return f"{n / 1024:.0f} KB"


def _too_large(width: int, height: int, max_pixels: int) -> InvalidUploadError:
    return InvalidUploadError(
        f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
        code="image_too_large",
    )


def _check_png_header(data: bytes, max_pixels: int) -> int:
    try:
        width, height, bit_depth, _colour, animated = sniff.png_header(data)
    except sniff.HeaderError as exc:
        raise InvalidUploadError("The PNG header is malformed.", code="corrupt_image") from exc
    if width == 0 or height == 0:
        raise InvalidUploadError("The PNG header gives no image size.", code="corrupt_image")
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    if animated:
        raise InvalidUploadError(
            "Animated PNG is not accepted; upload a single frame.", code="multi_frame"
        )
    return bit_depth


def _check_jpeg_header(data: bytes, max_pixels: int) -> int:
    try:
        width, height, precision, marker = sniff.jpeg_header(data)
    except sniff.HeaderError as exc:
        raise InvalidUploadError("The JPEG header is malformed.", code="corrupt_image") from exc
    if width == 0 or height == 0:
        raise InvalidUploadError("The JPEG header gives no image size.", code="corrupt_image")
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    if not sniff.jpeg_marker_accepted(marker) or precision != 8:
        raise InvalidUploadError(
            "Only 8-bit baseline or progressive JPEG is accepted (not lossless, arithmetic or "
            "12-bit JPEG).",
            code="unsupported_format",
        )
    return precision
