"""No 5xx anywhere: every URL pattern, as every role, with OPTIONS, HEAD, and GET carrying odd query
values (unicode digits, huge and negative numbers, empty, NaN, NUL).

The walk reads the URLconf, so a new route is covered without a change here. Path parameters are
filled with real objects of one small world (a predicted case with an image, a heat-map and a
prediction, a model version, a snapshot, a training run, a notification), so the views get past
their lookups and reach their query-parameter handling. Refusals (302, 4xx) are fine; a 5xx is not.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from diagnosis.api.throttling import TokenScopeRateThrottle
from diagnosis.models import DatasetSnapshot, Notification, TrainingRun
from diagnosis.services.prediction_files import heatmap_names
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories

# Every query parameter any view reads, plus a few that frameworks read (admin, DRF).
PARAM_NAMES = (
    "p", "page", "page_size", "model_version", "stage", "status", "body_part", "kind", "q",
    "next", "created_after", "created_before", "format", "o", "e", "all", "id", "_popup",
)  # fmt: skip
ODD_VALUES = (
    "²",  # a digit to str.isdigit(), not to int()
    "٣",  # Arabic-Indic three: int() takes it
    "-1",
    "0",
    "99999999999999999999999",
    "9" * 400,
    "",
    "1e400",
    "NaN",
    "x\x00y",
)
ROLES = ("anonymous", "clinician", "radiologist", "admin", "superuser", "token")
_PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, route)
        elif isinstance(p, URLPattern):
            yield route, p.name or ""


def _fill(route: str, values: dict[str, str]) -> str | None:
    """A concrete path for a route (regex or path syntax), or None if it cannot be filled."""

    def value(name: str) -> str:
        return values.get(name, "1")

    route = re.sub(r"\(\?P<(\w+)>[^()]*(?:\([^()]*\)[^()]*)*\)", lambda m: value(m.group(1)), route)
    route = route.replace("^", "").replace("$", "").replace("\\Z", "").replace("\\", "")
    route = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), route)
    if any(c in route for c in "()[]*+?|"):
        return None
    return "/" + route


@pytest.fixture
def world(db, monkeypatch, tmp_path):
    monkeypatch.setattr(
        TokenScopeRateThrottle,
        "THROTTLE_RATES",
        dict.fromkeys(("uploads", "read", "write", "review", "admin"), "1000000/min"),
    )
    users = {
        "clinician": factories.ClinicianFactory(username="walk-clin"),
        "radiologist": factories.RadiologistFactory(username="walk-rad"),
        "admin": factories.AdminFactory(username="walk-admin"),
        "superuser": factories.UserFactory(username="walk-root", is_staff=True, is_superuser=True),
    }
    version = factories.ModelVersionFactory(version="walk-v1")
    case = factories.CaseFactory(created_by=users["clinician"], status="predicted")
    image = factories.XrayImageFactory(case=case, position=0)
    prediction = factories.PredictionFactory(image=image, model_version=version)
    prediction.heatmap.save(heatmap_names(prediction.pk)[0], ContentFile(_PNG_1x1), save=True)
    manifest = json.dumps({"items": [], "excluded": []}).encode()
    snapshot = DatasetSnapshot.objects.create(
        version="walk-s1",
        manifest=ContentFile(manifest, name="walk.json"),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )
    run = TrainingRun.objects.create(trigger="manual", snapshot=snapshot, status="failed")
    note = Notification.objects.create(user=users["clinician"], case=case, message="walk")
    client = api_client_create(user=users["admin"], name="walk")
    _, raw = api_token_create(
        client=client,
        user=users["admin"],
        scopes=["read", "write", "review", "admin"],
        expires_at=None,
    )
    values = {
        "uuid": str(case.uuid),
        "case_uuid": str(case.uuid),
        "pk": str(image.pk),
        "image_id": str(image.pk),
        "run_id": str(run.pk),
        "version_id": str(version.pk),
        "version": version.version,
        "snapshot_id": str(snapshot.pk),
        "notification_id": str(note.pk),
        "name": "roc",
        "app_label": "diagnosis",
        "object_id": str(case.pk),
        "content_type_id": "1",
        "url": "x",
    }
    return {"users": users, "values": values, "token": raw, "run": run}


def _client(world: dict[str, Any], role: str) -> Client:
    if role == "token":
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world['token']}")
        api.raise_request_exception = False
        return api
    client = Client(raise_request_exception=False)
    if role != "anonymous":
        client.force_login(world["users"][role])
    return client


def _paths(world: dict[str, Any]) -> list[str]:
    paths = []
    for route, name in _walk(get_resolver().url_patterns):
        if name in ("logout",) or route.startswith("admin/logout"):
            continue  # would end the session the walk runs in (POST only anyway)
        path = _fill(route, world["values"])
        if path is not None and path not in paths:
            paths.append(path)
    return paths


def _odd_query(value: str) -> dict[str, str]:
    return dict.fromkeys(PARAM_NAMES, value)


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_no_url_answers_5xx(world, role):
    client = _client(world, role)
    paths = _paths(world)
    # The walk really covers the URLconf: the pages, the API routes and the admin.
    assert len(paths) > 60
    assert any(p.startswith("/api/v1/cases/") for p in paths)
    failures = []
    for path in paths:
        if role == "token" and not path.startswith("/api/"):
            continue
        attempts = [("options", path, {}), ("head", path, {})]
        attempts += [("get", path, _odd_query(v)) for v in ODD_VALUES]
        attempts += [("head", path, _odd_query("²"))]
        for method, url, query in attempts:
            response = getattr(client, method)(url, query)
            if response.status_code >= 500:
                failures.append(
                    f"{role} {method.upper()} {url} {query!r:.60}: {response.status_code}"
                )
    assert not failures, "\n".join(failures[:40])


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/cases/", {}),
        ("/api/docs/", {}),
        ("/api/v1/training/runs/", {}),
        ("/review/", {"model_version": "²"}),
        ("/review/queue.json", {"model_version": "²"}),
        ("/review/", {"model_version": "9" * 30}),
    ],
)
def test_known_5xx_regressions(world, path, query):
    """The ones the outside campaign found (OPTIONS on POST routes, unicode digits), fast."""
    for role in ("radiologist", "admin", "token"):
        client = _client(world, role)
        for method in ("options", "get"):
            response = getattr(client, method)(path, query)
            assert response.status_code < 500, (role, method, path, query)


def test_heatmap_with_unicode_or_huge_prediction_id_is_a_404(world):
    client = _client(world, "clinician")
    values = world["values"]
    url = f"/cases/{values['uuid']}/images/{values['pk']}/heatmap"
    assert client.get(url).status_code == 200
    for p in ("²", "٣", "9" * 30, "-1"):
        assert client.get(url, {"p": p}).status_code == 404, p


def test_options_on_post_routes_describes_them(world):
    """OPTIONS answers 200 with the route's name and what it accepts (no 500)."""
    client = _client(world, "token")
    values = world["values"]
    post_routes = [
        "/api/v1/cases/",
        f"/api/v1/cases/{values['uuid']}/cancel/",
        f"/api/v1/models/{values['version']}/activate/",
        "/api/v1/models/rollback/",
        "/api/v1/training/runs/",
        f"/api/v1/training/runs/{values['run_id']}/cancel/",
        f"/api/v1/review/cases/{values['uuid']}/claim/",
        f"/api/v1/review/cases/{values['uuid']}/release/",
        f"/api/v1/review/cases/{values['uuid']}/reads/",
    ]
    for url in post_routes:
        response = client.options(url)
        assert response.status_code == 200, (url, response.content[:200])
        body = response.json()
        assert "name" in body
        assert "POST" in response["Allow"], url
