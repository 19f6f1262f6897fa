"""DICOM: header checks before decoding, windowing to 8 bit, PS3.15 basic-profile de-identification
(in `deidentify`), refusal of declared burned-in annotation.

Nothing read from a data set is logged, and error messages never quote its values (they may be PHI).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom import config as pydicom_config
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import parse_basic_offsets
from pydicom.pixels import apply_color_lut
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import depth, sniff
from diagnosis.imaging.deidentify import deidentify, refuse_burned_in_annotation
from diagnosis.imaging.raster import scale_to_u8, to_u8
from diagnosis.imaging.strict import warnings_as_errors, warnings_ignored

# Real-world files often carry slightly malformed values; they are tolerated on reading (we only
# keep technical tags, re-validated below) instead of turning each into a warning.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

_PIXEL_DATA_TAG = tag_for_keyword("PixelData")

# Technical tags copied into XrayImage.dicom_metadata (after de-identification).
_METADATA_KEYWORDS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
)
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 ._:/\\^+-]")
# Compressed transfer syntaxes we decode, each with the one pydicom decoding plugin that does it
# (never a fallback to another plugin): pydicom's own RLE decoder, Pillow for the JPEG DCT processes
# (8 bit), GDCM (BSD) for JPEG Lossless (Process 14, SV1 or any predictor), JPEG-LS and JPEG 2000
# at up to 16 bits. Anything else compressed (HTJ2K, MPEG/HEVC video, deflated images...) is
# refused before decoding.
_DECODING_PLUGINS: dict[str, str] = {
    RLELossless: "pydicom",
    JPEGBaseline8Bit: "pillow",
    JPEGExtended12Bit: "pillow",
    JPEGLossless: "gdcm",
    JPEGLosslessSV1: "gdcm",
    JPEGLSLossless: "gdcm",
    JPEGLSNearLossless: "gdcm",
    JPEG2000Lossless: "gdcm",
    JPEG2000: "gdcm",
}
SUPPORTED_COMPRESSIONS = "RLE, JPEG baseline, JPEG lossless, JPEG-LS or JPEG 2000"
_JPEG_FAMILY = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
    }
)
_J2K_FAMILY = frozenset({JPEG2000Lossless, JPEG2000})
_JPEG_SOI = b"\xff\xd8"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_END_OF_IMAGE = b"\xff\xd9"  # JPEG and JPEG-LS EOI, JPEG 2000 EOC
# Start-of-frame markers: JPEG SOF0-SOF15 (not DHT, JPG, DAC) and JPEG-LS SOF55.
_SOF_MARKERS = (frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}
_MAX_CODESTREAM_PRECISION = 16
_MAX_J2K_TILES = 65535  # ISO/IEC 15444-1 tile indexes stop at 65534
_MONO = ("MONOCHROME1", "MONOCHROME2")
# Decoder warnings that describe data the standard tolerates, so they are not refusals: pixel data
# longer than the image needs (trailing padding, which pydicom drops).
_TOLERATED_WARNINGS = (r"(?s).*excess padding",)
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


@dataclass
class DicomResult:
    pixels: np.ndarray  # (H, W) uint8, windowed, MONOCHROME1 inverted
    bit_depth: int
    metadata: dict[str, Any] = field(default_factory=dict)
    deidentified_bytes: bytes | None = None
    full_depth: depth.FullDepth | None = None  # grayscale images only


def _invalid(message: str, code: str = "invalid_dicom") -> InvalidUploadError:
    return InvalidUploadError(message, code=code)


def decode_dicom(
    data: bytes, *, has_preamble: bool, max_pixels: int, keep_original: bool
) -> DicomResult:
    """Parse, check the header against the caps and the real pixel data, window to 8 bit and
    de-identify. `keep_original` also returns the de-identified data set (preamble zeroed)."""
    ds = _parse(data, has_preamble=has_preamble)
    refuse_burned_in_annotation(ds)
    header = _check_header(ds, max_pixels=max_pixels)
    pixels, full_depth = _decode_pixels(ds, header)
    deidentify(ds)
    metadata = _technical_metadata(ds)
    original = _serialise(ds) if keep_original else None
    return DicomResult(
        pixels=pixels,
        bit_depth=header["bits_stored"],
        metadata=metadata,
        deidentified_bytes=original,
        full_depth=full_depth,
    )


def _parse(data: bytes, *, has_preamble: bool) -> Dataset:
    try:
        with warnings_ignored("pydicom"):
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        if _PIXEL_DATA_TAG not in ds or "Rows" not in ds or "Columns" not in ds:
            raise _invalid(_no_image_message(ds))
        _ensure_transfer_syntax(ds)
    except InvalidUploadError:
        raise
    except Exception as exc:  # hostile input: any parser failure is a 400
        raise _invalid("The file is not a valid DICOM data set.") from exc
    return ds


def _no_image_message(ds: Dataset) -> str:
    """What the object is, when the standard names its kind (a report, a plan, a directory...)."""
    kind = ""
    with contextlib.suppress(Exception):
        uid = UID(str(ds.get("SOPClassUID", "") or getattr(ds, "MediaStorageSOPClassUID", "")))
        if uid and uid.name != str(uid):  # a registered SOP class: its name is not PHI
            kind = uid.name
    if not kind and "DirectoryRecordSequence" in ds:
        kind = "Media Storage Directory Storage"
    if kind:
        return f"The DICOM file holds no image (it is a '{kind}' object), so nothing to analyse."
    return "The DICOM file holds no image (no pixel data, rows and columns)."


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """A data set read without file meta gets the transfer syntax its encoding was read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRBigEndian


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise _invalid(f"The DICOM header lacks {keyword}.")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:  # the value itself is never quoted (PHI rule)
        raise _invalid(f"The DICOM header's {keyword} is not a whole number.") from exc


