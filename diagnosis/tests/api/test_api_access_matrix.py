"""Role x object x method matrix over every REST API endpoint.

Principals: anonymous; clinician A (owner of `world.case`) by token and by session; clinician B;
a radiologist; an admin; the endpoint's natural user with a token lacking the endpoint's scope;
a revoked token; an expired token. Foreign objects answer 404, missing scope or permission 403,
missing or dead credentials 401 (with WWW-Authenticate). Every route in the API URLconf must
appear in ENDPOINTS (`test_every_api_route_is_in_the_matrix`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import get_resolver
from rest_framework.test import APIClient

from diagnosis.models import Case, ModelVersion, TrainingRun
from diagnosis.services.tokens import api_token_revoke
from diagnosis.tests import factories
from diagnosis.tests.api.conftest import ALL_SCOPES, expire

PRINCIPALS = (
    "anonymous",
    "owner",
    "owner_session",
    "other_clinician",
    "radiologist",
    "admin",
    "wrong_scope",
    "revoked",
    "expired",
)


@dataclass
class World:
    users: dict[str, Any]
    case: Case
    image: Any
    candidate: ModelVersion
    sample: bytes
    run: TrainingRun


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    url: Callable[[World], str]
    scope: str
    #: the user whose token, lacking `scope`, must get 403 (and whose token is revoked/expired)
    natural: str
    expect: Mapping[str, int]
    data: Callable[[World], Any] | None = None
    format: str | None = None
    check: Callable[[World, str, Any], None] | None = None


def dead_and_anonymous(**ok: int) -> dict[str, int]:
    return {"anonymous": 401, "revoked": 401, "expired": 401, "wrong_scope": 403, **ok}


def case_url(suffix: str = "") -> Callable[[World], str]:
    return lambda w: f"/api/v1/cases/{w.case.uuid}/{suffix}"


def upload(w: World) -> dict[str, Any]:
    return {
        "patient_ref": "PSN-1",
        "body_part": "hand",
        "images": [SimpleUploadedFile("x.jpg", w.sample, content_type="image/jpeg")],
    }


def not_listed(w: World, principal: str, response: Any) -> None:
    if response.status_code == 200 and principal == "other_clinician":
        assert str(w.case.uuid) not in {row["id"] for row in response.json()["results"]}


def unchanged(w: World, principal: str, response: Any) -> None:
    if response.status_code >= 400:
        w.case.refresh_from_db()
        assert w.case.status == "predicted"
        assert w.case.claimed_by_id is None


def candidate_untouched(w: World, principal: str, response: Any) -> None:
    if response.status_code >= 400:
        w.candidate.refresh_from_db()
        assert w.candidate.status == "candidate"


READERS = {"owner": 200, "owner_session": 200, "radiologist": 200, "admin": 200}
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "case-list",
        "get",
        lambda w: "/api/v1/cases/",
        "read",
        "owner",
        dead_and_anonymous(**READERS, other_clinician=200),
        check=not_listed,
    ),
    Endpoint(
        "case-create",
        "post",
        lambda w: "/api/v1/cases/",
        "write",
        "owner",
        dead_and_anonymous(**dict.fromkeys(READERS, 202), other_clinician=202),
        data=upload,
        format="multipart",
    ),
    Endpoint(
        "case-detail",
        "get",
        case_url(),
        "read",
        "owner",
        dead_and_anonymous(**READERS, other_clinician=404),
    ),
    Endpoint(
        "case-cancel",
        "post",
        case_url("cancel/"),
        "write",
        "owner",
        # radiologists see the case but did not create it; admins are staff
        dead_and_anonymous(**{**READERS, "radiologist": 403}, other_clinician=404),
        check=unchanged,
    ),
    Endpoint(
        "case-image-file",
        "get",
        lambda w: f"/api/v1/cases/{w.case.uuid}/images/{w.image.pk}/file/",
        "read",
        "owner",
        dead_and_anonymous(**READERS, other_clinician=404),
    ),
    Endpoint(
        "case-image-heatmap",
        "get",
        lambda w: f"/api/v1/cases/{w.case.uuid}/images/{w.image.pk}/heatmap/",
        "read",
        "owner",
        dead_and_anonymous(**READERS, other_clinician=404),
    ),
    Endpoint(
        "model-version-list",
        "get",
        lambda w: "/api/v1/models/",
        "admin",
        "admin",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=403, admin=200
        ),
    ),
    Endpoint(
        "model-version-detail",
        "get",
        lambda w: f"/api/v1/models/{w.candidate.version}/",
        "admin",
        "admin",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=403, admin=200
        ),
    ),
    Endpoint(
        "model-version-activate",
        "post",
        lambda w: f"/api/v1/models/{w.candidate.version}/activate/",
        "admin",
        "admin",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=403, admin=200
        ),
        check=candidate_untouched,
    ),
    Endpoint(
        "model-version-rollback",
        "post",
        lambda w: "/api/v1/models/rollback/",
        "admin",
        "admin",
        # nothing was active before the current version: a conflict, not a server error
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=403, admin=409
        ),
    ),
    Endpoint(
        "review-queue-list",
        "get",
        lambda w: "/api/v1/review/queue/",
        "review",
        "radiologist",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=200, admin=200
        ),
    ),
    Endpoint(
        "review-case-claim",
        "post",
        lambda w: f"/api/v1/review/cases/{w.case.uuid}/claim/",
        "review",
        "radiologist",
        # admins adjudicate but do not make first reads
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=200, admin=403
        ),
        check=unchanged,
    ),
    Endpoint(
        "review-case-release",
        "post",
        lambda w: f"/api/v1/review/cases/{w.case.uuid}/release/",
        "review",
        "radiologist",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=409, admin=409
        ),
        check=unchanged,
    ),
    Endpoint(
        "review-case-reads",
        "post",
        lambda w: f"/api/v1/review/cases/{w.case.uuid}/reads/",
        "review",
        "radiologist",
        dead_and_anonymous(
            owner=403, owner_session=403, other_clinician=403, radiologist=409, admin=403
        ),
        data=lambda w: {"reads": [{"image_id": w.image.pk, "decision": "confirm"}]},
        format="json",
        check=unchanged,
    ),
)


ADMIN_ONLY = {"owner": 403, "owner_session": 403, "other_clinician": 403, "radiologist": 403}
ENDPOINTS += (
    Endpoint(
        "training-run-list",
        "get",
        lambda w: "/api/v1/training/runs/",
        "admin",
        "admin",
        dead_and_anonymous(**ADMIN_ONLY, admin=200),
    ),
    Endpoint(
        "training-run-create",
        "post",
        lambda w: "/api/v1/training/runs/",
        "admin",
        "admin",
        dead_and_anonymous(**ADMIN_ONLY, admin=202),
        data=lambda w: {"config": {}},
        format="json",
    ),
    Endpoint(
        "training-run-detail",
        "get",
        lambda w: f"/api/v1/training/runs/{w.run.pk}/",
        "admin",
        "admin",
        dead_and_anonymous(**ADMIN_ONLY, admin=200),
    ),
    Endpoint(
        "training-run-cancel",
        "post",
        lambda w: f"/api/v1/training/runs/{w.run.pk}/cancel/",
        "admin",
        "admin",
        dead_and_anonymous(**ADMIN_ONLY, admin=409),  # the run has finished
    ),
)


@pytest.fixture
def world(clinician, clinician_b, radiologist, admin_user, sample_jpeg_bytes):
    active = factories.ModelVersionFactory(version="v-active")
    candidate = factories.ModelVersionFactory(version="v-candidate", status="candidate")
    case = factories.CaseFactory(created_by=clinician, status="predicted")
    image = factories.XrayImageFactory(case=case, position=0)
    prediction = factories.PredictionFactory(image=image, model_version=active)
    prediction.heatmap.save("h.png", ContentFile(b"\x89PNG\r\n\x1a\nheat"), save=True)
    users = {
        "owner": clinician,
        "other_clinician": clinician_b,
        "radiologist": radiologist,
        "admin": admin_user,
    }
    run = TrainingRun.objects.create(trigger="manual", status="succeeded")
    return World(users, case, image, candidate, sample_jpeg_bytes, run)


def _client(world: World, endpoint: Endpoint, principal: str, issue_token) -> APIClient:
    client = APIClient()
    if principal == "anonymous":
        return client
    if principal == "owner_session":
        client.force_login(world.users["owner"])
        return client
    if principal in ("wrong_scope", "revoked", "expired"):
        user = world.users[endpoint.natural]
        scopes = (
            [s for s in ALL_SCOPES if s != endpoint.scope] if principal == "wrong_scope" else None
        )
        raw, token = issue_token(user, scopes)
        if principal == "revoked":
            api_token_revoke(token=token, user=user)
        elif principal == "expired":
            expire(token)
    else:
        raw, _ = issue_token(world.users[principal])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_access(world, endpoint, principal, issue_token):
    client = _client(world, endpoint, principal, issue_token)
    kwargs: dict[str, Any] = {}
    if endpoint.data is not None:
        kwargs["data"] = endpoint.data(world)
    if endpoint.format:
        kwargs["format"] = endpoint.format
    response = getattr(client, endpoint.method)(endpoint.url(world), **kwargs)
    expected = endpoint.expect[principal]
    assert response.status_code == expected, (principal, response.content[:300])
    if expected >= 400:
        body = response.json()
        assert set(body) == {"code", "message", "extra"}
        assert str(world.case.patient_ref) not in response.content.decode()
    if expected == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
    if endpoint.check is not None:
        endpoint.check(world, principal, response)


def _api_route_names() -> set[str]:
    names = set()
    api = get_resolver().namespace_dict["api"][1]
    for name in api.reverse_dict:
        if isinstance(name, str) and not re.match(r"^(api-root|not-found)$", name):
            names.add(name)
    return names


def test_every_api_route_is_in_the_matrix():
    covered = {e.id for e in ENDPOINTS}
    # list/create and detail share one route name; map each route to an endpoint id
    route_names = _api_route_names()
    aliases = {
        "case-list": {"case-list", "case-create"},
        "training-run-list": {"training-run-list", "training-run-create"},
    }
    for name in route_names:
        assert aliases.get(name, {name}) & covered, f"{name} is not in the access matrix"
