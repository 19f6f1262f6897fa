"""Rebuilding full-depth PNGs for images stored before they were kept, from kept originals: only
when the original reproduces the stored 8-bit canonical, staged and published on commit, once."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from PIL import Image

from diagnosis.models import Case, XrayImage
from diagnosis.services.cases import case_create
from diagnosis.services.image_depth import image_depth_backfill
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db


def _png16() -> bytes:
    values = np.random.default_rng(1).integers(0, 65535, (30, 20)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def old_case(clinician, settings, django_capture_on_commit_callbacks) -> Case:
    """A DICOM, a 16-bit PNG and a JPEG stored with their originals, then stripped of their
    full-depth files as images stored before full depth was kept."""
    settings.KEEP_ORIGINAL_UPLOADS = True
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    with django_capture_on_commit_callbacks(execute=True):
        case = case_create(
            user=clinician,
            patient_ref="REF-OLD",
            body_part="hand",
            clinical_question="",
            files=[
                SimpleUploadedFile(path.name, path.read_bytes()),
                SimpleUploadedFile("deep.png", _png16()),
                SimpleUploadedFile("x.jpg", builders.progressive_jpeg()),
            ],
        )
    for image in case.images.all():
        if image.depth_file:
            default_storage.delete(image.depth_file.name)
    case.expected = {  # type: ignore[attr-defined]
        image.pk: image.depth_params for image in case.images.all() if image.depth_params
    }
    case.images.update(depth_file="", depth_params={})
    return case


def test_rebuilds_from_kept_originals_once(old_case, settings, django_capture_on_commit_callbacks):
    dicom, png, jpeg = old_case.images.order_by("position")
    with django_capture_on_commit_callbacks() as callbacks:
        report = image_depth_backfill()
    assert sorted(report.rebuilt) == sorted([dicom.pk, png.pk])
    assert report.as_counts()["mismatch"] == 0
    # Staged until the commit, then under depth/.
    dicom.refresh_from_db()
    media = Path(settings.MEDIA_ROOT)
    assert (media / "staging" / dicom.depth_file.name).exists()
    for callback in callbacks:
        callback()
    for image in (dicom, png):
        image.refresh_from_db()
        assert image.depth_file.name.startswith("depth/")
        assert (media / image.depth_file.name).exists()
        assert image.depth_params == old_case.expected[image.pk]
    jpeg.refresh_from_db()
    assert not jpeg.depth_file
    # The DICOM's rebuilt values are its stored values.
    import pydicom

    with dicom.depth_file.open("rb") as fh, Image.open(fh) as im:
        samples = np.asarray(im)
    original = pydicom.dcmread(next(builders.SAMPLES_DIR.glob("*.dcm"))).pixel_array
    params = dicom.depth_params
    assert np.array_equal(samples * params["slope"] + params["intercept"], original)
    # Nothing left to do.
    again = image_depth_backfill()
    assert again.as_counts() == {
        "rebuilt": 0,
        "no_original": 0,
        "no_full_depth": 0,
        "mismatch": 0,
        "unreadable": 0,
    }


def test_an_original_that_no_longer_gives_the_stored_canonical_is_left_alone(old_case):
    dicom = old_case.images.get(position=0)
    inverted = 255 - builders.decode_canonical(dicom.file.read())
    dicom.file.close()
    buffer = io.BytesIO()
    Image.fromarray(inverted).save(buffer, "PNG")
    default_storage.delete(dicom.file.name)
    default_storage.save(dicom.file.name, ContentFile(buffer.getvalue()))
    report = image_depth_backfill()
    assert report.mismatch == [dicom.pk]
    dicom.refresh_from_db()
    assert not dicom.depth_file


def test_images_without_originals_or_with_missing_ones_are_counted(old_case):
    dicom, png, _jpeg = old_case.images.order_by("position")
    XrayImage.objects.filter(pk=png.pk).update(original_file="")
    default_storage.delete(dicom.original_file.name)
    report = image_depth_backfill()
    assert report.as_counts()["no_original"] == 1
    assert report.unreadable == [dicom.pk]
    assert report.rebuilt == []


def test_command_prints_counts_and_checks_its_limit(old_case, django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("image_depth_backfill", "--limit", "1", stdout=out)
    assert "rebuilt: 1" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("image_depth_backfill", "--limit", "0")
