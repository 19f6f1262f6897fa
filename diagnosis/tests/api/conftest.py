"""API test fixtures: tokens for the role fixtures, API clients, cases with results."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.test import APIClient

from diagnosis.models import ApiToken
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories

ALL_SCOPES = ["read", "write", "review", "admin"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle counters live in the shared cache; start every test from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def issue_token(db):
    """issue_token(user, scopes=..., expires_in=..., revoked=False) -> (raw, ApiToken)."""

    def make(user, scopes=None, *, expires_in=timedelta(days=30), webhook_url=""):
        client = user.api_clients.first() or api_client_create(
            user=user, name=f"{user.username}-app", webhook_url=webhook_url
        )
        token, raw = api_token_create(
            client=client,
            user=user,
            scopes=ALL_SCOPES if scopes is None else scopes,
            expires_at=timezone.now() + expires_in if expires_in else None,
        )
        return raw, token

    return make


@pytest.fixture
def bearer():
    """bearer(raw) -> an APIClient that sends `Authorization: Bearer raw`."""

    def make(raw: str | None) -> APIClient:
        client = APIClient()
        if raw is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make


@pytest.fixture
def case_with_result(clinician):
    """A predicted case of clinician A with one image, a finished prediction and a heat-map."""
    case = factories.CaseFactory(created_by=clinician, status="predicted")
    image = factories.XrayImageFactory(case=case, position=0)
    prediction = factories.PredictionFactory(image=image, probability=0.83)
    prediction.heatmap.save("heat.png", ContentFile(b"\x89PNG\r\n\x1a\nheatmap"), save=True)
    return case


def expire(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def eager_tasks():
    """Celery tasks run in the server thread (the embedded mode of `make run`)."""
    from fracture_portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("api-model") / "tiny", size=64, seed=0)
