"""OpenAPI schema and Swagger UI (served locally), and per-scope throttling."""

from __future__ import annotations

import pytest

from diagnosis.api.throttling import TokenScopeRateThrottle

pytestmark = pytest.mark.django_db


def test_schema_documents_auth_and_errors(clinician, client_for):
    response = client_for(clinician).get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "message", "extra"}
    create = schema["paths"]["/api/v1/cases/"]["post"]
    assert {"202", "200", "400", "401", "403", "413", "415", "429"} <= set(create["responses"])
    assert "multipart/form-data" in create["requestBody"]["content"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_schema_needs_authentication():
    from django.test import Client

    assert Client().get("/api/schema/").status_code in (401, 403)


def test_swagger_ui_is_served_without_a_cdn(clinician, client_for):
    response = client_for(clinician).get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html


def test_throttled_per_token_scope(clinician, issue_token, bearer, monkeypatch):
    monkeypatch.setattr(
        TokenScopeRateThrottle,
        "THROTTLE_RATES",
        {**TokenScopeRateThrottle.THROTTLE_RATES, "read": "3/min"},
    )
    # One fixed window: a minute boundary between the requests would reset the count.
    monkeypatch.setattr(TokenScopeRateThrottle, "timer", lambda self: 7_000_020.0)
    raw, _ = issue_token(clinician, ["read"])
    other_raw, _ = issue_token(clinician, ["read"])
    api = bearer(raw)
    assert [api.get("/api/v1/cases/").status_code for _ in range(3)] == [200, 200, 200]
    throttled = api.get("/api/v1/cases/")
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "throttled"
    assert throttled.json()["extra"]["retry_after_seconds"] > 0
    assert "Retry-After" in throttled
    # counted per token: another token of the same user still has its budget
    assert bearer(other_raw).get("/api/v1/cases/").status_code == 200


def test_throttle_counts_atomically_across_threads(monkeypatch):
    """Concurrent requests of one token never slip past the limit (the counter is incremented
    atomically in the shared cache, not read and rewritten)."""
    import threading
    from types import SimpleNamespace

    from diagnosis.models import ApiToken

    monkeypatch.setattr(
        TokenScopeRateThrottle, "THROTTLE_RATES", {"read": "25/hour"}, raising=False
    )
    monkeypatch.setattr(TokenScopeRateThrottle, "timer", lambda self: 1_000_000.0)  # one window
    token = ApiToken(pk=987654321, prefix="deadbeef")
    request = SimpleNamespace(auth=token, user=None, META={})
    view = SimpleNamespace(throttle_scope_for_action=lambda: "read")
    allowed: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def hammer() -> None:
        barrier.wait()
        for _ in range(6):
            ok = TokenScopeRateThrottle().allow_request(request, view)
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=hammer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 60
    assert sum(allowed) == 25


def test_throttle_counts_with_one_redis_command_and_an_expiring_key(monkeypatch):
    """With Redis, each check is one command (a script: INCR, and EXPIRE on the window's first
    count); the counter stays readable through Django's cache API."""
    from types import SimpleNamespace

    import redis
    from django.core.cache import cache, caches
    from django.core.cache.backends.redis import RedisCache

    from diagnosis.models import ApiToken

    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    monkeypatch.setattr(TokenScopeRateThrottle, "THROTTLE_RATES", {"read": "2/min"}, raising=False)
    monkeypatch.setattr(TokenScopeRateThrottle, "timer", lambda self: 6_000_000.0)
    request = SimpleNamespace(auth=ApiToken(pk=123456789, prefix="cafef00d"), user=None, META={})
    view = SimpleNamespace(throttle_scope_for_action=lambda: "read")
    assert TokenScopeRateThrottle().allow_request(request, view)  # loads the script if needed
    commands: list[str] = []
    execute = redis.Redis.execute_command

    def counting(self, *args, **kwargs):
        commands.append(args[0])
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    assert TokenScopeRateThrottle().allow_request(request, view)
    assert not TokenScopeRateThrottle().allow_request(request, view)
    assert commands == ["EVALSHA", "EVALSHA"]
    key = f"throttle_read_token:123456789:{6_000_000 // 60}"
    assert cache.get(key) == 3
    client = backend._cache.get_client(write=True)
    assert 0 < client.ttl(backend.make_and_validate_key(key)) <= 61


def test_throttle_reloads_its_script_after_a_redis_script_flush(monkeypatch):
    from types import SimpleNamespace

    from django.core.cache import caches

    from diagnosis.models import ApiToken

    monkeypatch.setattr(TokenScopeRateThrottle, "THROTTLE_RATES", {"read": "5/min"}, raising=False)
    request = SimpleNamespace(auth=ApiToken(pk=123456790, prefix="cafef00e"), user=None, META={})
    view = SimpleNamespace(throttle_scope_for_action=lambda: "read")
    assert TokenScopeRateThrottle().allow_request(request, view)
    caches["default"]._cache.get_client(write=True).script_flush()
    assert TokenScopeRateThrottle().allow_request(request, view)
