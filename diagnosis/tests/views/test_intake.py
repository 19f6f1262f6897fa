"""The intake page end to end: hostile and awkward uploads through the real endpoint, storage,
CSRF, permissions and the canonical image file view."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from diagnosis.models import AuditEvent, Case, XrayImage
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders

URL = reverse("diagnosis:case_new")
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": "application/json"}
GENERATED_PNG = re.compile(r"^images/\d{4}/\d{2}/[0-9a-f]{32}\.png$")


def _fields(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "patient_ref": "PSN-00042",
        "body_part": "hand",
        "clinical_question": "Fall on outstretched hand",
    }
    data.update(overrides)
    return data


def _upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


class _CommittingClient(Client):
    """A browser session whose POSTs commit. In a server the upload's transaction commits and its
    on-commit work runs (the staged files are published, predictions requested); the test's
    transaction never commits, so that work runs here when the request returns."""

    capture: Any = None

    def post(self, *args: Any, **kwargs: Any) -> Any:
        with self.capture(execute=True):
            return super().post(*args, **kwargs)


@pytest.fixture
def clinician_client(clinician, django_capture_on_commit_callbacks) -> Client:
    client = _CommittingClient()
    client.capture = django_capture_on_commit_callbacks
    client.force_login(clinician)
    return client


def _stored_state(settings) -> tuple[int, int, list[Path]]:
    return (
        Case.objects.count(),
        XrayImage.objects.count(),
        builders.files_under(settings.MEDIA_ROOT),
    )


# --- hostile inputs: one parametrised test over RELIABILITY.md §2 -----------------------------------


@pytest.mark.parametrize("bad", builders.BAD_INPUTS, ids=lambda bad: bad.id)
def test_bad_upload_is_refused_and_leaves_nothing(
    bad, clinician_client, settings, django_capture_on_commit_callbacks
):
    if bad.code == "file_too_large":
        settings.UPLOAD_MAX_FILE_BYTES = builders.OVERSIZE_LIMIT
    before = _stored_state(settings)
    with django_capture_on_commit_callbacks() as callbacks:
        response = clinician_client.post(
            URL,
            _fields(images=[_upload(bad.filename, bad.build(), bad.content_type)]),
            **XHR,
        )
    assert response.status_code == bad.status, response.content
    body = response.json()
    assert body["code"] == bad.code
    assert body["message"]
    assert body["files"][0]["code"] == bad.code
    assert body["files"][0]["index"] == 0
    assert _stored_state(settings) == before
    assert builders.files_under(settings.MEDIA_ROOT) == []
    assert callbacks == []  # no prediction requested


def test_101_files_in_one_request_are_refused(clinician_client, settings):
    png = builders.palette_png()
    files = [_upload(f"x{i}.png", png, "image/png") for i in range(101)]
    response = clinician_client.post(URL, _fields(images=files), **XHR)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_files"
    assert _stored_state(settings) == (0, 0, [])


def test_1001_fields_are_refused(clinician_client, settings):
    data = _fields(images=[_upload("x.png", builders.palette_png(), "image/png")])
    data.update({f"f{i}": "x" for i in range(1001)})
    response = clinician_client.post(URL, data, **XHR)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_fields"
    assert _stored_state(settings) == (0, 0, [])


def test_request_body_over_the_total_cap_is_refused(clinician_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 50_000
    data = builders.oversize_png()  # 160 KB body
    response = clinician_client.post(URL, _fields(images=[_upload("x.png", data)]), **XHR)
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert _stored_state(settings) == (0, 0, [])


def test_one_bad_file_among_good_ones_stores_nothing(clinician_client, settings):
    files = [
        _upload("good.png", builders.palette_png(), "image/png"),
        _upload("bad.png", builders.html_page(), "image/png"),
        _upload("good2.jpg", builders.progressive_jpeg(), "image/jpeg"),
        _upload("bad2.jpg", builders.truncated_jpeg(0.5)(), "image/jpeg"),
    ]
    response = clinician_client.post(URL, _fields(images=files), **XHR)
    assert response.status_code == 400
    body = response.json()
    assert [(f["index"], f["name"], f["code"]) for f in body["files"]] == [
        (1, "bad.png", "unsupported_format"),
        (3, "bad2.jpg", "corrupt_image"),
    ]
    assert _stored_state(settings) == (0, 0, [])


def test_no_file_is_refused_with_a_code(clinician_client, settings):
    response = clinician_client.post(URL, _fields(), **XHR)
    assert response.status_code == 400
    assert response.json()["code"] == "no_files"
    assert _stored_state(settings) == (0, 0, [])


def test_invalid_fields_are_reported_per_field(clinician_client, settings):
    response = clinician_client.post(
        URL,
        _fields(patient_ref="Jane Doe", body_part="brain", images=[_upload("x.png", b"")]),
        **XHR,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_form"
    assert set(body["fields"]) == {"patient_ref", "body_part"}
    assert _stored_state(settings) == (0, 0, [])


def test_form_post_without_javascript_shows_errors_on_the_page(clinician_client, settings):
    response = clinician_client.post(
        URL, _fields(images=[_upload("evil.png", builders.elf_binary(), "image/png")])
    )
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"evil.png: Unsupported file type" in response.content
    assert Case.objects.count() == 0


# --- accepted inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("good", builders.GOOD_INPUTS, ids=lambda good: good.id)
def test_good_upload_is_stored_canonical(
    good, clinician, client_for, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = client_for(clinician).post(
            URL, _fields(images=[_upload(good.filename, good.build(), good.content_type)]), **XHR
        )
    assert response.status_code == 201, response.content
    case = Case.objects.get()
    assert response.json() == {
        "uuid": str(case.uuid),
        "status": "received",
        "url": reverse("diagnosis:case_detail", args=[case.uuid]),
    }
    assert case.created_by == clinician
    assert len(callbacks) == 2  # after commit: the files are published, predictions requested
    image = case.images.get()
    assert GENERATED_PNG.match(image.file.name)
    # Before the commit the file is staged: nothing under its final name yet.
    media = Path(settings.MEDIA_ROOT)
    # DICOM and 16-bit PNG also keep their full-depth values; 8-bit PNG and JPEG do not.
    stored_names = [n for n in (image.file.name, image.depth_file.name) if n]
    assert bool(image.depth_file) is (good.source_format == "dicom" or good.id == "png-16bit")
    assert builders.files_under(media) == sorted(media / "staging" / n for n in stored_names)
    callbacks[0]()
    assert image.source_format == good.source_format
    assert image.original_name == good.filename
    assert not image.original_file
    with image.file.open("rb") as handle:
        stored = handle.read()
    arr = builders.decode_canonical(stored)
    assert (image.width, image.height) == (arr.shape[1], arr.shape[0])
    good.check(arr, _StoredView(image, stored))
    assert builders.files_under(settings.MEDIA_ROOT) == sorted(media / n for n in stored_names)


class _StoredView:
    """The stored row seen through the attributes the checks read from a CanonicalImage."""

    def __init__(self, image: XrayImage, png_bytes: bytes) -> None:
        self.width, self.height = image.width, image.height
        self.bit_depth = image.source_bit_depth
        self.dicom_metadata = image.dicom_metadata
        self.png_bytes = png_bytes


def test_dicom_with_phi_is_stored_deidentified(clinician, clinician_client, settings):
    settings.KEEP_ORIGINAL_UPLOADS = True
    data = builders.dicom_with_phi()
    response = clinician_client.post(
        URL, _fields(images=[_upload("Doe_Jane.dcm", data, "application/dicom")]), **XHR
    )
    assert response.status_code == 201
    image = XrayImage.objects.get()
    assert re.match(r"^originals/\d{4}/\d{2}/[0-9a-f]{32}\.dcm$", image.original_file.name)
    with image.original_file.open("rb") as handle:
        original = handle.read()
    assert original[:128] == b"\x00" * 128
    for secret in (b"Doe^Jane", b"<script>", b"MRN-0042", b"private-secret", b"PHI-IN-PREAMBLE"):
        assert secret not in original
    ds = pydicom.dcmread(io.BytesIO(original))
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName) == ""
    assert not [elem for elem in ds.iterall() if elem.tag.is_private]
    assert "PatientName" not in image.dicom_metadata
    assert image.dicom_metadata["PatientIdentityRemoved"] == "YES"
    # Nothing of the patient's name reached the database.
    for row in (Case.objects.values_list("patient_ref", "clinical_question").get(),):
        assert "Doe" not in " ".join(row)
    assert not AuditEvent.objects.filter(extra__icontains="Doe").exists()


def test_originals_are_never_served(clinician, clinician_client, settings):
    settings.KEEP_ORIGINAL_UPLOADS = True
    clinician_client.post(
        URL, _fields(images=[_upload("x.jpg", builders.exif_rotated_jpeg(), "image/jpeg")]), **XHR
    )
    image = XrayImage.objects.get()
    response = clinician_client.get(
        reverse("diagnosis:image_file", args=[image.case.uuid, image.pk])
    )
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\x89PNG")
    with image.original_file.open("rb") as handle:
        assert handle.read() != body


@pytest.mark.parametrize(
    ("name", "display"),
    [
        ("../../etc/passwd", "passwd"),
        ("x.php%00.jpg", "x.php%00.jpg"),
        ("a" * 300 + ".jpg", "a" * 116 + ".jpg"),
        ("x\x00.php.jpg", "x.php.jpg"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
    ],
    ids=["traversal", "percent-nul", "300-chars", "nul", "rtl-override"],
)
def test_hostile_filenames_are_stored_under_generated_names(
    name, display, clinician_client, settings
):
    response = clinician_client.post(
        URL, _fields(images=[_upload(name, builders.progressive_jpeg(), "image/jpeg")]), **XHR
    )
    assert response.status_code == 201, response.content
    image = XrayImage.objects.get()
    assert GENERATED_PNG.match(image.file.name)
    assert image.original_name == display
    media = Path(settings.MEDIA_ROOT)
    assert builders.files_under(media) == [media / image.file.name]
    assert not (media.parent / "etc").exists()


def test_several_images_keep_their_order(clinician_client):
    files = [
        _upload("first.png", builders.palette_png(), "image/png"),
        _upload("second.jpg", builders.progressive_jpeg(), "image/jpeg"),
        _upload("third.dcm", builders.dicom_12bit_windowed(), "application/dicom"),
    ]
    response = clinician_client.post(URL, _fields(images=files), **XHR)
    assert response.status_code == 201
    images = list(Case.objects.get().images.order_by("position"))
    assert [(i.position, i.original_name) for i in images] == [
        (0, "first.png"),
        (1, "second.jpg"),
        (2, "third.dcm"),
    ]
    assert len({i.file.name for i in images}) == 3


def test_form_post_redirects_to_the_case_and_is_audited(clinician, clinician_client):
    response = clinician_client.post(
        URL,
        _fields(urgent="on", images=[_upload("x.jpg", builders.progressive_jpeg(), "image/jpeg")]),
    )
    case = Case.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnosis:case_detail", args=[case.uuid])
    assert case.urgent is True
    assert case.status == Case.Status.RECEIVED
    event = AuditEvent.objects.get(action="case.create", outcome="success")
    assert (event.actor_id, event.object_id, event.ip) == (
        clinician.pk,
        str(case.uuid),
        "127.0.0.1",
    )


def test_a_stale_form_key_for_another_patient_is_refused(clinician_client):
    data = _fields(idempotency_key="form-key-2")
    data["images"] = [_upload("x.jpg", builders.progressive_jpeg(), "image/jpeg")]
    assert clinician_client.post(URL, data, **XHR).status_code == 201
    data.update(patient_ref="PSN-OTHER", images=[_upload("y.jpg", builders.progressive_jpeg())])
    response = clinician_client.post(URL, data, **XHR)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Case.objects.count() == 1


def test_resubmitting_the_same_form_creates_one_case(clinician_client):
    data = _fields(idempotency_key="form-key-1")
    for _ in range(2):
        data["images"] = [_upload("x.jpg", builders.progressive_jpeg(), "image/jpeg")]
        response = clinician_client.post(URL, data, **XHR)
        assert response.status_code == 201
    assert Case.objects.count() == 1
    assert XrayImage.objects.count() == 1


def test_real_radiographs_from_samples(clinician_client, sample_paths):
    files = [_upload(p.name, p.read_bytes(), "image/jpeg") for p in sample_paths[:3]]
    response = clinician_client.post(URL, _fields(images=files), **XHR)
    assert response.status_code == 201
    assert Case.objects.get().images.count() == 3


# --- access, CSRF, page ------------------------------------------------------------------------------


def test_page_renders_with_the_form(clinician_client):
    response = clinician_client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert 'enctype="multipart/form-data"' in content
    assert "js/intake.js" in content
    assert "Never a name" in content
    assert 'name="idempotency_key"' in content
    assert "no-store" in response["Cache-Control"]  # back navigation fetches a fresh key
    assert f'href="{URL}"' in content  # the nav link


def test_nav_link_only_for_users_who_may_add_cases(client_for, db):
    nobody = factories.UserFactory(username="no_role")
    assert (
        f'href="{URL}"'.encode()
        not in client_for(nobody).get(reverse("diagnosis:case_list")).content
    )


def test_anonymous_is_sent_to_login(client, db):
    response = client.post(URL, _fields(images=[_upload("x.png", builders.palette_png())]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert Case.objects.count() == 0


def test_user_without_add_case_is_refused(client_for, db, settings):
    nobody = factories.UserFactory(username="no_role")
    client = client_for(nobody)
    assert client.get(URL).status_code == 403
    response = client.post(URL, _fields(images=[_upload("x.png", builders.palette_png())]), **XHR)
    assert response.status_code == 403
    assert _stored_state(settings) == (0, 0, [])


def test_csrf_is_enforced(clinician):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    data = _fields(images=[_upload("x.png", builders.palette_png(), "image/png")])
    assert client.post(URL, data, **XHR).status_code == 403
    assert Case.objects.count() == 0
    page = client.get(URL)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1)
    data = _fields(images=[_upload("x.png", builders.palette_png(), "image/png")])
    data["csrfmiddlewaretoken"] = token.decode()
    assert client.post(URL, data, **XHR).status_code == 201


# --- the image file view -----------------------------------------------------------------------------


@pytest.fixture
def stored_image(clinician_client) -> XrayImage:
    response = clinician_client.post(
        URL, _fields(images=[_upload("x.jpg", builders.progressive_jpeg(), "image/jpeg")]), **XHR
    )
    assert response.status_code == 201
    return XrayImage.objects.select_related("case").get()


def test_owner_gets_the_canonical_png(stored_image, clinician, clinician_client):
    url = reverse("diagnosis:image_file", args=[stored_image.case.uuid, stored_image.pk])
    response = clinician_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, no-store"
    assert response["Content-Disposition"] == f'inline; filename="image-{stored_image.pk}.png"'
    arr = builders.decode_canonical(b"".join(response.streaming_content))
    assert arr.shape == (48, 64)
    assert np.abs(arr.astype(int) - builders.gradient().astype(int)).max() <= 8
    event = AuditEvent.objects.get(action="image.view")
    assert (event.actor_id, event.object_type, event.object_id) == (
        clinician.pk,
        "xrayimage",
        str(stored_image.pk),
    )


def test_image_file_access(stored_image, clinician_b, radiologist, client_for, client):
    url = reverse("diagnosis:image_file", args=[stored_image.case.uuid, stored_image.pk])
    assert client_for(clinician_b).get(url).status_code == 404
    assert client_for(radiologist).get(url).status_code == 200
    assert client.get(url).status_code == 302
    other = factories.CaseFactory(created_by=clinician_b)
    wrong_case = reverse("diagnosis:image_file", args=[other.uuid, stored_image.pk])
    assert client_for(clinician_b).get(wrong_case).status_code == 404
    missing = reverse("diagnosis:image_file", args=[stored_image.case.uuid, stored_image.pk + 999])
    assert client_for(radiologist).get(missing).status_code == 404
    assert client_for(radiologist).post(url).status_code == 405


# --- the page in a real browser ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_upload_with_drop_errors_removal_and_redirect(live_server, monkeypatch, tmp_path):
    """Headless Chromium: files are chosen and dropped, shown with thumbnails, a bad file gets its
    own error from the server, is removed, and the upload then redirects to the case page."""
    import base64

    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop shares the thread
    user = factories.ClinicianFactory(username="browser_clinician")
    login = Client()
    login.force_login(user)
    good = tmp_path / "good.jpg"
    good.write_bytes(builders.progressive_jpeg())
    bad = tmp_path / "bad.png"
    bad.write_bytes(builders.html_page())
    dropped = base64.b64encode(builders.palette_png()).decode()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context()
            context.add_cookies(
                [
                    {
                        "name": "sessionid",
                        "value": login.cookies["sessionid"].value,
                        "url": live_server.url,
                    }
                ]
            )
            page = context.new_page()
            console_errors: list[str] = []
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.goto(live_server.url + URL)
            page.fill("#id_patient_ref", "PSN-BROWSER-1")
            page.select_option("#id_body_part", "leg")
            page.fill("#id_clinical_question", "Ankle injury")
            page.set_input_files("input[name=images]", [str(good), str(bad)])
            page.evaluate(
                """(b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const transfer = new DataTransfer();
                    transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                    document.getElementById("dropzone").dispatchEvent(
                        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
                }""",
                dropped,
            )
            items = page.locator(".file-item")
            assert items.count() == 3
            # Thumbnails for the two pictures; bad.png cannot be shown and gets a text badge.
            expect(page.locator("img.thumb")).to_have_count(2)

            page.click("#submit-button")
            error = items.nth(1).locator(".file-error")
            error.wait_for(state="visible")
            expect(page.locator(".file-item.has-error")).to_have_count(1)
            assert "unsupported_format" in error.inner_text()
            assert page.eval_on_selector("#upload-progress", "el => el.value") == 100
            assert Case.objects.count() == 0

            items.nth(1).locator("button.remove").click()
            assert items.count() == 2
            page.click("#submit-button")
            page.wait_for_url("**/cases/*-*/", timeout=30_000)
            case = Case.objects.get()
            assert page.url.endswith(reverse("diagnosis:case_detail", args=[case.uuid]))
            assert (case.patient_ref, case.body_part) == ("PSN-BROWSER-1", "leg")
            assert [i.original_name for i in case.images.order_by("position")] == [
                "good.jpg",
                "dropped.png",
            ]
            assert not [text for text in console_errors if "Content Security Policy" in text]
        finally:
            browser.close()


def test_phi_is_never_logged_nor_echoed(clinician_client, caplog):
    caplog.set_level("DEBUG")
    good = builders.dicom_with_phi()
    broken = builders.dicom_with_phi()
    broken = broken[: broken.index(b"\xe0\x7f\x10\x00")] + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff"
    truncated_pixels = _upload("Doe_Jane.dcm", broken, "application/dicom")
    rejected = clinician_client.post(URL, _fields(images=[truncated_pixels]), **XHR)
    assert rejected.status_code == 400
    accepted = clinician_client.post(
        URL, _fields(images=[_upload("scan.dcm", good, "application/dicom")]), **XHR
    )
    assert accepted.status_code == 201
    for secret in ("Doe^Jane", "MRN-0042", "19700101", "Secret Street", "private-secret"):
        assert secret not in caplog.text
        assert secret not in rejected.content.decode()


def test_sample_dicom_with_pixel_spacing_is_accepted(clinician_client):
    """samples/ ships one DICOM radiograph (12 bits stored, illustrative pixel spacing) for the
    demo and the viewer's distance tool."""
    path = next(Path(__file__).resolve().parents[3].joinpath("samples").glob("*.dcm"))
    files = [_upload(path.name, path.read_bytes(), "application/dicom")]
    response = clinician_client.post(URL, _fields(images=files), **XHR)
    assert response.status_code == 201, response.content
    image = Case.objects.get().images.get()
    assert image.source_format == XrayImage.SourceFormat.DICOM
    assert image.source_bit_depth == 12
    assert [float(v) for v in image.dicom_metadata["PixelSpacing"]] == [0.35, 0.35]
    assert "WindowCenter" in image.dicom_metadata


def test_a_1000_character_file_name_is_refused_for_that_reason(clinician_client, settings):
    """Django refuses a multipart part whose headers pass 1024 bytes; the page said "The upload
    could not be read." (issue 12, point 5)."""
    body, content_type = builders.multipart_body(
        {**_fields(), "csrfmiddlewaretoken": "x"},
        file_name="x" * 996 + ".png",
        data=builders.palette_png(),
    )
    response = clinician_client.post(URL, body, content_type=content_type, **XHR)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "file_name_too_long"
    assert "file name is too long" in answer["message"]
    assert _stored_state(settings) == (0, 0, [])
