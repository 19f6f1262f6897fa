"""The review screen's viewer in a real browser: window/level and invert change the pixels,
the heat-map toggles and fades, zoom and pan move the image, images switch, a missing decision
blocks the save, and the page runs under the Content-Security-Policy without errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from diagnosis.models import AuditEvent, Case, Review
from diagnosis.services.reviews import review_claim
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, watch_errors

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery-9"


def _png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _radiograph(sample_path) -> tuple[bytes, int, int]:
    with Image.open(sample_path) as img:
        gray = np.asarray(img.convert("L"))
    return _png(gray, "L"), gray.shape[1], gray.shape[0]


def _heatmap(width: int, height: int) -> bytes:
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[height // 3 : height // 2, width // 3 : width // 2] = (255, 0, 0, 255)
    return _png(rgba, "RGBA")


@pytest.fixture
def two_image_case(transactional_db, sample_paths):
    version = factories.ModelVersionFactory(version="viewer-test")
    case = factories.CaseFactory(status=Case.Status.PREDICTED, priority=3.0)
    for position, path in enumerate(sample_paths[:2]):
        data, width, height = _radiograph(path)
        image = factories.XrayImageFactory(
            case=case,
            position=position,
            file=ContentFile(data, name=f"viewer-{position}.png"),
            width=width,
            height=height,
        )
        prediction = factories.PredictionFactory(
            image=image, model_version=version, probability=0.7 - 0.5 * position
        )
        prediction.label = "fractured" if position == 0 else "not_fractured"
        prediction.heatmap.save(
            f"heatmaps/viewer-{prediction.pk}.png", ContentFile(_heatmap(width, height))
        )
        prediction.save()
    return case


def _pixel(page, x: float = 0.5, y: float = 0.5) -> int:
    return page.evaluate(
        """([fx, fy]) => {
            const c = document.getElementById('viewer-canvas');
            return c.getContext('2d').getImageData(Math.floor(c.width * fx), Math.floor(c.height * fy), 1, 1).data[0];
        }""",
        [x, y],
    )


def test_viewer_tools(live_server, two_image_case, browser, screenshots, settings):
    settings.REVIEW_CLAIM_TTL_SECONDS = 6  # the screen renews an active reader's claim every 2 s
    case = two_image_case
    reader = factories.RadiologistFactory(username="rad_viewer")
    review_claim(case=case, user=reader)

    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, reader.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.wait_for_selector("#viewer-heatmap:not([hidden])")

    # Invert: a pixel v becomes 255 - v; invert again restores it.
    original = _pixel(page)
    page.locator("#viewer").focus()
    page.keyboard.press("i")
    page.wait_for_selector("#viewer-status:has-text('inverted')")
    assert _pixel(page) == 255 - original
    page.keyboard.press("i")
    page.wait_for_timeout(100)
    assert _pixel(page) == original

    # Window/level: a narrow window centred below the pixel value saturates it to white.
    page.locator("#wl-window").fill("10")
    page.locator("#wl-level").fill(str(max(0, original - 20)))
    page.wait_for_timeout(150)
    assert _pixel(page) == 255
    page.locator("#wl-window").fill("255")
    page.locator("#wl-level").fill("128")
    page.wait_for_timeout(150)

    # Heat-map: opacity slider and toggle (H).
    page.locator("#heatmap-opacity").fill("80")
    assert page.locator("#viewer-heatmap").evaluate("el => el.style.opacity") == "0.8"
    page.keyboard.press("h")
    assert page.locator("#viewer-heatmap").is_hidden()
    assert page.locator("#heatmap-toggle").get_attribute("aria-pressed") == "false"
    page.keyboard.press("h")
    assert page.locator("#viewer-heatmap").is_visible()

    # Zoom with the wheel and pan by dragging: the stage grows and moves.
    stage = page.locator("#viewer-stage")
    before = stage.bounding_box()
    viewer = page.locator("#viewer").bounding_box()
    page.mouse.move(viewer["x"] + viewer["width"] / 2, viewer["y"] + viewer["height"] / 2)
    page.mouse.wheel(0, -600)
    page.wait_for_timeout(100)
    zoomed = stage.bounding_box()
    assert zoomed["width"] > before["width"] * 1.5
    page.mouse.down()
    page.mouse.move(
        viewer["x"] + viewer["width"] / 2 + 80, viewer["y"] + viewer["height"] / 2, steps=4
    )
    page.mouse.up()
    moved = stage.bounding_box()
    assert moved["x"] == pytest.approx(zoomed["x"] + 80, abs=2)
    page.keyboard.press("0")
    assert stage.bounding_box()["width"] == pytest.approx(before["width"], rel=0.01)
    screenshots(page, "viewer-image-1")

    # Decide image 1, leave image 2 undecided: saving switches to image 2 and explains.
    page.keyboard.press("c")
    page.click("#save")
    error = page.locator("#form-error")
    assert error.is_visible()
    assert "Image 2" in error.inner_text()
    panels = page.locator(".image-panel")
    assert "inactive" in (panels.nth(0).get_attribute("class") or "")
    assert "inactive" not in (panels.nth(1).get_attribute("class") or "")
    assert not Review.objects.filter(image__case=case).exists()

    # "[" and "]" switch images; each keeps its own decision.
    page.keyboard.press("[")
    assert (
        page.locator(".image-panel").nth(0).locator('input[data-decision="confirm"]').is_checked()
    )
    page.keyboard.press("]")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.keyboard.press("x")
    screenshots(page, "viewer-image-2")
    # The screen renews an active reader's claim in the background (every 2 s here); keep the
    # reader active until one renewal has landed, however fast the steps above ran.
    for _ in range(40):
        if AuditEvent.objects.filter(
            action="review.claim", object_id=str(case.uuid), extra__renewed=True
        ).exists():
            break
        page.mouse.wheel(0, 0)
        page.wait_for_timeout(250)
    page.click("#save")
    page.wait_for_url(f"**{reverse('review:queue')}")
    reads = {
        r.image.position: r for r in Review.objects.filter(image__case=case).select_related("image")
    }
    assert reads[0].decision == "confirm"
    assert reads[0].final_label == "fractured"
    assert reads[1].decision == "correct"
    assert reads[1].final_label == "fractured"
    assert errors == [], errors
    # While the reader worked, the screen renewed the claim in the background.
    assert AuditEvent.objects.filter(
        action="review.claim", object_id=str(case.uuid), extra__renewed=True
    ).exists()
    context.close()
