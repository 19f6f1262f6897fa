"""Hostile bytes: validate_upload either succeeds or raises InvalidUploadError, nothing else."""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import CanonicalImage, validate_upload
from diagnosis.tests.imaging import builders


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    return (
        builders.palette_png(),
        builders.png_16bit_ramp(),
        builders.progressive_jpeg(),
        builders.exif_rotated_jpeg(),
        builders.dicom_12bit_windowed(),
        builders.dicom_with_phi(),
        builders.dicom_without_preamble(),
        builders.dicom_jpeg_lossless_12bit(),
        builders.dicom_jpeg_ls_12bit(),
        builders.dicom_jpeg2000_12bit(),
    )


@functools.cache
def _codestream_seeds() -> tuple[tuple[bytes, bytes], ...]:
    """(file, its codestream) for the syntaxes GDCM decodes."""
    files = (
        builders.dicom_jpeg_lossless_12bit(),
        builders.dicom_jpeg_ls_12bit(),
        builders.dicom_jpeg2000_12bit(),
    )
    return tuple((data, builders.compressed_fragment(data)) for data in files)


def _check(data: bytes) -> None:
    error: InvalidUploadError | None = None
    try:
        result = validate_upload(data, "fuzz.bin", keep_original=True)
    except InvalidUploadError as exc:
        error = exc
    if error is not None:
        assert error.code
        assert error.status_code in (400, 413)
    else:
        assert isinstance(result, CanonicalImage)
        assert result.png_bytes.startswith(b"\x89PNG")


# Random in development (to keep finding new cases); reproducible under CI.
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() in {"1", "true", "yes"},
)


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    _check(data)


@st.composite
def mutated(draw):
    seed = bytearray(draw(st.sampled_from(_seeds())))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(seed) - 1))
        seed[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(seed)))
    return bytes(seed[:cut]) + draw(st.binary(max_size=64))


@settings(FUZZ, max_examples=400)
@given(mutated())
def test_mutated_valid_files(data):
    _check(data)


@st.composite
def mutated_codestream(draw):
    """Byte flips inside a compressed frame, its header and end marker left alone, so the
    damage reaches the decoder (GDCM) instead of the checks in front of it."""
    data, stream = draw(st.sampled_from(_codestream_seeds()))
    body = bytearray(stream)
    end = len(body.rstrip(b"\x00")) - 2
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(min(48, end - 1), end - 1))
        body[position] = draw(st.integers(0, 255))
    return builders.with_fragments(data, [bytes(body)])


@settings(FUZZ, max_examples=200)
@given(mutated_codestream())
def test_mutated_codestreams(data):
    _check(data)


def test_unknown_transfer_syntax_is_refused():
    """Found by the fuzzer: a corrupted Transfer Syntax UID once escaped as ValueError."""
    data = builders.dicom_12bit_windowed()
    mutated_data = data.replace(b"1.2.840.10008.1.2.1", b"1.2.840.10008.5.1.4", 1)
    assert mutated_data != data
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(mutated_data, "x.dcm")
    assert info.value.code == "unsupported_format"
