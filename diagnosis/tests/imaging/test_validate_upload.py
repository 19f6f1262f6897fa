"""validate_upload on its own: every hostile input refused with its code, every awkward-but-valid
input accepted with the property that matters kept (the page/API tests add storage and rows)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import validate_upload
from diagnosis.imaging.names import sanitize_display_name
from diagnosis.tests.imaging import builders


@pytest.mark.parametrize("bad", builders.BAD_INPUTS, ids=lambda bad: bad.id)
def test_bad_input_is_refused_with_its_code(bad, settings):
    if bad.code == "file_too_large":
        settings.UPLOAD_MAX_FILE_BYTES = builders.OVERSIZE_LIMIT
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(bad.build(), bad.filename)
    assert (info.value.code, info.value.status_code) == (bad.code, bad.status)
    assert info.value.message


@pytest.mark.parametrize("good", builders.GOOD_INPUTS, ids=lambda good: good.id)
def test_good_input_is_canonicalised(good):
    data = good.build()
    canonical = validate_upload(data, good.filename)
    arr = builders.decode_canonical(canonical.png_bytes)
    assert arr.shape == (canonical.height, canonical.width)
    assert canonical.source_format == good.source_format
    assert canonical.sha256 == __import__("hashlib").sha256(data).hexdigest()
    assert canonical.original_bytes is None  # KEEP_ORIGINAL_UPLOADS is off by default
    good.check(arr, canonical)


def test_canonical_png_has_no_metadata_chunks():
    canonical = validate_upload(builders.exif_rotated_jpeg(), "x.jpg")
    with Image.open(io.BytesIO(canonical.png_bytes)) as im:
        assert "exif" not in im.info
        assert im.getexif() == {}


def test_real_radiograph_is_accepted(sample_jpeg_bytes):
    canonical = validate_upload(sample_jpeg_bytes, "fracatlas.jpg")
    with Image.open(io.BytesIO(sample_jpeg_bytes)) as original:
        assert (canonical.width, canonical.height) == original.size
    assert canonical.source_format == "jpeg"


def test_deidentified_original_keeps_no_phi():
    data = builders.dicom_with_phi()
    assert b"Doe^Jane" in data  # the input really carries PHI
    canonical = validate_upload(data, "phi.dcm", keep_original=True)
    original = canonical.original_bytes
    assert original is not None
    assert original[:128] == b"\x00" * 128
    assert original[128:132] == b"DICM"
    for secret in (
        b"Doe",
        b"<script>",
        b"MRN-0042",
        b"19700101",
        b"Secret Street",
        b"St Example",
        b"Who^Doctor",
        b"20240102",
        b"ACC-SECRET",
        b"OTHER-SECRET",
        b"REQ-SECRET",
        b"private-secret",
        b"ACME SECRET",
        b"PHI-IN-PREAMBLE",
    ):
        assert secret not in original, secret
    ds = pydicom.dcmread(io.BytesIO(original))
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic" in ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert not [elem for elem in ds.iterall() if elem.tag.is_private]
    assert str(ds.PatientName) == ""
    assert ds.Modality == "DX"
    assert ds.BodyPartExamined == "HAND"
    source = pydicom.dcmread(io.BytesIO(data))
    assert ds.StudyInstanceUID != source.StudyInstanceUID  # instance UIDs are remapped...
    again = pydicom.dcmread(
        io.BytesIO(validate_upload(data, "x", keep_original=True).original_bytes)
    )
    assert again.StudyInstanceUID == ds.StudyInstanceUID  # ...consistently
    assert np.array_equal(ds.pixel_array, source.pixel_array)


def test_png_and_jpeg_originals_are_kept_as_sent_when_asked():
    data = builders.progressive_jpeg()
    canonical = validate_upload(data, "x.jpg", keep_original=True)
    assert (canonical.original_bytes, canonical.original_extension) == (data, "jpg")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("x.php%00.jpg", "x.php%00.jpg"),
        ("x.php\x00.jpg", "x.php.jpg"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("  .hidden.png ", "hidden.png"),
        ("", "image"),
        ("....", "image"),
    ],
)
def test_display_name_is_sanitised(name, expected):
    assert sanitize_display_name(name) == expected


def test_long_display_name_keeps_its_extension():
    name = sanitize_display_name("a" * 300 + ".png")
    assert len(name) == 120
    assert name.endswith(".png")


def test_12bit_jpeg_header_is_refused_before_decoding():
    data = bytearray(builders.progressive_jpeg())
    offset = data.index(b"\xff\xc2")
    data[offset + 4] = 12  # precision byte of the frame header
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(bytes(data), "x.jpg")
    assert info.value.code == "unsupported_format"


def test_jpeg_header_dimensions_are_checked_before_decoding(settings):
    settings.UPLOAD_MAX_PIXELS = 1000
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.progressive_jpeg(), "x.jpg")  # 64x48 = 3072 pixels
    assert info.value.code == "image_too_large"


def _encapsulated(transfer_syntax: str, fragment: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    ds = builders.dicom_dataset(builders.gradient())
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return builders.dicom_bytes(ds)


def test_rle_compressed_dicom_is_accepted():
    from pydicom.uid import RLELossless

    values = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    ds = builders.dicom_dataset(values, bits_stored=12, window=(2048, 1024))
    ds.compress(RLELossless)
    canonical = validate_upload(builders.dicom_bytes(ds), "rle.dcm")
    arr = builders.decode_canonical(canonical.png_bytes)
    assert (arr[0, 0], arr[0, -1]) == (0, 255)
    assert canonical.dicom_metadata["TransferSyntaxUID"] == RLELossless


def test_jpeg_baseline_dicom_is_accepted():
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = builders.encode(Image.fromarray(builders.gradient()), "JPEG", quality=95)
    canonical = validate_upload(_encapsulated(JPEGBaseline8Bit, jpeg), "jpeg.dcm")
    arr = builders.decode_canonical(canonical.png_bytes)
    assert np.abs(arr.astype(int) - builders.gradient().astype(int)).max() <= 8


def test_undecodable_dicom_compression_is_refused_with_a_code():
    from pydicom.uid import HTJ2KLossless

    with pytest.raises(InvalidUploadError) as info:
        validate_upload(_encapsulated(HTJ2KLossless, b"\xff\x4f\xff\x51 not decoded"), "x.dcm")
    assert info.value.code == "unsupported_format"
    assert "JPEG-LS" in info.value.message


def test_decoder_warnings_are_errors():
    """Pillow only warns about corrupt EXIF; validation refuses the file."""
    data = builders.encode(
        Image.fromarray(builders.gradient()),
        "JPEG",
        exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03",
    )
    with pytest.warns(UserWarning, match="EXIF"), Image.open(io.BytesIO(data)) as lenient:
        lenient.load()  # Pillow alone only warns
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(data, "x.jpg")
    assert info.value.code == "corrupt_image"


def test_warnings_elsewhere_keep_their_behaviour():
    import warnings

    from diagnosis.imaging.strict import warnings_as_errors

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with warnings_as_errors("PIL"):
            warnings.warn("unrelated", UserWarning, stacklevel=1)
            with pytest.raises(UserWarning, match="decoder"):
                warnings.warn_explicit("decoder", UserWarning, "Image.py", 1, module="PIL.Image")
    assert [str(w.message) for w in caught] == ["unrelated"]


@pytest.mark.parametrize(
    ("function", "expected_first", "expected_last"),
    [("LINEAR", 0, 255), ("LINEAR_EXACT", 0, 255), ("SIGMOID", 2, 253)],  # sigmoid: asymptotic
)
def test_dicom_voi_functions(function, expected_first, expected_last):
    values = np.tile((2048 + (np.arange(64) - 32) * 8).astype(np.uint16), (4, 1))  # 1792..2296
    ds = builders.dicom_dataset(values, bits_stored=12, window=(2048, 200))
    ds.VOILUTFunction = function
    row = builders.decode_canonical(validate_upload(builders.dicom_bytes(ds), "x").png_bytes)[0]
    assert (row[0], row[-1]) == (expected_first, expected_last)
    assert np.all(np.diff(row.astype(int)) >= 0)
    assert 120 <= row[32] <= 136  # the window centre maps to mid-grey


def test_dicom_rescale_slope_and_intercept_apply_before_the_window():
    values = np.tile(np.arange(0, 64, dtype=np.uint16), (4, 1))
    ds = builders.dicom_dataset(values, bits_stored=12, window=(0, 64))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -64  # output units -64..62 around the window 0 +- 32
    row = builders.decode_canonical(validate_upload(builders.dicom_bytes(ds), "x").png_bytes)[0]
    assert row[0] == 0
    assert row[-1] == 255
    assert abs(int(row[32]) - 128) <= 6


def test_signed_ct_style_dicom_with_rescale_is_windowed():
    """Signed stored values with intercept -1024 (CT-style), bone window."""
    stored = np.tile(np.linspace(-1000, 3000, 64).astype(np.int16), (4, 1))
    ds = builders.dicom_dataset(stored.view(np.uint16), bits_stored=16, window=(300, 1500))
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = stored.tobytes()
    canonical = validate_upload(builders.dicom_bytes(ds), "ct.dcm")
    row = builders.decode_canonical(canonical.png_bytes)[0].astype(int)
    assert (row[0], row[-1]) == (0, 255)
    assert np.all(np.diff(row) >= 0)


@pytest.mark.parametrize("mode", ["LA", "1", "RGB", "P+transparency"])
def test_other_png_modes_become_grayscale(mode):
    image = Image.fromarray(builders.gradient())
    if mode == "P+transparency":
        data = builders.encode(image.convert("P"), "PNG", transparency=0)
    else:
        data = builders.encode(image.convert(mode), "PNG")
    canonical = validate_upload(data, "x.png")
    arr = builders.decode_canonical(canonical.png_bytes)
    assert arr.shape == (48, 64)
    assert arr[0, -1] > arr[0, 20]  # the ramp survives (1-bit: dark to light)


def test_dicom_metadata_text_is_sanitised():
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.BodyPartExamined = "<script>x</script>"
    canonical = validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert "<" not in canonical.dicom_metadata["BodyPartExamined"]
    assert ">" not in canonical.dicom_metadata["BodyPartExamined"]


def test_jpeg_inside_dicom_larger_than_its_header_is_refused(settings):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    settings.UPLOAD_MAX_PIXELS = 1000
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))  # the header says 8x8...
    jpeg = builders.encode(Image.fromarray(builders.gradient()), "JPEG")  # ...the data is 64x48
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert info.value.code == "image_too_large"


def test_deidentification_reaches_into_kept_sequences():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    item.VerifyingObserverName = "Nested^Secret"
    item.ObservationDateTime = "20240101120000"
    item.private_block(0x0019, "NESTED PRIV", create=True).add_new(0x01, "LO", "nested-secret")
    ds.ReferencedImageSequence = Sequence([item])
    original = validate_upload(builders.dicom_bytes(ds), "x.dcm", keep_original=True).original_bytes
    for secret in (
        b"Nested^Secret",
        b"nested-secret",
        b"NESTED PRIV",
        b"20240101120000",
        b"1.2.3.4.5.6.7.8.9",
    ):
        assert secret not in original, secret
    kept = pydicom.dcmread(io.BytesIO(original)).ReferencedImageSequence[0]
    assert kept.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"  # class UIDs stay
    assert kept.ReferencedSOPInstanceUID != "1.2.3.4.5.6.7.8.9"  # instance UIDs are remapped
