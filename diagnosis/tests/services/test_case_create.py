"""case_create / case_cancel: validation before storage, one transaction, no orphan files,
prediction request after commit, Idempotency-Key (also under concurrency)."""

from __future__ import annotations

import threading
from pathlib import Path
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from diagnosis.exceptions import (
    InvalidStateError,
    InvalidUploadError,
    NotFoundError,
    PermissionDeniedError,
)
from diagnosis.models import AuditEvent, Case, XrayImage
from diagnosis.services import cases as case_services
from diagnosis.services.cases import case_cancel, case_create
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders


def _png(name: str = "x.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, builders.palette_png(), content_type="image/png")


class _Unreadable(SimpleUploadedFile):
    """An upload that fails the test if anything reads it."""

    def read(self, *args, **kwargs):
        raise AssertionError("the file must not be read")


def _create(user, files=None, **overrides):
    kwargs = {
        "user": user,
        "patient_ref": "PSN-1",
        "body_part": "hand",
        "clinical_question": "Scaphoid?",
        "files": files if files is not None else [_png()],
    }
    kwargs.update(overrides)
    return case_create(**kwargs)


def test_creates_case_and_images_and_requests_predictions_after_commit(
    clinician, settings, django_capture_on_commit_callbacks
):
    files = [_png("a.png"), SimpleUploadedFile("b.dcm", builders.dicom_12bit_windowed())]
    with mock.patch.object(case_services, "case_request_predictions") as request_predictions:
        with django_capture_on_commit_callbacks() as callbacks:
            case = _create(clinician, files, source="api", urgent=True)
            request_predictions.assert_not_called()
        assert len(callbacks) == 2  # publish the staged files, then request predictions
        assert {
            p.parts[len(Path(settings.MEDIA_ROOT).parts)]
            for p in builders.files_under(settings.MEDIA_ROOT)
        } == {"staging"}
        callbacks[0]()
        request_predictions.assert_not_called()
        callbacks[1]()
    request_predictions.assert_called_once_with(case=case)
    case.refresh_from_db()
    assert (case.status, case.source, case.urgent, case.created_by) == (
        "received",
        "api",
        True,
        clinician,
    )
    images = list(case.images.order_by("position"))
    assert [(i.position, i.source_format, i.original_name) for i in images] == [
        (0, "png", "a.png"),
        (1, "dicom", "b.dcm"),
    ]
    assert images[1].dicom_metadata["BitsStored"] == 12
    # Two canonical PNGs, and the DICOM's full-depth PNG.
    assert not images[0].depth_file
    assert images[1].depth_file.name.startswith("depth/")
    assert sorted(
        p.relative_to(settings.MEDIA_ROOT).as_posix()
        for p in builders.files_under(settings.MEDIA_ROOT)
    ) == sorted([images[0].file.name, images[1].file.name, images[1].depth_file.name])
    event = AuditEvent.objects.get(action="case.create")
    assert (event.object_id, event.extra) == (str(case.uuid), {"images": 2})


def test_broker_failure_after_commit_does_not_fail_the_upload(
    clinician, django_capture_on_commit_callbacks
):
    broken = mock.patch.object(
        case_services, "case_request_predictions", side_effect=ConnectionError("broker down")
    )
    with broken, django_capture_on_commit_callbacks(execute=True):
        case = _create(clinician)
    assert Case.objects.filter(pk=case.pk).exists()


def test_all_files_are_validated_before_anything_is_stored(clinician, settings):
    files = [_png("ok.png"), SimpleUploadedFile("bad.png", b"<html>"), _png("ok2.png")]
    with pytest.raises(InvalidUploadError) as info:
        _create(clinician, files)
    assert info.value.code == "unsupported_format"
    assert info.value.extra["files"] == [
        {
            "index": 1,
            "name": "bad.png",
            "code": "unsupported_format",
            "message": "Unsupported file type (HTML): upload PNG, JPEG or DICOM images.",
        }
    ]
    assert (Case.objects.count(), XrayImage.objects.count()) == (0, 0)
    assert builders.files_under(settings.MEDIA_ROOT) == []


def test_a_failing_transaction_leaves_no_files(clinician, settings):
    files = [_png("a.png"), _png("b.png")]
    failing = mock.patch.object(case_services, "audit_record", side_effect=RuntimeError("db gone"))
    with failing, pytest.raises(RuntimeError):
        _create(clinician, files)
    assert (Case.objects.count(), XrayImage.objects.count()) == (0, 0)
    assert builders.files_under(settings.MEDIA_ROOT) == []


def test_file_count_limits(clinician, settings):
    with pytest.raises(InvalidUploadError) as info:
        _create(clinician, [])
    assert info.value.code == "no_files"
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    with pytest.raises(InvalidUploadError) as info:
        _create(clinician, [_png() for _ in range(4)])
    assert info.value.code == "too_many_files"
    assert Case.objects.count() == 0


def test_oversized_file_is_refused_before_reading(clinician, settings):
    settings.UPLOAD_MAX_FILE_BYTES = 10
    upload = _Unreadable("x.png", builders.palette_png())
    with pytest.raises(InvalidUploadError) as info:
        _create(clinician, [upload])
    assert (info.value.code, info.value.status_code) == ("file_too_large", 413)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patient_ref", "Jane Doe"),
        ("patient_ref", ""),
        ("body_part", "brain"),
        ("clinical_question", "x\x00y"),
        ("clinical_question", "x" * 2001),
    ],
)
def test_case_fields_are_validated_before_the_files(clinician, field, value):
    upload = _Unreadable("x.png", builders.palette_png())
    with pytest.raises(ValidationError) as info:
        _create(clinician, [upload], **{field: value})
    assert field in info.value.message_dict
    assert Case.objects.count() == 0


