"""Accessibility in a real browser (issue #16): axe-core (vendored under tests/browser/vendor,
tests only) runs on every page of every role, with zero serious or critical violations allowed;
the top bar wraps on a phone; and a whole review can be done with the keyboard alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from diagnosis.models import Case, Review, TrainingRun
from diagnosis.services.reviews import ImageRead, review_claim, review_submit
from diagnosis.tests import factories
from tests.browser.conftest import sign_in, watch_errors
from tests.browser.test_review_viewer import two_image_case  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct-horse-battery-9"
AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")
BLOCKING = ("serious", "critical")


def axe_violations(page) -> list[str]:
    """Run axe-core on the page (WCAG 2.0/2.1 A and AA rules and best practices); the serious and
    critical violations as readable lines. The bundle is injected through the DevTools protocol
    (page.evaluate), which the page's Content-Security-Policy does not govern."""
    if not page.evaluate("() => !!window.axe"):
        page.evaluate(AXE)
    result = page.evaluate(
        """() => axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}
        }).then(r => r.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').slice(0, 160))
        })))"""
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} -> {v['nodes']}"
        for v in result
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def world(two_image_case, settings):  # noqa: F811
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    settings.SECOND_READ_RANDOM_PERCENT = 0.0
    clinician = factories.ClinicianFactory(username="clin_axe", first_name="Cleo", last_name="Lin")
    reader = factories.RadiologistFactory(username="rad_axe", first_name="Ray", last_name="Dio")
    other = factories.RadiologistFactory(username="rad_axe2", first_name="Ola", last_name="Two")
    admin = factories.AdminFactory(username="admin_axe", first_name="Ada", last_name="Min")
    Case.objects.filter(pk=two_image_case.pk).update(created_by=clinician)
    # A reviewed case with a box, for the case page's final reading.
    reviewed = factories.CaseFactory(created_by=clinician, status=Case.Status.PREDICTED)
    source = two_image_case.images.order_by("position").first()
    image = factories.XrayImageFactory(
        case=reviewed, file=source.file, width=source.width, height=source.height
    )
    factories.PredictionFactory(
        image=image,
        probability=0.2,
        label="not_fractured",
        labels={"balanced": "not_fractured", "high_sensitivity": "fractured"},
        model_version=two_image_case.images.first().predictions.first().model_version,
    )
    review_claim(case=reviewed, user=other)
    review_submit(
        case=reviewed,
        user=other,
        reads=[
            ImageRead(
                image_id=image.pk,
                decision="correct",
                boxes=[{"x": 0.2, "y": 0.2, "w": 0.2, "h": 0.2}],
            )
        ],
    )
    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL, status="failed")
    return {
        "clinician": clinician,
        "reader": reader,
        "admin": admin,
        "case": two_image_case,
        "reviewed": reviewed,
        "run": run,
    }


def _pages(world) -> dict[str, list[str]]:
    case = world["case"]
    reviewed = world["reviewed"]
    version = case.images.first().predictions.first().model_version
    detail = lambda c: reverse("diagnosis:case_detail", kwargs={"case_uuid": c.uuid})  # noqa: E731
    common = [
        reverse("diagnosis:case_list"),
        reverse("review:notifications"),
        reverse("tokens:token_list"),
    ]
    return {
        "clinician": [*common, reverse("diagnosis:case_new"), detail(case), detail(reviewed)],
        "reader": [
            *common,
            reverse("review:queue"),
            reverse("review:statistics"),
            reverse("review:case", kwargs={"case_uuid": case.uuid}),
            reverse("review:case", kwargs={"case_uuid": reviewed.uuid}),
            detail(reviewed),
        ],
        "admin": [
            *common,
            reverse("registry:index"),
            reverse("registry:version_detail", kwargs={"version_id": version.pk}),
            reverse("registry:run_detail", kwargs={"run_id": world["run"].pk}),
            reverse("admin:index"),
            reverse("admin:auth_user_changelist") if _has_admin("auth_user_changelist") else "",
            reverse("admin:auth_user_change", args=[world["clinician"].pk])
            if _has_admin("auth_user_change", [world["clinician"].pk])
            else "",
            reverse("admin:diagnosis_case_changelist"),
        ],
    }


def _has_admin(name: str, args=None) -> bool:
    from django.urls import NoReverseMatch

    try:
        reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return False
    return True


def test_every_page_of_every_role_has_no_serious_axe_violations(live_server, world, browser):
    review_claim(case=world["case"], user=world["reader"])
    problems: dict[str, list[str]] = {}
    checked = 0
    for role, urls in _pages(world).items():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = watch_errors(page)
        sign_in(page, live_server.url, world[role].username, PASSWORD)
        for url in [u for u in urls if u]:
            page.goto(f"{live_server.url}{url}")
            page.wait_for_load_state("load")
            if page.locator("#viewer").count():
                page.wait_for_selector("#viewer[data-loaded='1']")
            assert errors == [], (url, errors)
            found = axe_violations(page)
            errors.clear()  # axe's own probes (e.g. inline styles the CSP refuses) are not the page's
            checked += 1
            if found:
                problems[f"{role} {url}"] = found
        context.close()
    # The sign-in page, anonymous.
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}{reverse('login')}")
    if found := axe_violations(page):
        problems["anonymous login"] = found
    context.close()
    assert checked >= 20
    assert problems == {}, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in problems.items())


def test_top_bar_wraps_on_a_phone_and_wide_tables_stay_in_the_page(live_server, world, browser):
    for username, width, url in (
        (world["clinician"].username, 375, reverse("diagnosis:case_list")),
        (world["admin"].username, 768, reverse("registry:index")),
        (world["admin"].username, 1280, reverse("review:statistics")),
    ):
        context = browser.new_context(viewport={"width": width, "height": 800})
        page = context.new_page()
        sign_in(page, live_server.url, username, PASSWORD)
        page.goto(f"{live_server.url}{url}")
        links = page.locator(".topbar a, .topbar button")
        for i in range(links.count()):
            box = links.nth(i).bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width + 1, (width, links.nth(i).inner_text())
        widest = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""
        )
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width, (url, widest)
        context.close()


def test_a_whole_review_with_the_keyboard_alone(live_server, world, browser, screenshots):
    case = world["case"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live_server.url, world["reader"].username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('review:queue')}")

    def tab_to(predicate: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(predicate):
                return
        raise AssertionError(f"no focusable element matches {predicate}")

    # Tab to the case's Claim button; Enter claims it and opens the review screen.
    tab_to(f"() => document.activeElement.matches('tr[data-case=\"{case.uuid}\"] button.claim')")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{reverse('review:case', kwargs={'case_uuid': case.uuid})}")
    page.wait_for_selector("#viewer[data-loaded='1']")
    # Image 1: tab to its decision and choose with the arrow keys/space; image 2: shortcuts.
    tab_to("() => document.activeElement.matches('input[data-decision]')")
    page.keyboard.press("Space")
    assert page.locator("input[data-decision]:checked").count() == 1
    page.keyboard.press("]")
    page.wait_for_selector("#viewer[data-loaded='1']")
    page.locator("body").press("x")  # shortcuts act from anywhere but text fields
    assert page.locator(".thumb-done").count() == 2
    # Release asks first; Escape keeps the claim.
    tab_to("() => document.activeElement.id === 'release'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    tab_to("() => document.activeElement.id === 'save'", limit=40)
    screenshots(page, "keyboard-review")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{reverse('review:queue')}")
    assert Review.objects.filter(image__case=case, read_number=1).count() == 2
    assert errors == [], errors
    context.close()
