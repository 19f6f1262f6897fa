"""Test inputs generated in code: hostile files (RELIABILITY.md §2) and awkward-but-valid ones.

Shared by the page and API upload tests: `BAD_INPUTS` lists (id, filename, content_type, builder,
expected status, expected code).
"""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    generate_uid,
)

SAMPLES_DIR = Path(__file__).resolve().parents[3] / "samples"


# --- small helpers ---------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def raw_png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def zero_rows_idat(width: int, height: int, *, level: int = 9) -> bytes:
    """Compressed scanlines of zeros (filter byte 0), streamed so memory stays small."""
    comp = zlib.compressobj(level)
    row = b"\x00" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return b"".join(parts)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """Asymmetric uint8 pattern: bright top-left corner block, horizontal ramp."""
    arr = np.tile(np.linspace(0, 200, width, dtype=np.uint8), (height, 1))
    arr[: height // 4, : width // 4] = 255
    return arr


def sample_jpeg() -> bytes:
    return sorted(SAMPLES_DIR.glob("*.jpg"))[0].read_bytes()


# --- bad inputs ------------------------------------------------------------------------------------


def empty() -> bytes:
    return b""


def truncated_jpeg(fraction: float) -> Callable[[], bytes]:
    def build() -> bytes:
        data = sample_jpeg()
        return data[: int(len(data) * fraction)]

    return build


@functools.cache
def png_pixel_bomb() -> bytes:
    """20000 x 20000 zero rows: ~400 KB on disk, 400 Mpx decoded."""
    return raw_png(20000, 20000, zero_rows_idat(20000, 20000))


@functools.cache
def png_100_mpx() -> bytes:
    return raw_png(10000, 10000, zero_rows_idat(10000, 10000))


def png_header_claims_50000() -> bytes:
    return raw_png(50000, 50000, zlib.compress(b"\x00" * 64))


def multi_frame_tiff() -> bytes:
    frames = [Image.fromarray(gradient()), Image.fromarray(255 - gradient())]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def animated_gif() -> bytes:
    frames = [
        Image.fromarray(gradient()).convert("P"),
        Image.fromarray(255 - gradient()).convert("P"),
    ]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def apng() -> bytes:
    frames = [Image.fromarray(gradient()), Image.fromarray(255 - gradient())]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def dicom_dataset(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    phi: bool = False,
) -> Dataset:
    """A minimal DX image data set around `pixels` (uint8 or uint16, 2-D)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "HAND"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.1, 0.1]
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if phi:
        ds.PatientName = "Doe^Jane<script>alert(1)</script>"
        ds.PatientID = "MRN-0042-SECRET"
        ds.PatientBirthDate = "19700101"
        ds.PatientAddress = "1 Secret Street, Springfield"
        ds.InstitutionName = "St Example Hospital"
        ds.ReferringPhysicianName = "Who^Doctor"
        ds.StudyDate = "20240102"
        ds.AccessionNumber = "ACC-SECRET-1"
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        ds.OtherPatientIDsSequence[0].PatientID = "OTHER-SECRET-ID"
        ds.RequestAttributesSequence = Sequence([Dataset()])
        ds.RequestAttributesSequence[0].RequestedProcedureID = "REQ-SECRET"
        block = ds.private_block(0x0011, "ACME SECRET", create=True)
        block.add_new(0x01, "LO", "private-secret-value")
    return ds


def dicom_bytes(ds: Dataset, *, preamble: bytes = b"\x00" * 128) -> bytes:
    ds.preamble = preamble
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_huge_header() -> bytes:
    """Header claiming 65535 x 65535 x 1000 frames with 64 bytes of pixel data."""
    ds = dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000
    ds.PixelData = b"\x00" * 64
    return dicom_bytes(ds)


def dicom_short_pixel_data() -> bytes:
    """A plausible 2000 x 2000 header with 64 bytes of pixel data."""
    ds = dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.Rows = ds.Columns = 2000
    ds.PixelData = b"\x00" * 64
    return dicom_bytes(ds)


def dicom_multi_frame() -> bytes:
    ds = dicom_dataset(np.zeros((16, 16), np.uint8))
    ds.NumberOfFrames = 2
    ds.PixelData = b"\x00" * (16 * 16 * 2)
    return dicom_bytes(ds)


def gdcm_compress(data: bytes, transfer_syntax: str) -> bytes:
    """Re-encode an uncompressed DICOM file's pixel data with GDCM (as a PACS export would); the
    rest of the header is kept exactly as it was (GDCM's writer would add attributes of its own)."""
    import gdcm

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
        source.write_bytes(data)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(source))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(
            gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(transfer_syntax)))
        )
        change.SetInput(reader.GetImage())
        assert change.Change(), transfer_syntax
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        encoded = pydicom.dcmread(target)
    assert str(encoded.file_meta.TransferSyntaxUID) == transfer_syntax
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds, preamble=ds.preamble or b"\x00" * 128)


