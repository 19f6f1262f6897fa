"""Full-depth viewing in a real browser (reading issue, point 4): the review screen windows the
sample DICOM's 12-bit values, starting from the file's own window (shown in the file's values,
pixels as the 8-bit canonical shows them), presets and drag-to-window work on the real values,
invert flips them, a JPEG falls back to the 8-bit display, a MONOCHROME1 image shows low values
bright as its canonical does, and the page's 16-bit PNG decoder reads every PNG row filter
exactly."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from diagnosis.models import Case
from diagnosis.services.cases import case_create
from diagnosis.tests import factories
from diagnosis.tests.imaging import builders
from tests.browser.conftest import sign_in, wait_for_js, watch_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery-9"
POINTS = [(0.5, 0.5), (0.3, 0.6), (0.7, 0.4), (0.45, 0.25)]


@pytest.fixture
def dicom_case(transactional_db, sample_jpeg_bytes):
    path = next(builders.SAMPLES_DIR.glob("*.dcm"))
    clinician = factories.ClinicianFactory(username="clin_depth")
    case = case_create(
        user=clinician,
        patient_ref="REF-DEPTH",
        body_part="hand",
        clinical_question="",
        files=[
            SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/dicom"),
            SimpleUploadedFile("x.jpg", sample_jpeg_bytes, content_type="image/jpeg"),
        ],
    )
    Case.objects.filter(pk=case.pk).update(status=Case.Status.PREDICTED)
    return case, pydicom.dcmread(path).pixel_array.astype(np.float64)


def _windowed(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear window, 0..255."""
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(np.rint(out), 0, 255)


def _pixels(page) -> list[int]:
    return page.evaluate(
        """(points) => {
            const c = document.getElementById('viewer-canvas');
            const ctx = c.getContext('2d');
            return points.map(([fx, fy]) =>
                ctx.getImageData(Math.floor(c.width * fx), Math.floor(c.height * fy), 1, 1).data[0]);
        }""",
        POINTS,
    )


def _expected(values: np.ndarray, centre: float, width: float) -> list[float]:
    rows, cols = values.shape
    out = _windowed(values, centre, width)
    return [float(out[int(rows * fy), int(cols * fx)]) for fx, fy in POINTS]


def _readout(page) -> str:
    return page.locator("#wl-readout").inner_text()


