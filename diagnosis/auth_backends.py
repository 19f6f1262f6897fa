"""The authentication backend: Django's ModelBackend with one permission query per request.

`has_perm` runs on every API request (scopes, case scoping). ModelBackend loads a user's
permissions with two ORM queries; `user_permission_names` reads them with one statement built
once (docs/benchmarks.md, "Hand-written SQL against the ORM"). The set is kept on the user object
of the request under this backend's own attribute, so a removed role stops working at the next
request. Everything else (password authentication, active users only, superusers, per-object
checks, user and group permissions apart) is ModelBackend's.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend

from diagnosis.selectors.auth import user_permission_names

CACHE_ATTRIBUTE = "portal_permissions"


class PortalBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if user_obj.is_superuser:
            return super().get_all_permissions(user_obj, obj)
        permissions: set[str] | None = getattr(user_obj, CACHE_ATTRIBUTE, None)
        if permissions is None:
            permissions = user_permission_names(user_id=user_obj.pk)
            setattr(user_obj, CACHE_ATTRIBUTE, permissions)
        return permissions