def noisy_ramp(rows: int, cols: int, top: int, *, seed: int = 0) -> np.ndarray:
    """A horizontal ramp 0..top with noise (so the codecs have real work), as uint16."""
    ramp = np.tile(np.linspace(0, top, cols), (rows, 1))
    noise = np.random.default_rng(seed).integers(-top // 64 - 1, top // 64 + 2, (rows, cols))
    return np.clip(ramp + noise, 0, top).astype(np.uint16)


def compressed_fragment(data: bytes) -> bytes:
    """The one frame's codestream of an encapsulated single-frame DICOM file."""
    return b"".join(generate_fragments(_after_offset_table(pydicom.dcmread(io.BytesIO(data)))))


def _after_offset_table(ds: Dataset) -> bytes:
    pixel_data = ds.PixelData
    (length,) = struct.unpack("<L", pixel_data[4:8])
    return pixel_data[8 + length :]


def with_fragments(data: bytes, fragments: list[bytes], *, offsets: bool = False) -> bytes:
    """`data` (an encapsulated DICOM file) with its pixel data replaced by `fragments`."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = encapsulate(fragments, has_bot=offsets)
    return dicom_bytes(ds)


def _compressed_12bit(transfer_syntax: str) -> bytes:
    values = noisy_ramp(32, 48, 4095)
    return gdcm_compress(
        dicom_bytes(dicom_dataset(values, bits_stored=12, window=(2048, 3000))), transfer_syntax
    )


@functools.cache
def dicom_jpeg_lossless_12bit() -> bytes:
    return _compressed_12bit(JPEGLosslessSV1)


@functools.cache
def dicom_jpeg_ls_12bit() -> bytes:
    return _compressed_12bit(JPEGLSLossless)


@functools.cache
def dicom_jpeg2000_12bit() -> bytes:
    return _compressed_12bit(JPEG2000Lossless)


def truncated_codestream(build: Callable[[], bytes], fraction: float) -> Callable[[], bytes]:
    """A well-formed encapsulation around the first `fraction` of the codestream."""

    def cut() -> bytes:
        data = build()
        fragment = compressed_fragment(data)
        return with_fragments(data, [fragment[: int(len(fragment) * fraction)]])

    return cut


def dicom_htj2k() -> bytes:
    """A transfer syntax we do not decode (High-Throughput JPEG 2000) around a dummy stream."""
    ds = dicom_dataset(gradient())
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    return dicom_bytes(ds)


def not_dicom() -> bytes:
    return b"\x00" * 128 + b"NOPE" + bytes(range(256)) * 4


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
    )


def html_page() -> bytes:
    return b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def elf_binary() -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200


def pe_binary() -> bytes:
    return b"MZ\x90\x00" + b"\x00" * 56 + b"PE\x00\x00" + b"\x00" * 200


def oversize_png() -> bytes:
    """Bigger than the test's UPLOAD_MAX_FILE_BYTES (see OVERSIZE_LIMIT)."""
    noise = np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)
    return encode(Image.fromarray(noise), "PNG", compress_level=0)


