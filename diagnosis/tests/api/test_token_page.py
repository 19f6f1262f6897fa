"""The /tokens/ page: create a client and a token (shown once), set the webhook, revoke, log."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from diagnosis.models import ApiClient, ApiToken, AuditEvent, WebhookDelivery
from diagnosis.services.tokens import api_client_create, api_token_authenticate
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db
URL = "/tokens/"


def _raw_token(html: str) -> str:
    match = re.search(r'id="new-token-value">(fp_[0-9a-f]{8}_[A-Za-z0-9_-]+)<', html)
    assert match, "token not shown"
    return match.group(1)


def test_anonymous_is_sent_to_login():
    response = Client().get(URL)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_full_flow(clinician, client_for):
    web = client_for(clinician)
    assert web.get(URL).status_code == 200
    response = web.post(URL, {"action": "create_client", "name": "TeleOrtho", "webhook_url": ""})
    assert response.status_code == 200
    client = ApiClient.objects.get(user=clinician)
    assert client.webhook_secret in response.content.decode()  # shown once, right now
    assert client.webhook_secret not in web.get(URL).content.decode()

    response = web.post(
        URL,
        {
            "action": "create_token",
            "client": client.pk,
            "name": "prod",
            "scopes": ["read", "write"],
            "expires_in_days": "30",
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = _raw_token(response.content.decode())
    token = api_token_authenticate(raw=raw)
    assert token is not None
    assert token.scopes == ["read", "write"]
    page = web.get(URL).content.decode()
    assert raw not in page
    assert f"fp_{token.prefix}_" in page

    response = web.post(
        URL, {"action": "set_webhook", "client": client.pk, "webhook_url": "https://example.org/h"}
    )
    assert response.status_code == 302
    client.refresh_from_db()
    assert client.webhook_url == "https://example.org/h"

    response = web.post(URL, {"action": "revoke_token", "id": token.pk})
    assert response.status_code == 302
    assert api_token_authenticate(raw=raw) is None
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"api_client.create", "api_token.create", "api_token.revoke"} <= actions


def test_scopes_beyond_the_users_permissions_are_refused(clinician, client_for):
    client = api_client_create(user=clinician, name="app")
    response = client_for(clinician).post(
        URL,
        {"action": "create_token", "client": client.pk, "scopes": ["admin"], "expires_in_days": 5},
    )
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_bad_webhook_url_is_refused(clinician, client_for, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    client = api_client_create(user=clinician, name="app")
    response = client_for(clinician).post(
        URL, {"action": "set_webhook", "client": client.pk, "webhook_url": "http://127.0.0.1:6379/"}
    )
    assert response.status_code == 400
    client.refresh_from_db()
    assert client.webhook_url == ""


def test_foreign_client_and_token_are_404(clinician, clinician_b, client_for):
    client = api_client_create(user=clinician, name="OrthoLink")
    token = ApiToken.objects.create(
        client=client, prefix="abcd1234", token_hash="0" * 64, scopes=["read"]
    )
    other = client_for(clinician_b)
    assert other.post(URL, {"action": "revoke_token", "id": token.pk}).status_code == 404
    assert other.post(URL, {"action": "rotate_secret", "id": client.pk}).status_code == 404
    assert (
        other.post(
            URL,
            {
                "action": "create_token",
                "client": client.pk,
                "scopes": ["read"],
                "expires_in_days": 5,
            },
        ).status_code
        == 404
    )
    token.refresh_from_db()
    assert token.revoked_at is None
    assert "OrthoLink" not in other.get(URL).content.decode()


def test_delivery_log_is_listed(clinician, client_for):
    client = api_client_create(user=clinician, name="app", webhook_url="https://example.org/h")
    case = factories.CaseFactory(created_by=clinician, api_client=client)
    WebhookDelivery.objects.create(
        client=client,
        case=case,
        event="case.predicted",
        status="failed",
        attempts=3,
        last_status_code=503,
        last_error="HTTP 503",
    )
    page = client_for(clinician).get(URL).content.decode()
    assert "case.predicted" in page
    assert "HTTP 503" in page


def test_csrf_is_enforced(clinician):
    web = Client(enforce_csrf_checks=True)
    web.force_login(clinician)
    response = web.post(URL, {"action": "create_client", "name": "x"})
    assert response.status_code == 403
    assert not ApiClient.objects.exists()


def test_staff_revokes_in_the_admin(clinician, client_for):
    from diagnosis.services.tokens import api_token_create

    superuser = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client = api_client_create(user=clinician, name="app")
    token, raw = api_token_create(client=client, user=clinician, scopes=["read"], expires_at=None)
    response = client_for(superuser).post(
        "/admin/diagnosis/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    assert response.status_code == 302
    assert api_token_authenticate(raw=raw) is None
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert event.actor_id == superuser.pk
