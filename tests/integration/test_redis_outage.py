"""Redis killed under the API (issue 12, point 2): the cache and the broker are one private Redis
(append-only), as in production; uploads go over HTTP to a live server with the real Redis cache
and throttle, while a real worker with beat runs the sweeper.

While Redis is down every API upload is accepted (202, JSON) and queued, reads answer JSON, and a
sweep that falls inside the outage leaves its cases for the next sweep. Once Redis is back every
case is predicted exactly once. (The old fault test called `case_create()` with the cache blanked,
so it could not see the throttle's 500.)
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from diagnosis.models import Case
from diagnosis.services.sweeper import case_sweep_stuck
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories
from tests.integration.conftest import Harness, wait_for
from tests.integration.test_inference_faults import FINAL, assert_accepted_cases_accounted_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.jpg"))


def _upload(base: str, token: str, n: int) -> requests.Response:
    sample = SAMPLES[n % len(SAMPLES)]
    return requests.post(
        f"{base}/api/v1/cases/",
        headers={"Authorization": f"Bearer {token}"},
        data={"patient_ref": f"OUTAGE-{n:03d}", "body_part": "hand", "clinical_question": ""},
        files={"images": (sample.name, sample.read_bytes(), "image/jpeg")},
        timeout=30,
    )


def _json(response: requests.Response) -> dict:
    assert response.status_code < 500, response.text[:300]
    assert response.headers["Content-Type"] == "application/json", response.text[:300]
    return response.json()


def test_api_uploads_while_redis_is_down_are_queued_then_predicted(
    harness: Harness, live_server, settings
):
    settings.STUCK_CASE_SECONDS = 3
    cache_url = harness.redis.url.rsplit("/", 1)[0] + "/1"
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": cache_url,
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        }
    }
    worker = harness.start_worker(beat=True, REDIS_CACHE_URL=cache_url)
    user = factories.ClinicianFactory()
    client = api_client_create(user=user, name="outage")
    _, token = api_token_create(client=client, user=user, scopes=["read", "write"], expires_at=None)
    base = live_server.url
    with override_settings(CACHES=caches):
        first = _upload(base, token, 0)  # Redis up: the throttle counts in it
        assert first.status_code == 202, first.text
        harness.redis.kill()
        accepted = []
        for n in range(1, 6):
            started = time.monotonic()
            response = _upload(base, token, n)
            assert response.status_code == 202, response.text[:300]
            assert time.monotonic() - started < 5  # neither the cache nor the broker hangs it
            accepted.append(_json(response)["id"])
        listing = requests.get(
            f"{base}/api/v1/cases/", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert _json(listing)["count"] == 6
        waiting = Case.objects.filter(uuid__in=accepted)
        assert set(waiting.values_list("status", flat=True)) == {Case.Status.QUEUED}

        # A sweep inside the outage: nothing can be sent, and nothing is marked swept.
        waiting.update(updated_at=timezone.now() - timedelta(minutes=5))
        before = dict(waiting.values_list("pk", "updated_at"))
        counts = case_sweep_stuck()
        assert counts["redispatched"] == 0
        assert counts["deferred"] >= len(accepted)
        assert dict(waiting.values_list("pk", "updated_at")) == before

        harness.redis.start()
        cases = list(Case.objects.filter(created_by=user))

        def supervise() -> bool:
            nonlocal worker
            if not worker.alive():  # Celery 5.7 can exit when Redis goes away under it
                worker = harness.start_worker(beat=True, REDIS_CACHE_URL=cache_url)
            done = Case.objects.filter(pk__in=[c.pk for c in cases], status__in=FINAL).count()
            return done == len(cases)

        if not wait_for(supervise, timeout=150, interval=0.5):
            pytest.fail(f"the sweeper did not recover the cases\n{harness.logs()}")
    assert set(Case.objects.filter(created_by=user).values_list("status", flat=True)) == {
        Case.Status.PREDICTED
    }
    assert_accepted_cases_accounted_for(cases)
