"""Schemathesis against the live OpenAPI schema (/api/schema/), through the WSGI app with a valid
token: no 5xx, every status documented, authentication never ignored, bodies as documented.
Bounded examples."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from diagnosis.api.throttling import TokenScopeRateThrottle
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories
from fracture_portal.wsgi import application

logger = logging.getLogger(__name__)
CHECKS = [not_a_server_error, status_code_conformance, ignored_auth, response_schema_conformance]
MAX_EXAMPLES = 20


@pytest.fixture
def api_token(db, monkeypatch):
    """A superuser's token with every scope, and a little data for the generated requests to hit."""
    # Requests run in this thread on the test's connection: keep Django from closing it between
    # requests (as django.test.Client does).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    monkeypatch.setattr(
        TokenScopeRateThrottle,
        "THROTTLE_RATES",
        dict.fromkeys(("uploads", "read", "write", "review", "admin"), "100000/min"),
    )
    user = factories.UserFactory(username="fuzz", is_superuser=True, is_staff=True)
    client = api_client_create(user=user, name="fuzz")
    _, raw = api_token_create(
        client=client, user=user, scopes=["read", "write", "review", "admin"], expires_at=None
    )
    # A version that localises, so the documented candidates are checked against real ones.
    version = factories.ModelVersionFactory(
        version="fuzz-v1", card={"localisation": {"output": "loc", "max_candidates": 5}}
    )
    case = factories.CaseFactory(created_by=user, status="predicted")
    image = factories.XrayImageFactory(case=case)
    prediction = factories.PredictionFactory(
        image=image,
        model_version=version,
        candidates=[{"x0": 10.0, "y0": 8.5, "x1": 30.0, "y1": 20.0, "score": 0.62}],
    )
    prediction.heatmap.save("h.png", ContentFile(b"\x89PNG\r\n\x1a\n"), save=True)
    yield raw
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_api_conforms_to_its_schema(api_token):
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Bearer {api_token}"}
    )
    headers = {"Authorization": f"Bearer {api_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    tested = []
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses[(case.operation.label, response.status_code)] += 1

        run()
        tested.append(operation.label)
    assert "POST /api/v1/cases/" in tested
    # The run exercised real answers, not only refusals.
    assert statuses[("GET /api/v1/cases/", 200)] > 0
    assert sum(n for (_, code), n in statuses.items() if 200 <= code < 300) > 20
    assert sum(n for (_, code), n in statuses.items() if 400 <= code < 500) > 20
    logger.info("schemathesis statuses: %s", sorted(statuses.items()))


def test_real_responses_match_the_schema(api_token):
    """Full, realistic answers (results, reads, queue rows, registry) validate against the
    documented response schemas: the hand-built representations and the schema agree."""
    from diagnosis.models import Case, Review

    case = Case.objects.get(created_by__username="fuzz")
    image = case.images.get()
    reader = factories.RadiologistFactory(
        username="fuzz-reader", first_name="Fuzz", last_name="Reader"
    )
    Review.objects.create(
        image=image,
        prediction=image.predictions.get(),
        reviewer=reader,
        decision="confirm",
        final_label="fractured",
    )
    Case.objects.filter(pk=case.pk).update(status="in_review", needs_second_read=True)
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Bearer {api_token}"}
    )
    headers = {"Authorization": f"Bearer {api_token}"}
    calls = [
        ("/api/v1/cases/", "GET", {}, {"page_size": 5}),
        ("/api/v1/cases/{uuid}/", "GET", {"uuid": str(case.uuid)}, {}),
        ("/api/v1/review/queue/", "GET", {}, {}),
        ("/api/v1/models/", "GET", {}, {}),
        ("/api/v1/models/{version}/", "GET", {"version": "fuzz-v1"}, {}),
        ("/api/v1/review/cases/{uuid}/claim/", "POST", {"uuid": str(case.uuid)}, {}),
    ]
    for path, method, params, query in calls:
        operation = schema[path][method]
        response = operation.Case(path_parameters=params, headers=headers, query=query).call()
        assert response.status_code == 200, (path, response.text[:500])
        operation.validate_response(response)
    detail = schema["/api/v1/cases/{uuid}/"]["GET"]
    body = detail.Case(path_parameters={"uuid": str(case.uuid)}, headers=headers).call().json()
    assert body["images"][0]["reads"][0]["reviewer"] == "Fuzz Reader"  # display name
    assert body["images"][0]["prediction"]["heatmap_url"].endswith("/heatmap/")
    assert body["images"][0]["prediction"]["candidates"][0]["score"] == 0.62
