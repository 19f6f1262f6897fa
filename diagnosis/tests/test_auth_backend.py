"""The authentication backend answers permission checks as Django's ModelBackend does, with one
query, and keeps its cache under its own name (no private attribute of Django is written)."""

from __future__ import annotations

import copy

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from diagnosis.auth_backends import CACHE_ATTRIBUTE, PortalBackend
from diagnosis.selectors.auth import api_token_by_prefix
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("factory", ["ClinicianFactory", "RadiologistFactory", "AdminFactory"])
def test_same_permissions_as_model_backend(factory):
    user = getattr(factories, factory)()
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    expected = ModelBackend().get_all_permissions(copy.copy(user))
    fresh = type(user).objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as queries:
        assert PortalBackend().get_all_permissions(fresh) == expected
        assert fresh.has_perm("diagnosis.view_auditevent")
        assert not fresh.has_perm("diagnosis.no_such_permission")
    assert len(queries) == 1
    assert getattr(fresh, CACHE_ATTRIBUTE) == expected
    assert not any(name.startswith("_") and "perm" in name for name in vars(fresh))


def test_inactive_superuser_and_object_checks():
    user = factories.RadiologistFactory()
    assert PortalBackend().get_all_permissions(user, obj=object()) == set()
    user.is_active = False
    assert PortalBackend().get_all_permissions(user) == set()
    admin = factories.UserFactory(is_superuser=True)
    assert "diagnosis.manage_models" in PortalBackend().get_all_permissions(admin)


def test_removed_role_stops_at_the_next_request():
    user = factories.RadiologistFactory()
    assert type(user).objects.get(pk=user.pk).has_perm("diagnosis.review_case")
    user.groups.remove(*Group.objects.all())
    assert not type(user).objects.get(pk=user.pk).has_perm("diagnosis.review_case")


def test_token_by_prefix_attaches_client_and_user():
    from diagnosis.services.tokens import api_client_create, api_token_create

    user = factories.ClinicianFactory()
    client = api_client_create(user=user, name="lab")
    token, _ = api_token_create(client=client, user=user, scopes=["read"], expires_at=None)
    with CaptureQueriesContext(connection) as queries:
        found = api_token_by_prefix(prefix=token.prefix)
        assert found.client.user.username == user.username
    assert len(queries) == 1
    assert found == token
    assert found.scopes == token.scopes
    assert api_token_by_prefix(prefix="00000000") is None