OVERSIZE_LIMIT = 100_000  # bytes; tests set settings.UPLOAD_MAX_FILE_BYTES to this


@dataclass(frozen=True)
class BadInput:
    id: str
    filename: str
    content_type: str
    build: Callable[[], bytes]
    status: int
    code: str


BAD_INPUTS: tuple[BadInput, ...] = (
    BadInput("empty", "x.png", "image/png", empty, 400, "empty_file"),
    BadInput("truncated-jpeg-30", "x.jpg", "image/jpeg", truncated_jpeg(0.3), 400, "corrupt_image"),
    BadInput("truncated-jpeg-60", "x.jpg", "image/jpeg", truncated_jpeg(0.6), 400, "corrupt_image"),
    BadInput("truncated-jpeg-90", "x.jpg", "image/jpeg", truncated_jpeg(0.9), 400, "corrupt_image"),
    BadInput("png-pixel-bomb", "x.png", "image/png", png_pixel_bomb, 400, "image_too_large"),
    BadInput("png-100-mpx", "x.png", "image/png", png_100_mpx, 400, "image_too_large"),
    BadInput(
        "png-header-50000", "x.png", "image/png", png_header_claims_50000, 400, "image_too_large"
    ),
    BadInput(
        "multi-frame-tiff", "x.tif", "image/tiff", multi_frame_tiff, 400, "unsupported_format"
    ),
    BadInput("animated-gif", "x.gif", "image/gif", animated_gif, 400, "unsupported_format"),
    BadInput("apng", "x.png", "image/png", apng, 400, "multi_frame"),
    BadInput(
        "dicom-65535x65535x1000",
        "x.dcm",
        "application/dicom",
        dicom_huge_header,
        400,
        "image_too_large",
    ),
    BadInput(
        "dicom-short-pixel-data",
        "x.dcm",
        "application/dicom",
        dicom_short_pixel_data,
        400,
        "invalid_dicom",
    ),
    BadInput(
        "dicom-multi-frame", "x.dcm", "application/dicom", dicom_multi_frame, 400, "multi_frame"
    ),
    BadInput(
        "dicom-jpeg-lossless-truncated",
        "x.dcm",
        "application/dicom",
        truncated_codestream(dicom_jpeg_lossless_12bit, 0.6),
        400,
        "invalid_dicom",
    ),
    BadInput(
        "dicom-jpeg-ls-truncated",
        "x.dcm",
        "application/dicom",
        truncated_codestream(dicom_jpeg_ls_12bit, 0.6),
        400,
        "invalid_dicom",
    ),
    BadInput(
        "dicom-jpeg2000-truncated",
        "x.dcm",
        "application/dicom",
        truncated_codestream(dicom_jpeg2000_12bit, 0.6),
        400,
        "invalid_dicom",
    ),
    BadInput(
        "dicom-htj2k-unsupported",
        "x.dcm",
        "application/dicom",
        dicom_htj2k,
        400,
        "unsupported_format",
    ),
    BadInput("not-dicom-named-dcm", "x.dcm", "application/dicom", not_dicom, 400, "invalid_dicom"),
    BadInput(
        "svg-with-script", "x.svg", "image/svg+xml", svg_with_script, 400, "unsupported_format"
    ),
    BadInput("svg-named-png", "x.png", "image/png", svg_with_script, 400, "unsupported_format"),
    BadInput("html-named-png", "x.png", "image/png", html_page, 400, "unsupported_format"),
    BadInput("elf-named-png", "x.png", "image/png", elf_binary, 400, "unsupported_format"),
    BadInput("pe-named-png", "x.png", "image/png", pe_binary, 400, "unsupported_format"),
    BadInput("over-size-body", "x.png", "image/png", oversize_png, 413, "file_too_large"),
)


# --- accepted inputs -------------------------------------------------------------------------------


