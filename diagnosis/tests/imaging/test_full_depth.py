"""The full-depth canonical kept beside the 8-bit one (reading issue, point 4): DICOM values after
the Modality LUT / rescale and 16-bit PNG samples survive upload exactly, in the 8-bit canonical's
orientation; the file's default window is read; MONOCHROME1 is flagged, not inverted; the 8-bit
canonical the model reads is unchanged."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from diagnosis.imaging import depth, raster, validate_upload
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db(databases=[])


def _png16(values: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint16)).save(buffer, "PNG", **save)
    return buffer.getvalue()


def _read_depth(canonical) -> np.ndarray:
    """The stored full-depth PNG as values in the file's units (float64)."""
    with Image.open(io.BytesIO(canonical.depth_png_bytes)) as im:
        assert im.format == "PNG"
        assert im.mode == "I;16"
        samples = np.asarray(im).astype(np.float64)
    params = canonical.depth_params
    return samples * params["slope"] + params["intercept"]


def _chunk_types(png: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        types.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def _noisy(rows: int, cols: int, lo: int, hi: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi + 1, (rows, cols)).astype(np.uint16)


@pytest.mark.parametrize(("lo", "hi"), [(0, 65535), (1000, 5000), (7, 7)])
def test_16_bit_png_values_are_kept_exactly(lo, hi):
    values = _noisy(37, 53, lo, hi)
    values[0, 0], values[-1, -1] = lo, hi
    canonical = validate_upload(_png16(values), "x.png")
    assert canonical.bit_depth == 16
    assert np.array_equal(_read_depth(canonical), values)
    params = canonical.depth_params
    assert (params["min"], params["max"]) == (lo, hi)
    assert params["window"] is None  # a PNG has no window: the viewer starts on the full range
    assert params["invert"] is False
    assert params["exact"] is True
    # No metadata in the stored file: header, data, end.
    assert set(_chunk_types(canonical.depth_png_bytes)) == {b"IHDR", b"IDAT", b"IEND"}
    # The 8-bit canonical is what it always was: min..max scaled to 0..255.
    assert np.array_equal(
        builders.decode_canonical(canonical.png_bytes), raster.scale_to_u8(values)
    )


def test_16_bit_png_full_depth_follows_the_exif_orientation():
    """Stored 64 wide x 48 high with EXIF orientation 6: both canonicals are upright (48 x 64)."""
    values = np.zeros((48, 64), np.uint16)
    values[:10, :10] = 60000  # top-left as stored: top-right once rotated 90° clockwise
    values[20:, :] = 12345
    exif = Image.Exif()
    exif[0x0112] = 6
    canonical = validate_upload(_png16(values, exif=exif), "rotated.png")
    upright = np.rot90(values, k=-1)
    assert (canonical.width, canonical.height) == (48, 64)
    assert np.array_equal(_read_depth(canonical), upright)
    assert np.array_equal(
        builders.decode_canonical(canonical.png_bytes), raster.scale_to_u8(upright)
    )


def test_8_bit_png_and_jpeg_keep_no_full_depth():
    for data, name in (
        (builders.encode(Image.fromarray(builders.gradient()), "PNG"), "x.png"),
        (builders.progressive_jpeg(), "x.jpg"),
        (builders.palette_png(), "p.png"),
    ):
        canonical = validate_upload(data, name)
        assert canonical.depth_png_bytes is None
        assert canonical.depth_params == {}


def _dicom(pixels: np.ndarray, **attrs: object) -> bytes:
    ds = builders.dicom_dataset(pixels, bits_stored=attrs.pop("bits_stored", None))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return builders.dicom_bytes(ds)


def _dicom_linear_u8(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of the product's code."""
    out = ((values.astype(np.float64) - (centre - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_12_bit_dicom_values_and_window_are_kept():
    pixels = _noisy(40, 30, 0, 4095, seed=3)
    canonical = validate_upload(
        _dicom(pixels, bits_stored=12, WindowCenter=1500, WindowWidth=2000), "x.dcm"
    )
    assert np.array_equal(_read_depth(canonical), pixels)
    params = canonical.depth_params
    assert params["window"] == [1500.0, 2000.0]
    assert (params["min"], params["max"]) == (float(pixels.min()), float(pixels.max()))
    assert params["invert"] is False
    # The 8-bit canonical (what the model reads) is still the file's window on the values.
    expected = _dicom_linear_u8(pixels, 1500, 2000)
    got = builders.decode_canonical(canonical.png_bytes).astype(int)
    assert np.abs(got - expected.astype(int)).max() <= 1


def test_rescale_slope_and_intercept_are_applied_exactly_to_signed_values():
    stored = np.random.default_rng(4).integers(-2000, 3000, (24, 32)).astype(np.int16)
    ds = builders.dicom_dataset(stored.view(np.uint16))
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -1024
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 2000]  # multi-valued: the first pair
    canonical = validate_upload(builders.dicom_bytes(ds), "ct.dcm")
    values = _read_depth(canonical)
    assert np.array_equal(values, stored.astype(np.float64) * 0.5 - 1024)
    params = canonical.depth_params
    assert params["slope"] == 0.5
    assert params["window"] == [40.0, 400.0]
    assert params["min"] == stored.min() * 0.5 - 1024
    assert params["max"] == stored.max() * 0.5 - 1024


def test_monochrome1_is_flagged_and_its_values_are_not_inverted():
    pixels = _noisy(20, 20, 100, 900, seed=5)
    canonical = validate_upload(
        _dicom(pixels, PhotometricInterpretation="MONOCHROME1", WindowCenter=500, WindowWidth=800),
        "m1.dcm",
    )
    assert canonical.depth_params["invert"] is True
    assert np.array_equal(_read_depth(canonical), pixels)
    # The 8-bit canonical shows low values bright, as it always did.
    expected = 255 - _dicom_linear_u8(pixels, 500, 800).astype(int)
    got = builders.decode_canonical(canonical.png_bytes).astype(int)
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(
    ("centre", "width"),
    [(None, None), ("", ""), (500, 0), (500, -3), (500, None)],
)
def test_no_usable_window_means_none(centre, width):
    assert depth.file_window(centre, width) is None


def test_window_takes_the_first_of_several_values():
    assert depth.file_window([40, 400], [400, 1800]) == (40.0, 400.0)
    assert depth.file_window("1424", "2775") == (1424.0, 2775.0)
    assert depth.file_window(float("nan"), 10) is None


def test_dicom_without_window_keeps_none():
    pixels = _noisy(16, 16, 0, 65535, seed=6)
    canonical = validate_upload(_dicom(pixels), "nowindow.dcm")
    assert canonical.depth_params["window"] is None
    assert np.array_equal(_read_depth(canonical), pixels)


def test_colour_dicom_keeps_no_full_depth():
    rgb = np.dstack([builders.gradient()] * 3)
    ds = builders.dicom_dataset(builders.gradient())
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    canonical = validate_upload(builders.dicom_bytes(ds), "rgb.dcm")
    assert canonical.depth_png_bytes is None


def test_the_sample_dicom_default_window_is_read():
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    canonical = validate_upload(path.read_bytes(), path.name)
    params = canonical.depth_params
    assert params["window"] == [1424.0, 2775.0]
    assert (params["min"], params["max"]) == (0.0, 3829.0)
    assert canonical.bit_depth == 12


def test_a_span_wider_than_16_bits_is_quantised_and_marked():
    values = np.array([[0, 1, 70000], [100000, 5, 131070]], dtype=np.int64)
    packed = depth.pack(values, slope=2.0, intercept=-10.0)
    assert packed.exact is False
    assert packed.samples.dtype == np.uint16
    restored = packed.samples * packed.slope + packed.intercept
    # Within half a quantisation step of the true values, ends exact.
    assert np.abs(restored - (values * 2.0 - 10.0)).max() <= packed.slope / 2 + 1e-9
    assert packed.value_range == (-10.0, 131070 * 2.0 - 10.0)
    assert packed.params()["exact"] is False


def test_pack_refuses_non_integer_values():
    with pytest.raises(TypeError):
        depth.pack(np.zeros((2, 2), np.float32))
