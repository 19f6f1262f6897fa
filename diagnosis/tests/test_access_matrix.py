"""Role x object x method access matrix for the server-rendered pages and the admin.

Every row of ENDPOINTS is one URL and HTTP method, with the status each actor must get:

    anonymous        not signed in
    owner            clinician A, who created `world.case`
    other_clinician  clinician B (a foreign case answers 404, never 403: its existence is secret)
    radiologist      reads every case, works the review queue
    admin            admin role, staff (Django admin), not a superuser

To cover a new endpoint, add an `Endpoint` to ENDPOINTS (or build your own list in your own test
module and parametrise `check_endpoint` over `matrix_params(your_list)`). `url` receives the
`World` (users, a case of the owner with one image and one prediction with heat-map files) and
returns the path; `data` builds the POST body; `check` (optional) runs after the request, e.g. to
assert that nothing changed when access was refused. Expected 302s for anonymous users are
checked to point at the login page. Anonymous users reach only the login page, /healthz and
static files: `test_anonymous_reaches_only_login_health_and_static` walks the whole URLconf, so a
new unprotected URL fails it without any change here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from diagnosis.models import Case
from diagnosis.services.prediction_files import heatmap_names
from diagnosis.tests import factories

ACTORS = ("anonymous", "owner", "other_clinician", "radiologist", "admin")


@dataclass
class World:
    users: dict[str, Any]
    case: Case
    image: Any
    prediction: Any
    foreign_case: Case  # created by clinician B: only B, readers and admins may see it


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    url: Callable[[World], str]
    expect: Mapping[str, int]
    data: Callable[[World], dict[str, Any]] | None = None
    check: Callable[[World, str, Any], None] | None = field(default=None, compare=False)


def everyone(status: int, **overrides: int) -> dict[str, int]:
    """Signed-in actors get `status`; anonymous users are sent to the login page (302)."""
    return {"anonymous": 302, **dict.fromkeys(ACTORS[1:], status), **overrides}


def _case_detail(w: World) -> str:
    return reverse("diagnosis:case_detail", args=[w.case.uuid])


def _image_file(w: World) -> str:
    return reverse("diagnosis:image_file", args=[w.case.uuid, w.image.pk])


def _image_viewer(w: World) -> str:
    return reverse("diagnosis:image_viewer", args=[w.case.uuid, w.image.pk])


def _heatmap_file(w: World) -> str:
    return reverse("diagnosis:heatmap_file", args=[w.case.uuid, w.image.pk])


def _case_cancel(w: World) -> str:
    return reverse("diagnosis:case_cancel", args=[w.case.uuid])


def _cancelled_only_when_allowed(w: World, actor: str, response: Any) -> None:
    w.case.refresh_from_db()
    allowed = actor in ("owner", "admin")
    assert (w.case.status == Case.Status.CANCELLED) is allowed


def _case_unchanged(w: World, actor: str, response: Any) -> None:
    w.case.refresh_from_db()
    assert w.case.patient_ref == "REF-MATRIX"
    assert w.case.status == Case.Status.PREDICTED


ADMIN_ONLY = {"anonymous": 302, "owner": 302, "other_clinician": 302, "radiologist": 302}

ENDPOINTS: list[Endpoint] = [
    # Cases
    Endpoint("case_list", "get", lambda w: reverse("diagnosis:case_list"), everyone(200)),
    Endpoint("case_list", "post", lambda w: reverse("diagnosis:case_list"), everyone(405)),
    Endpoint("case_detail", "get", _case_detail, everyone(200, other_clinician=404)),
    Endpoint("case_detail", "post", _case_detail, everyone(405, other_clinician=405)),
    Endpoint("image_file", "get", _image_file, everyone(200, other_clinician=404)),
    Endpoint("heatmap_file", "get", _heatmap_file, everyone(200, other_clinician=404)),
    Endpoint("image_viewer", "get", _image_viewer, everyone(200, other_clinician=404)),
    Endpoint("image_viewer", "post", _image_viewer, everyone(405, other_clinician=405)),
    Endpoint(
        "heatmap_overlay",
        "get",
        lambda w: _heatmap_file(w) + "?kind=overlay",
        everyone(200, other_clinician=404),
    ),
    Endpoint(
        "case_status",
        "get",
        lambda w: reverse("diagnosis:case_status", args=[w.case.uuid]),
        everyone(200, other_clinician=404),
    ),
    Endpoint(
        "case_retry",
        "post",
        lambda w: reverse("diagnosis:case_retry", args=[w.case.uuid]),
        everyone(302, owner=403, other_clinician=404),
    ),
    Endpoint(
        "case_cancel",
        "post",
        _case_cancel,
        everyone(302, other_clinician=404, radiologist=403),
        check=_cancelled_only_when_allowed,
    ),
    Endpoint("case_cancel", "get", _case_cancel, everyone(405)),
    # Django admin: staff only; history is read-only even there.
    Endpoint("admin_index", "get", lambda w: "/admin/", {**ADMIN_ONLY, "admin": 200}),
    Endpoint(
        "admin_case_list", "get", lambda w: "/admin/diagnosis/case/", {**ADMIN_ONLY, "admin": 200}
    ),
    Endpoint(
        "admin_case_change",
        "post",
        lambda w: f"/admin/diagnosis/case/{w.case.pk}/change/",
        {**ADMIN_ONLY, "admin": 403},
        data=lambda w: {"patient_ref": "TAMPERED", "status": "reviewed"},
        check=_case_unchanged,
    ),
    Endpoint(
        "admin_case_delete",
        "post",
        lambda w: f"/admin/diagnosis/case/{w.case.pk}/delete/",
        {**ADMIN_ONLY, "admin": 403},
        data=lambda w: {"post": "yes"},
        check=_case_unchanged,
    ),
    Endpoint(
        "admin_audit_list",
        "get",
        lambda w: "/admin/diagnosis/auditevent/",
        {**ADMIN_ONLY, "admin": 200},
    ),
    Endpoint("admin_users", "get", lambda w: "/admin/auth/user/", {**ADMIN_ONLY, "admin": 200}),
]


def matrix_params(endpoints: list[Endpoint]) -> list[Any]:
    return [
        pytest.param(ep, actor, id=f"{ep.id}-{ep.method}-{actor}")
        for ep in endpoints
        for actor in ACTORS
        if actor in ep.expect
    ]


_PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
def world(clinician, clinician_b, radiologist, admin_user) -> World:
    case = factories.CaseFactory(
        created_by=clinician, patient_ref="REF-MATRIX", status=Case.Status.PREDICTED
    )
    image = factories.XrayImageFactory(case=case, position=0)
    prediction = factories.PredictionFactory(image=image)
    heatmap_name, overlay_name = heatmap_names(prediction.pk)
    prediction.heatmap.save(heatmap_name, ContentFile(_PNG_1x1), save=True)
    default_storage.save(overlay_name, ContentFile(_PNG_1x1))
    return World(
        users={
            "owner": clinician,
            "other_clinician": clinician_b,
            "radiologist": radiologist,
            "admin": admin_user,
        },
        case=case,
        image=image,
        prediction=prediction,
        foreign_case=factories.CaseFactory(created_by=clinician_b),
    )


def check_endpoint(world: World, endpoint: Endpoint, actor: str) -> None:
    """Request `endpoint` as `actor` and assert the status the table expects."""
    client = Client()
    if actor != "anonymous":
        client.force_login(world.users[actor])
    url = endpoint.url(world)
    data = endpoint.data(world) if endpoint.data else {}
    response = getattr(client, endpoint.method)(url, data)
    expected = endpoint.expect[actor]
    assert response.status_code == expected, (
        f"{actor} {endpoint.method.upper()} {url}: {response.status_code}, expected {expected}"
    )
    if actor == "anonymous" and expected == 302:
        assert response["Location"].startswith(("/accounts/login/", "/admin/login/"))
    if endpoint.check:
        endpoint.check(world, actor, response)


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "actor"), matrix_params(ENDPOINTS))
def test_access_matrix(world, endpoint, actor):
    check_endpoint(world, endpoint, actor)


# --- the whole URLconf, anonymously ----------------------------------------------------------------

# favicon: a redirect to the static icon (static files are public), see test_favicon.py
ANONYMOUS_ALLOWED = {"login", "healthz", "favicon"}
_CONVERTER_VALUES = {"uuid": "00000000-0000-4000-8000-000000000000", "int": "1", "slug": "x"}


def _walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    """(route, name) for every URL pattern whose route can be filled in automatically."""
    found = []
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            found.extend(_walk(p.url_patterns, route, ns))
        elif isinstance(p, URLPattern):
            found.append((route, f"{namespace}{p.name or ''}"))
    return found


def _fill(route: str) -> str | None:
    if route.startswith("^") or "(?P" in route:
        route = re.sub(r"\(\?P<\w+>[^)]*\)", "x", route).strip("^$").replace("\\", "")
        if any(c in route for c in "()[]*+?|"):
            return None
    path = re.sub(
        r"<(?:(\w+):)?\w+>", lambda m: _CONVERTER_VALUES.get(m.group(1) or "str", "x"), route
    )
    return "/" + path


@pytest.mark.django_db
def test_anonymous_reaches_only_login_health_and_static():
    client = Client()
    checked = 0
    for route, name in _walk(get_resolver().url_patterns):
        path = _fill(route)
        if path is None or name in ANONYMOUS_ALLOWED:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            checked += 1
            assert response.status_code in (301, 302, 401, 403, 404, 405), (
                f"anonymous {method.upper()} {path} ({name}): {response.status_code}"
            )
            if response.status_code in (301, 302):
                location = response["Location"]
                # admin:logout sends anonymous users to /admin/, which sends them to the login.
                assert location.startswith(("/accounts/login/", "/admin/login/")) or (
                    name == "admin:logout" and location == "/admin/"
                ), f"anonymous {method.upper()} {path} ({name}) redirects to {location}"
    assert checked > 40  # the walk really covered the URLconf (admin alone has dozens)


@pytest.mark.django_db
def test_anonymous_allowed_pages_work(settings):
    # Production serves collected files; the tests collect nothing, so let WhiteNoise use finders.
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    client = Client()
    assert client.get(reverse("login")).status_code == 200
    assert client.get(reverse("healthz")).json() == {"status": "ok"}
    static = client.get("/static/css/portal.css")
    assert static.status_code == 200
    assert b"".join(static.streaming_content).startswith(b":root")


def test_media_files_are_never_served_directly(world, client_for):
    """Images and heat-maps leave only through the permission-checked, audited views."""
    for name in (world.image.file.name, world.prediction.heatmap.name):
        for actor in ("owner", "radiologist", "admin"):
            response = client_for(world.users[actor]).get(f"/media/{name}")
            assert response.status_code == 404, (actor, name)


def test_foreign_case_exists_for_other_clinician(world, client_for):
    """Sanity check of the fixture: B sees B's case, A does not (404, never 403)."""
    url = reverse("diagnosis:case_detail", args=[world.foreign_case.uuid])
    assert client_for(world.users["other_clinician"]).get(url).status_code == 200
    assert client_for(world.users["owner"]).get(url).status_code == 404