def test_full_depth_windowing_on_the_sample_dicom(live_server, dicom_case, browser, screenshots):
    case, values = dicom_case
    reader = factories.RadiologistFactory(username="rad_depth")
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    wait_for_js(page, "() => document.getElementById('viewer').dataset.depth === '1'")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('Full')")

    # The file's window (WindowCenter 1424, WindowWidth 2775), shown in the file's values; the
    # sliders range over the values present (0..3829); the pixels are those of that window.
    assert "level 1424 · window 2775" in _readout(page)
    assert "file values" in _readout(page)
    assert "level 1424" in page.locator("#viewer-status").inner_text()
    assert page.locator("#wl-level").get_attribute("max") == "3829"
    assert page.locator("#wl-level").input_value() == "1424"
    assert page.locator("#wl-window").input_value() == "2775"
    assert _pixels(page) == pytest.approx(_expected(values, 1424, 2775), abs=1)
    screenshots(page, "file-window")

    # Full range: the values present, 0..3829.
    page.select_option("#wl-preset", label="Full range")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('3830')")
    assert "level 1915 · window 3830" in _readout(page)
    assert page.locator("#wl-level").input_value() == "1915"
    assert _pixels(page) == pytest.approx(_expected(values, 1915, 3830), abs=1)

    # Bone: a narrower window on the real values; every pixel follows it.
    page.select_option("#wl-preset", label="Bone (high contrast)")
    wait_for_js(page, "() => !document.getElementById('wl-readout').textContent.includes('3830')")
    level = float(page.locator("#wl-level").input_value())
    width = float(page.locator("#wl-window").input_value())
    assert width < 2775
    assert f"level {level:.0f} · window {width:.0f}" in _readout(page)
    bone = _pixels(page)
    assert bone == pytest.approx(_expected(values, level, width), abs=1)
    screenshots(page, "bone")

    # Drag-to-window: right widens the window, in steps of the file's values.
    page.locator("#viewer").focus()
    page.keyboard.press("w")
    box = page.locator("#viewer-stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5 + 40, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.up()
    dragged = float(page.locator("#wl-window").input_value())
    assert dragged > width + 300  # 40 screen pixels: about 600 of the 3830 values
    page.keyboard.press("w")

    # Invert flips the windowed values.
    page.select_option("#wl-preset", label="Bone (high contrast)")
    wait_for_js(
        page,
        "(w) => Number(document.getElementById('wl-window').value) === w",
        width,
    )
    page.keyboard.press("i")
    page.wait_for_selector("#viewer-status:has-text('inverted')")
    assert _pixels(page) == pytest.approx([255 - v for v in bone], abs=1)
    page.keyboard.press("i")

    # Image 2 is a JPEG: the 8-bit display, 0-255 sliders.
    page.keyboard.press("]")
    page.wait_for_selector("#viewer[data-loaded='1']")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('8-bit')")
    assert page.evaluate("() => document.getElementById('viewer').dataset.depth") is None
    assert page.locator("#wl-level").get_attribute("max") == "255"
    assert "level 128 · window 255" in _readout(page)
    # And back: the DICOM starts again from its file window.
    page.keyboard.press("[")
    wait_for_js(page, "() => document.getElementById('viewer').dataset.depth === '1'")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('1424')")
    assert errors == [], errors
    context.close()


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _png16_every_filter(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG whose rows use the five filter types in turn (0 none, 1 sub, 2 up,
    3 average, 4 Paeth), split over two IDAT chunks."""
    height, width = values.shape
    data = values.astype(">u2").tobytes()
    stride = width * 2
    out = bytearray()
    prev = bytes(stride)
    for y in range(height):
        row = data[y * stride : (y + 1) * stride]
        kind = y % 5
        out.append(kind)
        for i in range(stride):
            left = row[i - 2] if i >= 2 else 0
            up = prev[i]
            upper_left = prev[i - 2] if i >= 2 else 0
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, upper_left))[kind]
            out.append((row[i] - predictor) & 255)
        prev = row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    compressed = zlib.compress(bytes(out))
    half = len(compressed) // 2
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
        + chunk(b"IDAT", compressed[:half])
        + chunk(b"IDAT", compressed[half:])
        + chunk(b"IEND", b"")
    )


def test_the_viewer_decodes_16_bit_png_exactly(live_server, browser, transactional_db):
    values = np.random.default_rng(7).integers(0, 65536, (23, 17)).astype(np.uint16)
    values[0, 0], values[-1, -1] = 0, 65535
    png = _png16_every_filter(values)
    with Image.open(io.BytesIO(png)) as im:  # the reference decoder agrees with the encoder
        assert np.array_equal(np.asarray(im), values)
    reader = factories.RadiologistFactory(username="rad_decode")
    context = browser.new_context()
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    case = factories.CaseFactory(status=Case.Status.PREDICTED)
    factories.XrayImageFactory(case=case)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    decoded = page.evaluate(
        """async (b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const image = await window.FractureViewer.decodePng16(bytes.buffer);
            return [image.width, image.height, Array.from(image.samples)];
        }""",
        base64.b64encode(png).decode(),
    )
    assert decoded[:2] == [17, 23]
    assert decoded[2] == values.ravel().tolist()
    # A damaged file is refused with a reason, never shown wrong.
    refused = page.evaluate(
        """async (b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            try { await window.FractureViewer.decodePng16(bytes.buffer); return 'decoded'; }
            catch (err) { return String(err.message); }
        }""",
        base64.b64encode(png[:60]).decode(),
    )
    assert refused == "truncated PNG"
    assert errors == [], errors
    context.close()


def test_monochrome1_full_depth_shows_what_the_canonical_shows(
    live_server, browser, transactional_db
):
    """A MONOCHROME1 DICOM: low values are bright. At the file's window the full-depth picture is
    the 8-bit canonical's (inverted at upload), and invert flips it back."""
    rng = np.random.default_rng(11)
    values = np.add.outer(np.arange(120) * 20, np.arange(160) * 10) + rng.integers(
        0, 50, (120, 160)
    )
    ds = builders.dicom_dataset(values.astype(np.uint16), bits_stored=12, window=(1800, 2400))
    ds.PhotometricInterpretation = "MONOCHROME1"
    clinician = factories.ClinicianFactory(username="clin_mono1")
    case = case_create(
        user=clinician,
        patient_ref="REF-MONO1",
        body_part="hand",
        clinical_question="",
        files=[SimpleUploadedFile("m1.dcm", builders.dicom_bytes(ds))],
    )
    Case.objects.filter(pk=case.pk).update(status=Case.Status.PREDICTED)
    image = case.images.get()
    assert image.depth_params["invert"] is True
    with image.file.open("rb") as fh:
        canonical = builders.decode_canonical(fh.read()).astype(float)
    rows, cols = canonical.shape
    expected = [canonical[int(rows * fy), int(cols * fx)] for fx, fy in POINTS]

    reader = factories.RadiologistFactory(username="rad_mono1")
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    wait_for_js(page, "() => document.getElementById('viewer').dataset.depth === '1'")
    wait_for_js(page, "() => document.getElementById('wl-readout').textContent.includes('1800')")
    assert "level 1800 · window 2400" in _readout(page)
    assert _pixels(page) == pytest.approx(expected, abs=1)
    page.locator("#viewer").focus()
    page.keyboard.press("i")
    page.wait_for_selector("#viewer-status:has-text('inverted')")
    assert _pixels(page) == pytest.approx([255 - v for v in expected], abs=1)
    assert errors == [], errors
    context.close()