def _check_header(ds: Dataset, *, max_pixels: int) -> dict[str, Any]:
    try:
        rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
        frames = _int(ds, "NumberOfFrames", 1)
        samples = _int(ds, "SamplesPerPixel", 1)
        bits_allocated = _int(ds, "BitsAllocated")
        bits_stored = _int(ds, "BitsStored", bits_allocated)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
        photometric = photometric.strip().upper()
        transfer_syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        pixel_data = ds.PixelData
    except InvalidUploadError:
        raise
    except Exception as exc:  # hostile input
        raise _invalid("The DICOM image header is malformed.") from exc
    if rows <= 0 or cols <= 0:
        raise _invalid("The DICOM header gives no image size.")
    if rows * cols > max_pixels:
        raise InvalidUploadError(
            f"The image is {cols}x{rows} pixels; the limit is {max_pixels:,} pixels.",
            code="image_too_large",
        )
    if frames != 1:
        raise InvalidUploadError(
            "Multi-frame DICOM is not accepted; upload one frame per file.", code="multi_frame"
        )
    if bits_allocated == 1:
        raise _invalid(
            "The DICOM image is 1-bit (a mask or segmentation), not a radiograph.",
            code="unsupported_format",
        )
    if not 0 < bits_stored <= bits_allocated or bits_allocated not in (8, 16, 32):
        raise _invalid(
            f"The DICOM image's bit depth ({bits_stored} of {bits_allocated} bits) is not "
            "supported.",
            code="unsupported_format",
        )
    palette = (samples, photometric) == (1, "PALETTE COLOR") and bits_allocated in (8, 16)
    if (
        (samples, photometric in _MONO) != (1, True)
        and (samples, photometric in _COLOUR) != (3, True)
        and not palette
    ):
        raise _invalid(
            "Only grayscale, RGB/YBR and palette-colour DICOM images are accepted.",
            code="unsupported_format",
        )
    if not isinstance(pixel_data, bytes | bytearray):
        raise _invalid("The DICOM pixel data is unreadable.")
    if transfer_syntax and not transfer_syntax.is_transfer_syntax:
        raise _invalid("The DICOM transfer syntax is not one we know.", code="unsupported_format")
    compressed = bool(transfer_syntax) and transfer_syntax.is_compressed
    if compressed:
        if transfer_syntax not in _DECODING_PLUGINS:
            raise _unsupported_compression()
        _check_encapsulated(
            bytes(pixel_data),
            transfer_syntax,
            rows=rows,
            cols=cols,
            samples=samples,
            max_pixels=max_pixels,
        )
    elif len(pixel_data) < _expected_length(ds, rows * cols * samples * (bits_allocated // 8)):
        raise _invalid("The DICOM pixel data is shorter than its header says.")
    return {
        "rows": rows,
        "cols": cols,
        "samples": samples,
        "bits_stored": bits_stored,
        "photometric": photometric,
        "palette": palette,
        "compressed": compressed,
        "plugin": _DECODING_PLUGINS.get(transfer_syntax, "") if compressed else "",
    }


def _expected_length(ds: Dataset, naive: int) -> int:
    """Bytes of native pixel data the header implies, as pydicom computes them (chroma-subsampled
    YBR_FULL_422 holds 2 samples per pixel, not 3); the naive count if pydicom cannot tell."""
    try:
        return int(get_expected_length(ds, unit="bytes"))
    except Exception:  # a header pydicom cannot size is judged by the plain product  # noqa: BLE001
        return naive


def _unsupported_compression() -> InvalidUploadError:
    return _invalid(
        "This DICOM compression (transfer syntax) is not supported; send uncompressed, "
        f"{SUPPORTED_COMPRESSIONS} DICOM.",
        code="unsupported_format",
    )


def _fragments(pixel_data: bytes) -> tuple[list[int], list[bytes]]:
    """(basic offset table, fragments) of encapsulated pixel data; ValueError on any item whose
    length runs past the data (a truncated file) or that is not a fragment item."""
    buffer = io.BytesIO(pixel_data)
    offsets = parse_basic_offsets(buffer)
    fragments: list[bytes] = []
    while head := buffer.read(8):
        if len(head) != 8:
            raise ValueError("truncated item header")
        group, element, length = struct.unpack("<HHL", head)
        if (group, element) == (0xFFFE, 0xE0DD):  # sequence delimiter
            break
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise ValueError("not a fragment item")
        fragment = buffer.read(length)
        if len(fragment) != length:
            raise ValueError("truncated fragment")
        fragments.append(fragment)
    return offsets, fragments


def _check_encapsulated(
    pixel_data: bytes, transfer_syntax: UID, *, rows: int, cols: int, samples: int, max_pixels: int
) -> None:
    """Before any decoder runs: the encapsulation is whole, holds one frame, and (JPEG family, JPEG
    2000) that frame's own header agrees with the data set's and with the pixel cap, and the
    codestream ends with its end marker (a truncated stream is refused here, whatever a lenient
    decoder would make of it)."""
    try:
        offsets, fragments = _fragments(pixel_data)
    except Exception as exc:  # hostile input
        raise _invalid("The DICOM compressed pixel data is truncated or malformed.") from exc
    if not fragments or not fragments[0]:
        raise _invalid("The DICOM compressed pixel data is empty.")
    if transfer_syntax in _JPEG_FAMILY:
        starts = sum(f.startswith(_JPEG_SOI) for f in fragments)
    elif transfer_syntax in _J2K_FAMILY:
        starts = sum(f.startswith((_J2K_SOC_SIZ, _JP2_SIGNATURE)) for f in fragments)
    else:  # RLE: exactly one fragment per frame (PS3.5 A.4.2)
        starts = len(fragments)
    if len(offsets) > 1 or starts > 1:
        raise InvalidUploadError(
            "Multi-frame DICOM is not accepted; upload one frame per file.", code="multi_frame"
        )
    if transfer_syntax not in _JPEG_FAMILY | _J2K_FAMILY:
        return
    frame = b"".join(fragments)
    try:
        if transfer_syntax in _JPEG_FAMILY:
            width, height, components, precision = _jpeg_frame_header(frame)
        else:
            width, height, components, precision = _j2k_frame_header(frame)
    except (ValueError, struct.error) as exc:
        raise _invalid(
            "The compressed image inside the DICOM file has an invalid header (its size fields "
            "are missing or inconsistent)."
        ) from exc
    if width * height > max_pixels:
        raise InvalidUploadError(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
            code="image_too_large",
        )
    if (width, height, components) != (cols, rows, samples):
        raise _invalid("The DICOM pixel data does not match its header.")
    if not 0 < precision <= _MAX_CODESTREAM_PRECISION:
        raise _invalid(
            "The DICOM compressed image has an unsupported bit depth.", code="unsupported_format"
        )
    if transfer_syntax in (JPEGBaseline8Bit, JPEGExtended12Bit) and precision > 8:
        # Lossy JPEG at 12 bits (Process 4): valid DICOM, but no decoder here reads it.
        raise _invalid(
            f"This DICOM image is {precision}-bit lossy JPEG (JPEG Extended), which cannot be "
            f"read here; send it uncompressed or as {SUPPORTED_COMPRESSIONS} DICOM.",
            code="unsupported_format",
        )
    # Odd-length codestreams are padded to even length with one byte (PS3.5 A.4: NUL, though
    # encoders also pad with 0xFF, a JPEG fill byte).
    end = frame[:-1] if len(frame) % 2 == 0 and frame[-1:] in (b"\x00", b"\xff") else frame
    if not end.endswith(_END_OF_IMAGE):
        raise _invalid(
            "The DICOM compressed image is cut short (it does not end with its end marker)."
        )


def _jpeg_frame_header(frame: bytes) -> tuple[int, int, int, int]:
    """(width, height, components, precision) from the first JPEG / JPEG-LS start-of-frame."""
    if not frame.startswith(_JPEG_SOI):
        raise ValueError("no SOI")
    width, height, precision, components, _ = sniff.jpeg_frame_header(
        frame, sof_markers=_SOF_MARKERS
    )
    return width, height, components, precision


def _j2k_frame_header(frame: bytes) -> tuple[int, int, int, int]:
    """(width, height, components, precision of the first) from the JPEG 2000 SIZ segment (a
    bare codestream, or one inside a JP2 wrapper as some encoders write)."""
    start = 0 if frame.startswith(_J2K_SOC_SIZ) else -1
    if start < 0 and frame.startswith(_JP2_SIGNATURE):
        start = frame.find(_J2K_SOC_SIZ)
    if start < 0:
        raise ValueError("no SOC/SIZ")
    (lsiz, _rsiz, xsiz, ysiz, x_off, y_off, x_tile, y_tile, x_tile_off, y_tile_off, csiz) = (
        struct.unpack(">HHIIIIIIIIH", frame[start + 4 : start + 42])
    )
    if csiz == 0 or lsiz != 38 + 3 * csiz or len(frame) < start + 4 + lsiz:
        raise ValueError("SIZ length")
    if xsiz <= x_off or ysiz <= y_off or x_tile == 0 or y_tile == 0:
        raise ValueError("SIZ geometry")
    if x_tile_off > x_off or y_tile_off > y_off:
        raise ValueError("SIZ tile origin")
    tiles = -(-(xsiz - x_tile_off) // x_tile) * -(-(ysiz - y_tile_off) // y_tile)
    if tiles > _MAX_J2K_TILES:
        raise ValueError("too many tiles")
    precision = (frame[start + 42] & 0x7F) + 1
    return xsiz - x_off, ysiz - y_off, csiz, precision


def _decode_pixels(
    ds: Dataset, header: dict[str, Any]
) -> tuple[np.ndarray, depth.FullDepth | None]:
    """(8-bit canonical, full-depth values or None for colour images)."""
    plugin = header["plugin"]
    if plugin == "gdcm":
        _quiet_gdcm()
    try:
        with warnings_as_errors("pydicom", "PIL", "numpy", allowed=_TOLERATED_WARNINGS):
            # Only the plugin chosen for this transfer syntax (no silent fallback to another).
            ds.pixel_array_options(decoding_plugin=plugin)
            raw = ds.pixel_array
            if raw.shape[:2] != (header["rows"], header["cols"]):
                raise _invalid("The DICOM pixel data does not match its header.")
            if header["palette"]:  # indices into the data set's colour table (PS3.3 C.7.6.3)
                raw = apply_color_lut(raw, ds)
            if raw.ndim == 3:
                rgb = raw.astype(np.float32)
                gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                return (
                    scale_to_u8(gray) if raw.dtype != np.uint8 else np.rint(gray).astype(np.uint8)
                ), None
            full_depth = _full_depth(raw, ds, monochrome1=header["photometric"] == "MONOCHROME1")
            out = window_to_u8(_modality(raw, ds), ds)
    except InvalidUploadError:
        raise
    except Exception as exc:  # hostile input: classify, never quote (messages may hold values)
        raise _decode_error(exc, compressed=header["compressed"]) from exc
    if header["photometric"] == "MONOCHROME1":
        out = 255 - out
    return out, full_depth


def _decode_error(exc: Exception, *, compressed: bool) -> InvalidUploadError:
    """Map a pixel-decoding failure to a stable code (pydicom wraps plugin errors in RuntimeError)."""
    text = str(exc).lower()
    if "decompression bomb" in text or isinstance(exc, Image.DecompressionBombError):
        return InvalidUploadError("The DICOM image has too many pixels.", code="image_too_large")
    missing_plugin = isinstance(exc, NotImplementedError | ImportError) or (
        isinstance(exc, RuntimeError) and ("unavailable" in text or "missing dependencies" in text)
    )
    if compressed and missing_plugin:
        return _unsupported_compression()
    return _invalid("The DICOM pixel data cannot be decoded.")


@functools.cache
def _quiet_gdcm() -> None:
    """GDCM's own warnings and errors go to stderr; failures reach us as exceptions from pydicom's
    plugin, so that output is switched off (codec libraries inside it may still print)."""
    try:
        import gdcm
    except ImportError:  # pydicom then reports the plugin as unavailable: unsupported_format
        return
    gdcm.Trace.DebugOff()
    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()


def _modality(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT: stored values -> output units (e.g. rescale slope/intercept)."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = raw.astype(np.float32)
    if slope != 1.0:
        values *= slope
    if intercept:
        values += intercept
    return values


def _full_depth(raw: np.ndarray, ds: Dataset, *, monochrome1: bool) -> depth.FullDepth | None:
    """The Modality LUT's output (or the rescaled stored values) as a lossless full-depth image,
    with the file's first window. None when the values are not integers a linear map describes
    (a hostile or malformed LUT): the 8-bit canonical still stands."""
    window = depth.file_window(ds.get("WindowCenter"), ds.get("WindowWidth"))
    try:
        if "ModalityLUTSequence" in ds:
            from pydicom.pixels import apply_modality_lut

            values = np.asarray(apply_modality_lut(raw, ds))
            if values.dtype.kind == "f":
                if not np.all(np.isfinite(values)) or not np.array_equal(values, np.rint(values)):
                    return None
                values = values.astype(np.int64)
            return depth.pack(values, window=window, invert=monochrome1)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        return depth.pack(raw, slope=slope, intercept=intercept, window=window, invert=monochrome1)
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def _first(value: Any) -> float:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def window_to_u8(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """VOI: the first WindowCenter/WindowWidth pair (PS3.3 C.11.2.1.2), else a VOI LUT, else the
    real min..max. Returns uint8 0..255 (before any MONOCHROME1 inversion). Overwrites `values`
    (float32)."""
    centre = ds.get("WindowCenter")
    width = ds.get("WindowWidth")
    if centre not in (None, "") and width not in (None, ""):
        c, w = _first(centre), _first(width)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if np.isfinite(c) and np.isfinite(w) and w > 0:
            # In place on the float32 array from _modality (no full-size temporaries).
            if function == "SIGMOID":
                values -= c
                values *= -4.0 / w
                with np.errstate(over="ignore"):  # exp overflow -> inf -> 0 after 1/(1+inf)
                    np.exp(values, out=values)
                values += 1.0
                np.reciprocal(values, out=values)
                values *= 255.0
            elif function == "LINEAR_EXACT":
                values -= c
                values *= 1.0 / w
                values += 0.5
                values *= 255.0
            else:
                values -= c - 0.5
                values *= 1.0 / max(w - 1.0, 1.0)
                values += 0.5
                values *= 255.0
            return to_u8(values)
    if "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        return scale_to_u8(apply_voi_lut(values, ds), inplace=True)
    return scale_to_u8(values, inplace=True)


def _clean_text(value: Any) -> str:
    return _SAFE_TEXT.sub("", str(value)).strip()[:128]


def _json_value(value: Any) -> Any:
    if isinstance(value, int | float | str):
        number = value
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [_json_value(v) for v in list(value)[:8]]
    else:
        number = value
    try:
        if type(number).__name__ in ("DSfloat", "DSdecimal", "float"):
            return float(number)
        if type(number).__name__ in ("IS", "int"):
            return int(number)
    except (TypeError, ValueError):
        return None
    return _clean_text(number)


def _technical_metadata(ds: Dataset) -> dict[str, Any]:
    """Only technical tags, from the de-identified data set, as plain JSON values."""
    out: dict[str, Any] = {}
    for keyword in _METADATA_KEYWORDS:
        try:
            if keyword not in ds:
                continue
            value = _json_value(ds.get(keyword))
        except Exception:  # noqa: BLE001,S112  (a malformed technical tag is simply omitted)
            continue
        if value not in (None, "", []):
            out[keyword] = value
    ts = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if ts:
        out["TransferSyntaxUID"] = _clean_text(ts)
    return out


def _serialise(ds: Dataset) -> bytes:
    """The de-identified data set as a DICOM file with a zeroed preamble."""
    ds.preamble = b"\x00" * 128
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    buf = io.BytesIO()
    try:
        with warnings_ignored("pydicom"):
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    except Exception:  # noqa: BLE001  (missing SOP UIDs: write without the strict file meta)
        buf = io.BytesIO()
        with warnings_ignored("pydicom"):
            pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()