def test_idempotency_key_returns_the_first_case(clinician, clinician_b, settings):
    first = _create(clinician, idempotency_key="key-1")
    again = _create(clinician, idempotency_key="key-1")  # the same request again
    assert again.pk == first.pk
    assert (first.was_created, again.was_created) == (True, False)
    assert again.images.count() == 1
    assert len(builders.files_under(settings.MEDIA_ROOT)) == 1
    # Keys are per user, and an empty key never deduplicates.
    assert _create(clinician_b, idempotency_key="key-1").pk != first.pk
    assert _create(clinician).pk != _create(clinician).pk


def test_reused_key_with_a_different_request_is_refused(clinician):
    _create(clinician, idempotency_key="key-2", patient_ref="PSN-A")
    for change in (
        {"patient_ref": "PSN-B"},
        {"body_part": "leg"},
        {"clinical_question": "Another question"},
        {"urgent": True},
        {"files": [_png(), _png()]},
        {"files": [SimpleUploadedFile("x.jpg", builders.progressive_jpeg())]},
    ):
        with pytest.raises(InvalidUploadError) as info:
            _create(clinician, idempotency_key="key-2", **{"patient_ref": "PSN-A", **change})
        assert (info.value.code, info.value.status_code) == ("idempotency_key_reused", 422)
    assert Case.objects.count() == 1


@pytest.mark.parametrize("key", ["x" * 129, "has space", "nul\x00", "é"])
def test_malformed_idempotency_key_is_refused(clinician, key):
    with pytest.raises(InvalidUploadError) as info:
        _create(clinician, idempotency_key=key)
    assert info.value.code == "invalid_idempotency_key"


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_one_key_make_one_case(settings, caplog):
    """Two threads, each with its own PostgreSQL connection, pass the 'key already used?' check
    before either inserts; the unique constraint decides and both get the same case."""
    user = factories.ClinicianFactory(username="concurrent")
    barrier = threading.Barrier(2, timeout=30)
    real_store = case_services._case_store

    def store_after_both_checked(**kwargs):
        barrier.wait()
        return real_store(**kwargs)

    results: list[Case] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(_create(user, idempotency_key="same-key"))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)
        finally:
            connection.close()

    caplog.set_level("INFO", logger="diagnosis.services.cases")
    with mock.patch.object(case_services, "_case_store", side_effect=store_after_both_checked):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert len(results) == 2
    # The loser really hit the unique constraint (not the early lookup).
    assert [r.message for r in caplog.records].count("idempotent race") == 1
    assert results[0].pk == results[1].pk
    assert sorted(r.was_created for r in results) == [False, True]
    assert Case.objects.filter(created_by=user).count() == 1
    assert XrayImage.objects.count() == 1
    assert len(builders.files_under(Path(settings.MEDIA_ROOT))) == 1  # the loser left no file


# --- case_cancel -------------------------------------------------------------------------------------


def test_owner_cancels_a_case(clinician):
    case = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    cancelled = case_cancel(case=case, user=clinician)
    assert cancelled.status == Case.Status.CANCELLED
    case.refresh_from_db()
    assert case.status == Case.Status.CANCELLED
    assert AuditEvent.objects.filter(action="case.cancel", object_id=str(case.uuid)).count() == 1


def test_staff_may_cancel_anothers_case(clinician, admin_user):
    case = factories.CaseFactory(created_by=clinician)
    assert case_cancel(case=case, user=admin_user).status == Case.Status.CANCELLED


def test_cancel_refusals(clinician, clinician_b, radiologist):
    case = factories.CaseFactory(created_by=clinician)
    with pytest.raises(NotFoundError):
        case_cancel(case=case, user=clinician_b)
    with pytest.raises(PermissionDeniedError):
        case_cancel(case=case, user=radiologist)
    for status in (Case.Status.REVIEWED, Case.Status.CANCELLED):
        done = factories.CaseFactory(created_by=clinician, status=status)
        with pytest.raises(InvalidStateError):
            case_cancel(case=done, user=clinician)
    case.refresh_from_db()
    assert case.status == Case.Status.RECEIVED
