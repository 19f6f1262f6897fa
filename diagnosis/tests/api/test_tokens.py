"""Token issue, authentication, scopes, expiry, revocation, last-use bookkeeping and audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis.exceptions import NotFoundError
from diagnosis.models import ApiToken, AuditEvent
from diagnosis.services.tokens import (
    InvalidTokenRequestError,
    api_client_create,
    api_token_authenticate,
    api_token_create,
    api_token_revoke,
    token_hash,
)
from diagnosis.tests import factories
from diagnosis.tests.api.conftest import expire

pytestmark = pytest.mark.django_db
LIST_URL = "/api/v1/cases/"


def test_token_is_shown_once_and_stored_hashed(clinician, issue_token):
    raw, token = issue_token(clinician, ["read"])
    assert raw.startswith(f"fp_{token.prefix}_")
    assert len(raw) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == token_hash(raw)
    assert raw not in str(stored.__dict__)
    event = AuditEvent.objects.get(action="api_token.create")
    assert event.actor_id == clinician.pk
    assert event.object_id == token.prefix
    assert raw not in str(event.extra)


def test_authenticate_accepts_only_the_exact_token(clinician, issue_token):
    raw, token = issue_token(clinician, ["read"])
    assert api_token_authenticate(raw=raw) == token
    assert api_token_authenticate(raw=raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert api_token_authenticate(raw=raw + "x") is None
    assert api_token_authenticate(raw="fp_" + token.prefix) is None
    assert api_token_authenticate(raw="") is None
    assert api_token_authenticate(raw="fp_\x00" * 80) is None


def test_authenticate_loads_token_client_user_and_permissions_in_two_queries(
    clinician, issue_token, django_assert_num_queries
):
    raw, token = issue_token(clinician, ["read"])
    api_token_authenticate(raw=raw)  # the first use writes last_used_at; later ones do not
    with django_assert_num_queries(2):  # the token with client and user; the permissions
        found = api_token_authenticate(raw=raw)
        user = found.client.user
        assert (found.pk, found.prefix, found.scopes) == (token.pk, token.prefix, ["read"])
        assert found.expires_at == token.expires_at
        assert found.last_used_at is not None
        assert found.client.pk == token.client.pk
        assert found.client.is_active
        assert (user.pk, user.username, user.is_active) == (clinician.pk, clinician.username, True)
        assert user.has_perm("diagnosis.view_case")
        assert user.has_perm("diagnosis.add_case")
        assert not user.has_perm("diagnosis.manage_models")
    assert user.get_all_permissions() == clinician.get_all_permissions()


def test_authenticate_sees_direct_and_group_permissions(clinician, issue_token):
    from django.contrib.auth.models import Group, Permission

    raw, _ = issue_token(clinician, ["read"])
    direct = Permission.objects.get(codename="manage_models")
    clinician.user_permissions.add(direct)
    extra_group = Group.objects.create(name="extra-readers")
    extra_group.permissions.add(Permission.objects.get(codename="view_all_cases"))
    clinician.groups.add(extra_group)
    user = api_token_authenticate(raw=raw).client.user
    expected = {"diagnosis.manage_models", "diagnosis.view_all_cases", "diagnosis.view_case"}
    assert expected <= user.get_all_permissions()
    assert (
        user.get_all_permissions()
        == type(clinician).objects.get(pk=clinician.pk).get_all_permissions()
    )


def test_authenticate_superuser_holds_every_permission(issue_token):
    superuser = factories.UserFactory(username="root-api", is_superuser=True)
    raw, _ = issue_token(superuser, ["admin"])
    user = api_token_authenticate(raw=raw).client.user
    assert user.is_superuser
    assert user.has_perm("diagnosis.manage_models")


def test_last_used_at_is_written_at_most_once_a_minute(clinician, issue_token):
    raw, token = issue_token(clinician, ["read"])
    api_token_authenticate(raw=raw)
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    api_token_authenticate(raw=raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    api_token_authenticate(raw=raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


def test_anonymous_gets_401_with_www_authenticate(bearer):
    response = bearer(None).get(LIST_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"
    assert set(response.json()) == {"code", "message", "extra"}


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer fp_nope_nope", "Bearer é"])
def test_bad_bearer_header_is_401(bearer, header):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(LIST_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_revoked_and_expired_tokens_are_401(clinician, issue_token, bearer):
    raw_revoked, revoked = issue_token(clinician, ["read"])
    raw_expired, expired = issue_token(clinician, ["read"])
    assert bearer(raw_revoked).get(LIST_URL).status_code == 200
    api_token_revoke(token=revoked, user=clinician)
    expire(expired)
    assert bearer(raw_revoked).get(LIST_URL).status_code == 401
    assert bearer(raw_expired).get(LIST_URL).status_code == 401
    assert (
        AuditEvent.objects.filter(action="api_token.revoke", object_id=revoked.prefix).count() == 1
    )


def test_inactive_user_or_client_is_401(clinician, issue_token, bearer):
    raw, token = issue_token(clinician, ["read"])
    token.client.is_active = False
    token.client.save(update_fields=["is_active"])
    assert bearer(raw).get(LIST_URL).status_code == 401
    token.client.is_active = True
    token.client.save(update_fields=["is_active"])
    clinician.is_active = False
    clinician.save(update_fields=["is_active"])
    assert bearer(raw).get(LIST_URL).status_code == 401


def test_token_without_scope_is_403(clinician, issue_token, bearer):
    raw, _ = issue_token(clinician, ["write"])
    response = bearer(raw).get(LIST_URL)
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


def test_scope_is_intersected_with_the_users_permissions(
    clinician, admin_user, issue_token, bearer
):
    # A clinician's token may carry "admin", but the clinician lacks manage_models.
    raw, _ = issue_token(clinician, ["read", "admin"])
    assert bearer(raw).get("/api/v1/models/").status_code == 403
    raw_admin, _ = issue_token(admin_user, ["admin"])
    assert bearer(raw_admin).get("/api/v1/models/").status_code == 200
    raw_admin_read, _ = issue_token(admin_user, ["read"])
    assert bearer(raw_admin_read).get("/api/v1/models/").status_code == 403


def test_token_rules(clinician, clinician_b):
    client = api_client_create(user=clinician, name="tele-app")
    with pytest.raises(InvalidTokenRequestError):
        api_token_create(client=client, user=clinician, scopes=[], expires_at=None)
    with pytest.raises(InvalidTokenRequestError):
        api_token_create(client=client, user=clinician, scopes=["root"], expires_at=None)
    with pytest.raises(InvalidTokenRequestError):
        api_token_create(
            client=client,
            user=clinician,
            scopes=["read"],
            expires_at=timezone.now() - timedelta(days=1),
        )
    with pytest.raises(NotFoundError):  # someone else's client
        api_token_create(client=client, user=clinician_b, scopes=["read"], expires_at=None)


def test_token_request_does_not_need_csrf(clinician, issue_token, bearer):
    raw, _ = issue_token(clinician, ["write"])
    client = bearer(raw)
    client.handler.enforce_csrf_checks = True
    response = client.post("/api/v1/cases/00000000-0000-0000-0000-000000000000/cancel/")
    assert response.status_code == 404  # authenticated, no CSRF failure


def test_session_write_needs_csrf(clinician, case_with_result):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinician)
    response = client.post(f"/api/v1/cases/{case_with_result.uuid}/cancel/")
    assert response.status_code == 403
    assert "CSRF" in response.json()["message"]
