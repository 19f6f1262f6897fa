"""pydicom's own test files as an outside corpus (issue 12, point 5).

Every file pydicom ships (`pydicom/data/test_files`, all of them, DICOM or not) goes through the
validator: each is accepted, or refused with the true reason, never with an exception. What is
"true" is decided independently of our decoder where it can be: pydicom reads the file, and a data
set without pixel data must be refused as holding no image, one with several frames as
multi-frame, a non-DICOM file as an unsupported type. The remaining refusals are listed below with
the fact that makes each one right. The end-to-end test uploads the whole corpus through the
browser intake and the API with a model active: accepted files are predicted, refusals are 4xx.
"""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pydicom.data
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image
from pydicom.data import get_testdata_file

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import validate_upload

CORPUS = Path(pydicom.data.__file__).parent / "test_files"
FILES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file())

# Refusals the oracle below cannot derive, each with the fact that makes it right.
KNOWN_REFUSALS = {
    # The pixel data stops before the end of the image (pydicom's own truncation test file).
    "MR_truncated.dcm": ("invalid_dicom", "shorter than its header says"),
    # 12-bit lossy JPEG (Process 4): valid, but neither Pillow nor GDCM decodes it.
    "JPEG-lossy.dcm": ("unsupported_format", "12-bit lossy JPEG"),
    "JPGExtended.dcm": ("unsupported_format", "12-bit lossy JPEG"),
    # Its JPEG 2000 SIZ segment declares 14540801 tiles (a parser test, not an image).
    "JPEG2000-embedded-sequence-delimiter.dcm": ("invalid_dicom", "invalid header"),
    # 1-bit segmentation masks.
    "liver_1frame.dcm": ("unsupported_format", "1-bit"),
    "liver_expb_1frame.dcm": ("unsupported_format", "1-bit"),
    # NumberOfFrames holds "1A" (pydicom's bad-VR test file).
    "badVR.dcm": ("invalid_dicom", "NumberOfFrames is not a whole number"),
    # Data sets without the DICOM file header (no preamble, no "DICM"): not PS3.10 files.
    "ExplVR_BigEndNoMeta.dcm": ("invalid_dicom", "no DICOM file header"),
    "no_meta.dcm": ("invalid_dicom", "no DICOM file header"),
}
# Everything else, judged by `_oracle`: not DICOM -> unsupported type; no pixel data -> no image
# (reports, plans, directories, waveforms...); several frames -> multi-frame; else accepted.
# The three the outside campaign saw refused although the standard allows them.
ALLOWED_BY_THE_STANDARD = (
    "MR_small_padded.dcm",  # pixel data with trailing padding
    "SC_ybr_full_422_uncompressed.dcm",  # 4:2:2 chroma subsampling: 2 bytes per pixel, not 3
    "examples_jpeg2k.dcm",  # a 0xFF pad byte after the codestream's end marker
)


def _is_dicom(data: bytes) -> bool:
    """A DICOM file ("DICM" after the preamble) or a bare data set pydicom reads as one (its first
    element in group 0008, where every data set starts)."""
    if data[128:132] == b"DICM":
        return True
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        first = next(iter(ds.keys()), None)
    except Exception:  # noqa: BLE001 (not DICOM at all)
        return False
    return first is not None and first.group == 0x0008


def _oracle(name: str) -> tuple[str, str] | None:
    """The refusal pydicom's own reading implies (code, message fragment), or None to accept."""
    if name in KNOWN_REFUSALS:
        return KNOWN_REFUSALS[name]
    if not _is_dicom((CORPUS / name).read_bytes()):
        return ("unsupported_format", "Unsupported file type")
    ds = pydicom.dcmread(CORPUS / name, force=True)
    if "PixelData" not in ds or "Rows" not in ds:
        return ("invalid_dicom", "holds no image")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return ("multi_frame", "Multi-frame")
    return None