def png_16bit_ramp() -> bytes:
    """16-bit grayscale PNG whose values span 0..65535 (a naive cast to 8 bit would wrap)."""
    ramp = np.linspace(0, 65535, 64, dtype=np.float64).astype(np.uint16)
    return encode(Image.fromarray(np.tile(ramp, (8, 1))), "PNG")


def dicom_12bit_windowed() -> bytes:
    """12-bit data (0..4095) with window centre 2048, width 1024 (so 1536..2560 spans 0..255)."""
    values = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    return dicom_bytes(dicom_dataset(values, bits_stored=12, window=(2048, 1024)))


def dicom_monochrome1() -> bytes:
    values = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    return dicom_bytes(dicom_dataset(values, photometric="MONOCHROME1"))


def dicom_with_phi() -> bytes:
    values = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    return dicom_bytes(dicom_dataset(values, phi=True), preamble=b"PHI-IN-PREAMBLE " * 8)


def dicom_without_preamble() -> bytes:
    """Raw data set (explicit VR little endian), no 128-byte preamble and no file meta."""
    ds = dicom_dataset(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1)))
    del ds.file_meta
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    rgb = np.stack([gradient()] * 3, axis=-1)
    return encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)


def palette_png() -> bytes:
    return encode(Image.fromarray(gradient()).convert("P"), "PNG")


def rgba_png() -> bytes:
    rgba = np.dstack([gradient()] * 3 + [np.full_like(gradient(), 255)])
    rgba[-4:, -4:, 3] = 0  # a transparent corner composites to black
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def progressive_jpeg() -> bytes:
    return encode(Image.fromarray(gradient()), "JPEG", quality=95, progressive=True)


def exif_rotated_jpeg() -> bytes:
    """Stored 64x48 with the bright block top-left; EXIF orientation 6 (rotate 90° clockwise to
    view), so the upright image is 48x64 with the bright block top-right."""
    image = Image.fromarray(gradient())
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def png_with_html_appended() -> bytes:
    return encode(Image.fromarray(gradient()), "PNG") + b"<html><script>alert(1)</script></html>"


def decode_canonical(png_bytes: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png_bytes)) as im:
        assert im.format == "PNG"
        assert im.mode == "L"
        return np.asarray(im)


