"""Staged uploads and the media reconcile (issue 12, point 3): no file outlives its transaction
unreferenced; `media_reconcile` removes what a killed process left, publishes what a commit left
staged, and flags rows without files, with counts."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image

from diagnosis.models import Case, XrayImage
from diagnosis.services import cases as case_services
from diagnosis.services.media import media_reconcile
from diagnosis.services.prediction_files import heatmap_names
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders

pytestmark = pytest.mark.django_db


def _media(settings) -> Path:
    return Path(settings.MEDIA_ROOT)


def _files(settings) -> set[str]:
    root = _media(settings)
    return {str(p.relative_to(root)) for p in builders.files_under(root)}


def _create(user, n: int = 2) -> Case:
    files = [
        SimpleUploadedFile(f"x{i}.png", builders.palette_png(), content_type="image/png")
        for i in range(n)
    ]
    return case_services.case_create(
        user=user, patient_ref="REF-M", body_part="hand", clinical_question="", files=files
    )


def _age(settings, name: str, seconds: float = 7200) -> None:
    path = _media(settings) / name
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_files_are_staged_until_the_commit(clinician, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        case = _create(clinician)
    names = sorted(case.images.values_list("file", flat=True))
    # Inside the transaction (and if the process died now): staging only, nothing under images/.
    assert _files(settings) == {f"staging/{name}" for name in names}
    callbacks[0]()
    assert _files(settings) == set(names)


def test_a_failed_transaction_leaves_no_file(clinician, settings, monkeypatch):
    def fail(**kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(case_services, "audit_record", fail)
    with pytest.raises(RuntimeError):
        _create(clinician)
    assert Case.objects.count() == 0
    assert _files(settings) == set()


def test_reconcile_counts_fixes_and_flags(clinician, settings):
    # A case whose process died after writing its staged files, before the commit.
    default_storage.save("staging/images/2026/01/dead1.png", ContentFile(b"png"))
    default_storage.save("staging/images/2026/01/dead2.png", ContentFile(b"png"))
    # A committed case whose process died between the commit and the publish.
    case = factories.CaseFactory(created_by=clinician)
    image = factories.XrayImageFactory(case=case)
    lost = factories.XrayImageFactory(case=case)  # its file is deleted below
    final = image.file.name
    staged = _media(settings) / "staging" / final
    staged.parent.mkdir(parents=True, exist_ok=True)
    os.replace(_media(settings) / final, staged)
    # A radiograph no row points to (old code's crash), a heat-map of a deleted prediction.
    default_storage.save("images/2025/12/orphan.png", ContentFile(b"png"))
    default_storage.save(heatmap_names(999_999)[0], ContentFile(b"png"))
    # A row whose file is gone, and a fresh staged file (an upload in flight).
    default_storage.delete(lost.file.name)
    default_storage.save("staging/images/2026/01/in-flight.png", ContentFile(b"png"))
    for name in _files(settings) - {"staging/images/2026/01/in-flight.png"}:
        _age(settings, name)

    report = media_reconcile(fix=False)
    counts = report.as_counts()
    assert counts["orphans"] == 4
    assert counts["orphans_staging"] == 2
    assert counts["orphans_images"] == 1
    assert counts["orphans_heatmaps"] == 1
    assert counts["published"] == 1
    assert counts["too_recent"] == 1
    assert counts["removed"] == 0
    assert report.images_missing == [lost.pk]
    before = _files(settings)

    report = media_reconcile(fix=True)
    assert report.as_counts()["removed"] == 4
    assert report.images_missing == [lost.pk]
    assert _files(settings) == {final, "staging/images/2026/01/in-flight.png"} | {
        name for name in before if name.startswith("images/") and "orphan" not in name
    }
    assert (_media(settings) / final).exists()

    again = media_reconcile(fix=True).as_counts()
    assert (again["orphans"], again["removed"], again["published"]) == (0, 0, 0)
    assert again["rows_without_files"] == 1


def test_command_reports_counts(clinician, settings):
    default_storage.save("images/2025/12/orphan.png", ContentFile(b"png"))
    out = io.StringIO()
    call_command("media_reconcile", "--fix", "--grace-seconds", "0", stdout=out)
    text = out.getvalue()
    assert "orphans_images: 1" in text
    assert "removed: 1" in text
    assert XrayImage.objects.count() == 0
    assert _files(settings) == set()


def test_periodic_task_is_scheduled_on_the_default_queue_and_removes_orphans(settings):
    from diagnosis.tasks import predictions as tasks
    from fracture_portal.celery import app

    route = app.amqp.router.route({}, tasks.media_reconcile.name, args=(), kwargs={})
    assert route["queue"].name == "default"
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "diagnosis.tasks.media_reconcile" in schedule
    default_storage.save("staging/images/2026/01/dead.png", ContentFile(b"png"))
    _age(settings, "staging/images/2026/01/dead.png")
    assert tasks.media_reconcile()["removed"] == 1
    assert _files(settings) == set()


def _create_full_depth(user) -> Case:
    values = np.random.default_rng(0).integers(0, 65535, (40, 30)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    files = [SimpleUploadedFile("deep.png", buffer.getvalue(), content_type="image/png")]
    return case_services.case_create(
        user=user, patient_ref="REF-D", body_part="hand", clinical_question="", files=files
    )


def test_the_full_depth_file_is_staged_published_reconciled_and_removed_with_its_case(
    clinician, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        case = _create_full_depth(clinician)
    image = case.images.get()
    names = {image.file.name, image.depth_file.name}
    assert image.depth_file.name.startswith("depth/")
    assert _files(settings) == {f"staging/{name}" for name in names}
    callbacks[0]()
    assert _files(settings) == names

    # A missing full-depth file is a row without its file.
    depth_path = _media(settings) / image.depth_file.name
    kept = depth_path.read_bytes()
    depth_path.unlink()
    assert media_reconcile(fix=True).images_missing == [image.pk]
    depth_path.write_bytes(kept)
    assert media_reconcile(fix=True).images_missing == []

    # Deleting the case leaves its files to the reconcile, which removes all of them.
    case.delete()
    for name in names:
        _age(settings, name)
    report = media_reconcile(fix=True)
    assert report.as_counts()["orphans_depth"] == 1
    assert report.as_counts()["orphans_images"] == 1
    assert _files(settings) == set()


def test_an_unreferenced_full_depth_file_is_an_orphan(settings):
    default_storage.save("depth/2025/12/orphan.png", ContentFile(b"png"))
    _age(settings, "depth/2025/12/orphan.png")
    report = media_reconcile(fix=True)
    assert report.as_counts()["orphans_depth"] == 1
    assert _files(settings) == set()
