"""Compressed DICOM as PACS exports send it: JPEG Lossless (Process 14, SV1), JPEG-LS and JPEG 2000,
encoded here with GDCM from uncompressed sources and checked against them; truncated, multi-frame,
mismatched and unsupported streams are refused before (or instead of) decoding."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import CanonicalImage, validate_upload
from diagnosis.tests.imaging import builders

LOSSLESS = (JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEG2000Lossless)
# Syntaxes that allow loss; GDCM's defaults still encode losslessly, but only closeness is asserted.
LOSSY = (JPEGLSNearLossless, JPEG2000)
GDCM_SYNTAXES = (*LOSSLESS, *LOSSY)


def _u16_rescaled() -> bytes:
    """16 bits stored, rescale slope/intercept and a window in output units."""
    ds = builders.dicom_dataset(builders.noisy_ramp(40, 56, 65535, seed=1), window=(31000, 90000))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    return builders.dicom_bytes(ds)


def _u12_windowed() -> bytes:
    values = builders.noisy_ramp(32, 48, 4095, seed=2)
    return builders.dicom_bytes(builders.dicom_dataset(values, bits_stored=12, window=(2048, 1024)))


def _u8_monochrome2() -> bytes:
    values = builders.noisy_ramp(24, 64, 255, seed=3).astype(np.uint8)
    return builders.dicom_bytes(builders.dicom_dataset(values))


def _u12_monochrome1_rescaled() -> bytes:
    ds = builders.dicom_dataset(
        builders.noisy_ramp(32, 40, 4095, seed=4),
        bits_stored=12,
        photometric="MONOCHROME1",
        window=(500, 1800),
    )
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -512
    return builders.dicom_bytes(ds)


def _i16_signed_ct() -> bytes:
    """Signed stored values, intercept -1024, bone window (CT-style)."""
    stored = (builders.noisy_ramp(16, 64, 4000, seed=5).astype(np.int32) - 1000).astype(np.int16)
    ds = builders.dicom_dataset(stored.view(np.uint16), window=(300, 1500))
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    return builders.dicom_bytes(ds)


SOURCES: dict[str, Callable[[], bytes]] = {
    "u16-rescale-window": _u16_rescaled,
    "u12-window": _u12_windowed,
    "u8-monochrome2": _u8_monochrome2,
    "u12-monochrome1-rescale": _u12_monochrome1_rescaled,
    "i16-signed-ct": _i16_signed_ct,
}


def _syntax_id(uid: str) -> str:
    return pydicom.uid.UID(uid).keyword


def _canonical_pair(source: str, syntax: str) -> tuple[CanonicalImage, CanonicalImage]:
    raw = SOURCES[source]()
    compressed = builders.gdcm_compress(raw, syntax)
    return validate_upload(raw, "raw.dcm"), validate_upload(compressed, "packed.dcm")


@pytest.mark.parametrize("syntax", GDCM_SYNTAXES, ids=_syntax_id)
@pytest.mark.parametrize("source", SOURCES)
def test_compressed_dicom_decodes_like_its_uncompressed_source(source, syntax):
    plain, packed = _canonical_pair(source, syntax)
    expected = builders.decode_canonical(plain.png_bytes)
    actual = builders.decode_canonical(packed.png_bytes)
    assert actual.shape == expected.shape
    if syntax in LOSSLESS:
        assert np.array_equal(actual, expected)
    else:
        assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 2
    assert len(np.unique(expected)) > 16  # the comparison is not between two flat images
    assert packed.source_format == "dicom"
    assert packed.bit_depth == plain.bit_depth
    assert packed.dicom_metadata.pop("TransferSyntaxUID") == syntax
    plain.dicom_metadata.pop("TransferSyntaxUID")
    assert packed.dicom_metadata == plain.dicom_metadata


def test_monochrome1_stays_inverted_after_compression():
    _, packed = _canonical_pair("u12-monochrome1-rescale", JPEGLSLossless)
    row = builders.decode_canonical(packed.png_bytes).astype(int).mean(axis=0)
    assert row[0] > 200 > 50 > row[-1]  # low stored values are bright in MONOCHROME1


@pytest.mark.parametrize("syntax", LOSSLESS, ids=_syntax_id)
def test_compressed_dicom_is_deidentified(syntax):
    ds = builders.dicom_dataset(builders.noisy_ramp(16, 32, 4095), bits_stored=12, phi=True)
    compressed = builders.gdcm_compress(builders.dicom_bytes(ds), syntax)
    assert b"MRN-0042-SECRET" in compressed  # the input really carries PHI
    canonical = validate_upload(compressed, "phi.dcm", keep_original=True)
    text = json.dumps(canonical.dicom_metadata)
    original = canonical.original_bytes
    assert original is not None
    for secret in ("Doe^Jane", "MRN-0042", "19700101", "Secret Street", "St Example", "ACC-SECRET"):
        assert secret not in text
        assert secret.encode() not in original, secret
    for secret in (b"OTHER-SECRET-ID", b"REQ-SECRET", b"private-secret-value", b"ACME SECRET"):
        assert secret not in original, secret
    kept = pydicom.dcmread(io.BytesIO(original))
    assert kept.file_meta.TransferSyntaxUID == syntax  # the kept original stays compressed
    assert kept.PatientIdentityRemoved == "YES"
    assert kept.PatientName == ""
    assert "PatientAddress" not in kept
    assert np.array_equal(kept.pixel_array, ds.pixel_array)  # and still decodes, unchanged


# The three GDCM-decoded families, each as a 12-bit image.
EACH_12BIT_CODESTREAM = pytest.mark.parametrize(
    "build",
    [
        builders.dicom_jpeg_lossless_12bit,
        builders.dicom_jpeg_ls_12bit,
        builders.dicom_jpeg2000_12bit,
    ],
    ids=["jpeg-lossless", "jpeg-ls", "jpeg2000"],
)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
@EACH_12BIT_CODESTREAM
def test_truncated_codestream_is_refused(build, fraction):
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.truncated_codestream(build, fraction)(), "x.dcm")
    assert info.value.code == "invalid_dicom"


@pytest.mark.parametrize("build", [builders.dicom_jpeg_ls_12bit, builders.dicom_jpeg2000_12bit])
def test_codestream_without_its_end_marker_is_refused(build):
    data = build()
    fragment = builders.compressed_fragment(data).rstrip(b"\x00")
    assert fragment.endswith(b"\xff\xd9")
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.with_fragments(data, [fragment[:-2]]), "x.dcm")
    assert info.value.code == "invalid_dicom"


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.98])
def test_truncated_compressed_file_is_refused(keep):
    data = builders.dicom_jpeg_ls_12bit()
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(data[: int(len(data) * keep)], "x.dcm")
    assert info.value.code == "invalid_dicom"


@EACH_12BIT_CODESTREAM
def test_two_codestreams_in_one_frame_are_multi_frame(build):
    data = build()
    fragment = builders.compressed_fragment(data)
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.with_fragments(data, [fragment, fragment]), "x.dcm")
    assert info.value.code == "multi_frame"


def test_split_codestream_is_one_frame():
    """One frame may span fragments; only a fresh start-of-image begins another frame."""
    data = builders.dicom_jpeg_ls_12bit()
    fragment = builders.compressed_fragment(data)
    half = len(fragment) // 2 & ~1
    split = validate_upload(builders.with_fragments(data, [fragment[:half], fragment[half:]]), "x")
    whole = validate_upload(data, "x.dcm")
    assert split.png_bytes == whole.png_bytes


def test_basic_offset_table_with_two_frames_is_multi_frame():
    data = builders.dicom_jpeg2000_12bit()
    fragment = builders.compressed_fragment(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = pydicom.encaps.encapsulate([fragment, fragment], has_bot=True)
    ds.NumberOfFrames = 1
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert info.value.code == "multi_frame"


def test_header_number_of_frames_is_checked_for_compressed_data():
    ds = pydicom.dcmread(io.BytesIO(builders.dicom_jpeg_ls_12bit()))
    ds.NumberOfFrames = 2
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert info.value.code == "multi_frame"


def _relabel(data: bytes, *, rows: int, cols: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = rows, cols
    return builders.dicom_bytes(ds)


@EACH_12BIT_CODESTREAM
def test_codestream_larger_than_the_cap_is_refused_before_decoding(build, settings):
    settings.UPLOAD_MAX_PIXELS = 1000  # the codestream is 48x32 = 1536 pixels
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(_relabel(build(), rows=8, cols=8), "x.dcm")
    assert info.value.code == "image_too_large"


@EACH_12BIT_CODESTREAM
@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (64, 96)])
def test_codestream_not_matching_the_header_is_refused(build, rows, cols):
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(_relabel(build(), rows=rows, cols=cols), "x.dcm")
    assert info.value.code == "invalid_dicom"


def test_jpeg_ls_frame_header_claiming_a_huge_image_is_refused():
    data = builders.dicom_jpeg_ls_12bit()
    fragment = bytearray(builders.compressed_fragment(data))
    sof = fragment.index(b"\xff\xf7")
    fragment[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.with_fragments(data, [bytes(fragment)]), "x.dcm")
    assert info.value.code == "image_too_large"


def test_garbage_in_a_supported_syntax_is_corrupt_not_unsupported():
    data = builders.with_fragments(
        builders.dicom_jpeg_ls_12bit(), [b"\xff\xd8 not jpeg-ls\xff\xd9"]
    )
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(data, "x.dcm")
    assert info.value.code == "invalid_dicom"


@pytest.mark.parametrize("syntax", [HTJ2KLossless, MPEG2MPML], ids=_syntax_id)
def test_unsupported_compression_gets_the_clear_refusal(syntax):
    ds = pydicom.dcmread(io.BytesIO(builders.dicom_htj2k()))
    ds.file_meta.TransferSyntaxUID = syntax
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert info.value.code == "unsupported_format"
    for name in ("RLE", "JPEG baseline", "JPEG lossless", "JPEG-LS", "JPEG 2000"):
        assert name in info.value.message


def test_missing_gdcm_is_a_clear_refusal(monkeypatch):
    """A deployment without the GDCM wheel refuses these syntaxes cleanly (no fallback)."""
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    available = dict(JPEGLSLosslessDecoder._available)
    available.pop("gdcm")
    monkeypatch.setattr(JPEGLSLosslessDecoder, "_available", available)
    monkeypatch.setattr(
        JPEGLSLosslessDecoder,
        "_unavailable",
        {**JPEGLSLosslessDecoder._unavailable, "gdcm": ("gdcm>=3.0.10",)},
    )
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_jpeg_ls_12bit(), "x.dcm")
    assert info.value.code == "unsupported_format"


def test_rle_still_uses_pydicoms_decoder():
    values = builders.noisy_ramp(16, 32, 4095)
    ds = builders.dicom_dataset(values, bits_stored=12, window=(2048, 1024))
    plain = validate_upload(builders.dicom_bytes(ds), "x.dcm")
    ds.compress(RLELossless)
    packed = validate_upload(builders.dicom_bytes(ds), "rle.dcm")
    assert packed.png_bytes == plain.png_bytes