def test_the_corpus_is_the_whole_of_pydicoms_test_files():
    assert len(FILES) > 150
    assert {"MR_small.dcm", "CT_small.dcm", "dicomdirtests/DICOMDIR"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_every_pydicom_file_is_accepted_or_refused_for_its_true_reason(name, settings):
    settings.KEEP_ORIGINAL_UPLOADS = False
    expected = _oracle(name)
    data = (CORPUS / name).read_bytes()
    if expected is not None:
        with pytest.raises(InvalidUploadError) as info:
            validate_upload(data, Path(name).name)
        code, fragment = expected
        assert info.value.code == code, (name, info.value.code, info.value.message)
        assert fragment in info.value.message, (name, info.value.message)
        assert info.value.status_code < 500
        return
    image = validate_upload(data, Path(name).name)  # anything raised here fails the test
    pixels = np.asarray(Image.open(io.BytesIO(image.png_bytes)))
    assert pixels.shape == (image.height, image.width)
    assert image.source_format == "dicom"


@pytest.mark.parametrize("name", ALLOWED_BY_THE_STANDARD)
def test_files_the_standard_allows_are_accepted(name):
    path = get_testdata_file(name)
    image = validate_upload(Path(path).read_bytes(), name)
    assert image.width > 0


def test_padding_does_not_change_the_image():
    small = validate_upload(Path(get_testdata_file("MR_small.dcm")).read_bytes(), "a.dcm")
    padded = validate_upload(Path(get_testdata_file("MR_small_padded.dcm")).read_bytes(), "b.dcm")
    assert small.png_bytes == padded.png_bytes


def test_chroma_subsampled_image_matches_its_rgb_original():
    ybr = validate_upload(
        Path(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")).read_bytes(), "a.dcm"
    )
    rgb = validate_upload(Path(get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm")).read_bytes(), "b.dcm")
    a = np.asarray(Image.open(io.BytesIO(ybr.png_bytes))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(rgb.png_bytes))).astype(int)
    assert np.abs(a - b).mean() < 2


# --- end to end: both upload paths, predictions --------------------------------------------------

_DISPATCH = "diagnosis.services.predictions.prediction_run_batch_task.apply_async"


@pytest.fixture
def active_tiny_model(db, tmp_path):
    from diagnosis.services.models import model_version_register
    from ml.testing import make_tiny_artifact

    artifact = make_tiny_artifact(tmp_path / "tiny", size=64, seed=0)
    version, _ = model_version_register(artifact_dir=artifact, activate=True)
    return version


def _run_in_process(*args, **kwargs):
    from diagnosis.services.prediction_results import prediction_run_batch

    prediction_run_batch(prediction_ids=kwargs["args"][0])


@pytest.mark.slow
@pytest.mark.django_db
def test_the_corpus_through_both_upload_paths_is_predicted_or_refused(
    active_tiny_model, clinician, client_for, django_capture_on_commit_callbacks, monkeypatch
):
    from django.core.cache import cache
    from rest_framework.test import APIClient

    from diagnosis.api.throttling import TokenScopeRateThrottle
    from diagnosis.models import Case, Prediction

    monkeypatch.setattr(
        TokenScopeRateThrottle, "THROTTLE_RATES", {"uploads": "100000/min", "read": "100000/min"}
    )
    cache.clear()

    browser = client_for(clinician)
    api = APIClient()
    api.force_authenticate(clinician)
    outcomes = {"accepted": 0, "refused": 0}
    for n, name in enumerate(FILES):
        expected = _oracle(name)
        data = (CORPUS / name).read_bytes()
        fields = {"patient_ref": f"CORPUS-{n}", "body_part": "hand", "clinical_question": ""}
        for path in ("web", "api"):
            upload = SimpleUploadedFile(Path(name).name, data, "application/dicom")
            with (
                mock.patch(_DISPATCH, side_effect=_run_in_process),
                django_capture_on_commit_callbacks(execute=True),
            ):
                if path == "web":
                    response = browser.post(
                        reverse("diagnosis:case_new"),
                        {**fields, "images": [upload]},
                        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
                        HTTP_ACCEPT="application/json",
                    )
                else:
                    response = api.post(
                        "/api/v1/cases/",
                        {**fields, "images": [upload]},
                        format="multipart",
                        HTTP_IDEMPOTENCY_KEY=f"corpus-{n}",
                    )
            assert response.status_code < 500, (path, name, response.content[:300])
            body = response.json()
            if expected is None:
                assert response.status_code in (201, 202), (path, name, body)
                case = Case.objects.get(uuid=body.get("uuid") or body.get("id"))
                assert case.status == Case.Status.PREDICTED, (path, name, case.status_reason)
                assert Prediction.objects.filter(image__case=case, status="done").count() == 1
                outcomes["accepted"] += 1
            else:
                assert response.status_code in (400, 413, 415, 422), (path, name, body)
                assert body["code"] == expected[0], (path, name, body)
                outcomes["refused"] += 1
    assert outcomes["accepted"] > 100
    assert outcomes["refused"] > 100