def files_under(root: Path) -> list[Path]:
    """Every regular file below `root` (MEDIA_ROOT), for 'nothing was stored' assertions."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- accepted inputs with the property each must keep -----------------------------------------------


def _check_16bit(arr: np.ndarray, canonical: object) -> None:
    row = arr[0].astype(int)
    assert row[0] == 0
    assert row[-1] == 255
    assert np.all(np.diff(row) >= 0), "pixel ordering must survive (no wrap-around)"
    assert len(np.unique(row)) > 32
    assert canonical.bit_depth == 16


def _check_dicom_window(arr: np.ndarray, canonical: object) -> None:
    values = np.linspace(0, 4095, 64)
    expected = np.clip(((values - 2047.5) / 1023 + 0.5) * 255, 0, 255)
    assert np.abs(arr[0].astype(float) - expected).max() <= 1.0
    assert arr[0, 0] == 0
    assert arr[0, -1] == 255
    assert canonical.bit_depth == 12
    assert canonical.dicom_metadata["BitsStored"] == 12
    assert canonical.dicom_metadata["PatientIdentityRemoved"] == "YES"


def _check_monochrome1(arr: np.ndarray, canonical: object) -> None:
    assert arr[0, 0] == 255
    assert np.all(np.diff(arr[0].astype(int)) <= 0), "MONOCHROME1 is inverted"


def _check_u8_ramp(arr: np.ndarray, canonical: object) -> None:
    row = arr[0].astype(int)  # no window in the header: the real min..max spans 0..255
    assert (row[0], row[-1]) == (0, 255)
    assert np.all(np.diff(row) > 0)
    assert canonical.bit_depth == 8


def _check_dicom_phi(arr: np.ndarray, canonical: object) -> None:
    import json

    text = json.dumps(canonical.dicom_metadata)
    for secret in ("Doe", "Jane", "<script>", "MRN-0042", "19700101", "Secret", "St Example"):
        assert secret not in text
    assert "PatientName" not in canonical.dicom_metadata
    assert canonical.dicom_metadata["PatientIdentityRemoved"] == "YES"
    assert canonical.dicom_metadata["Modality"] == "DX"


def _close_to_gradient(tolerance: float) -> Callable[[np.ndarray, object], None]:
    def check(arr: np.ndarray, canonical: object) -> None:
        assert arr.shape == (48, 64)
        assert np.abs(arr.astype(int) - gradient().astype(int)).max() <= tolerance

    return check


def _check_rgba(arr: np.ndarray, canonical: object) -> None:
    expected = gradient().copy()
    expected[-4:, -4:] = 0  # transparent pixels composite over black
    assert np.array_equal(arr, expected)


def _check_exif_rotated(arr: np.ndarray, canonical: object) -> None:
    assert arr.shape == (64, 48), "EXIF orientation 6 turns a 64x48 image into 48x64"
    assert (canonical.width, canonical.height) == (48, 64)
    assert arr[:8, -8:].mean() > 240, "the bright block must be top-right once upright"
    assert arr[:8, :8].mean() < 100


def _check_html_dropped(arr: np.ndarray, canonical: object) -> None:
    assert np.array_equal(arr, gradient())
    assert b"<html" not in canonical.png_bytes
    assert b"<script" not in canonical.png_bytes
    assert canonical.png_bytes.endswith(b"IEND\xaeB`\x82")


@dataclass(frozen=True)
class GoodInput:
    id: str
    filename: str
    content_type: str
    build: Callable[[], bytes]
    source_format: str
    check: Callable[[np.ndarray, object], None]


GOOD_INPUTS: tuple[GoodInput, ...] = (
    GoodInput("png-16bit", "ramp16.png", "image/png", png_16bit_ramp, "png", _check_16bit),
    GoodInput(
        "dicom-12bit-window",
        "ct.dcm",
        "application/dicom",
        dicom_12bit_windowed,
        "dicom",
        _check_dicom_window,
    ),
    GoodInput(
        "dicom-monochrome1",
        "m1.dcm",
        "application/dicom",
        dicom_monochrome1,
        "dicom",
        _check_monochrome1,
    ),
    GoodInput(
        "dicom-phi", "phi.dcm", "application/dicom", dicom_with_phi, "dicom", _check_dicom_phi
    ),
    GoodInput(
        "dicom-no-preamble",
        "raw.dcm",
        "application/octet-stream",
        dicom_without_preamble,
        "dicom",
        _check_u8_ramp,
    ),
    GoodInput("cmyk-jpeg", "cmyk.jpg", "image/jpeg", cmyk_jpeg, "jpeg", _close_to_gradient(12)),
    GoodInput("palette-png", "pal.png", "image/png", palette_png, "png", _close_to_gradient(0)),
    GoodInput("rgba-png", "rgba.png", "image/png", rgba_png, "png", _check_rgba),
    GoodInput(
        "progressive-jpeg",
        "prog.jpg",
        "image/jpeg",
        progressive_jpeg,
        "jpeg",
        _close_to_gradient(8),
    ),
    GoodInput(
        "exif-rotated-jpeg", "rot.jpg", "image/jpeg", exif_rotated_jpeg, "jpeg", _check_exif_rotated
    ),
    GoodInput(
        "png-with-html-appended",
        "poly.png",
        "image/png",
        png_with_html_appended,
        "png",
        _check_html_dropped,
    ),
)


def multipart_body(fields: dict[str, str], *, file_name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart body built by hand: the test client caps file names at 255 characters (as
    UploadedFile does), a browser sends them whole."""
    boundary = "----portal-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
        f'filename="{file_name}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
