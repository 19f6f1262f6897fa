"""Scope checks: a request may act in a scope when its user holds the scope's permission and,
for token requests, the token carries the scope (effective rights = scopes ∩ permissions)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from diagnosis.models import ApiToken
from diagnosis.services.tokens import token_grants


def request_token(request: Request) -> ApiToken | None:
    return request.auth if isinstance(request.auth, ApiToken) else None


class HasScope(BasePermission):
    """The view names the scope of each action through `required_scope()`."""

    message = "This token or account lacks the scope this endpoint needs."
    code = "insufficient_scope"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        scope = view.required_scope()
        if token_grants(token=request_token(request), user=user, scope=scope):
            return True
        self.message = f"This token or account lacks the '{scope}' scope."
        return False
