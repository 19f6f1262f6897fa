"""API clients and their tokens: issue (secret shown once), authenticate, revoke.

A token reads `fp_<prefix>_<secret>`. Only the sha256 of the whole string is stored; the prefix
(8 hex characters, unique) finds the row and tells tokens apart on the token page. The secret is
256 bits from `secrets`, so an unsalted fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from diagnosis.exceptions import DomainError, NotFoundError
from diagnosis.models import ApiClient, ApiToken
from diagnosis.selectors.auth import api_token_by_prefix
from diagnosis.services.audit import audit_record
from diagnosis.services.webhooks import webhook_url_validate

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "fp_"  # noqa: S105 (a format marker, not a secret)
PREFIX_LENGTH = 8
# The permissions behind each token scope: effective rights are the intersection of the token's
# scopes and the user's permissions. A scope counts when the user holds any of its permissions
# (review: reading cases for radiologists, adjudicating for admins).
SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ApiToken.Scope.READ: ("diagnosis.view_case",),
    ApiToken.Scope.WRITE: ("diagnosis.add_case",),
    ApiToken.Scope.REVIEW: ("diagnosis.review_case", "diagnosis.adjudicate_case"),
    ApiToken.Scope.ADMIN: ("diagnosis.manage_models",),
}
MAX_TOKEN_DAYS = 365
# last_used_at is written at most this often per token, so reads stay reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class InvalidTokenRequestError(DomainError):
    code, status_code = "invalid_token_request", 400


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def scopes_allowed_for(*, user: AbstractBaseUser) -> list[str]:
    """The scopes that would grant this user something (offered on the token page)."""
    return [scope for scope in SCOPE_PERMISSIONS if _user_holds(user=user, scope=scope)]


@transaction.atomic
def api_client_create(
    *, user: AbstractBaseUser, name: str, webhook_url: str = "", request: HttpRequest | None = None
) -> ApiClient:
    """A new client for `user` with a fresh webhook signing secret."""
    name = name.strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise InvalidTokenRequestError("Give the client a name of 1-100 characters.")
    if webhook_url:
        webhook_url_validate(url=webhook_url)
    client = ApiClient(
        user=user, name=name, webhook_url=webhook_url, webhook_secret=secrets.token_hex(32)
    )
    client.full_clean()
    client.save()
    audit_record(action="api_client.create", actor=user, request=request, obj=client)
    logger.info("api client created", extra={"api_client_id": client.pk, "user_id": user.pk})
    return client


@transaction.atomic
def api_client_set_webhook(
    *,
    client: ApiClient,
    user: AbstractBaseUser,
    webhook_url: str,
    request: HttpRequest | None = None,
) -> ApiClient:
    """Set (or clear, with "") the URL that receives signed case events."""
    _require_owner(client=client, user=user)
    webhook_url = webhook_url.strip()
    if webhook_url:
        webhook_url_validate(url=webhook_url)
    client.webhook_url = webhook_url
    client.full_clean()
    client.save(update_fields=["webhook_url"])
    audit_record(
        action="api_client.set_webhook",
        actor=user,
        request=request,
        obj=client,
        cleared=not webhook_url,
    )
    return client


@transaction.atomic
def api_client_rotate_webhook_secret(
    *, client: ApiClient, user: AbstractBaseUser, request: HttpRequest | None = None
) -> str:
    """A new signing secret; returned so it can be shown once."""
    _require_owner(client=client, user=user)
    client.webhook_secret = secrets.token_hex(32)
    client.save(update_fields=["webhook_secret"])
    audit_record(action="api_client.rotate_secret", actor=user, request=request, obj=client)
    return client.webhook_secret


@transaction.atomic
def api_token_create(
    *,
    client: ApiClient,
    user: AbstractBaseUser,
    scopes: list[str],
    expires_at: datetime | None,
    name: str = "",
    request: HttpRequest | None = None,
) -> tuple[ApiToken, str]:
    """Issue a token. Returns the row and the raw token, which is never stored or shown again."""
    _require_owner(client=client, user=user)
    wanted = sorted(set(scopes))
    if not wanted:
        raise InvalidTokenRequestError("Choose at least one scope.")
    unknown = [s for s in wanted if s not in SCOPE_PERMISSIONS]
    if unknown:
        raise InvalidTokenRequestError("Unknown scope.", scopes=unknown)
    now = timezone.now()
    if expires_at is not None and not now < expires_at <= now + timedelta(days=MAX_TOKEN_DAYS):
        raise InvalidTokenRequestError(
            f"The expiry must lie in the next {MAX_TOKEN_DAYS} days.", max_days=MAX_TOKEN_DAYS
        )
    name = name.strip()
    if len(name) > 100 or "\x00" in name:
        raise InvalidTokenRequestError("The token name is too long.")
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    while ApiToken.objects.filter(prefix=prefix).exists():  # 2**32 values: rare
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        client=client,
        name=name,
        prefix=prefix,
        token_hash=token_hash(raw),
        scopes=wanted,
        expires_at=expires_at,
    )
    audit_record(
        action="api_token.create",
        actor=user,
        request=request,
        obj=token,
        object_id=prefix,
        scopes=wanted,
        client_id=client.pk,
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    logger.info("api token issued", extra={"api_token_id": token.pk, "api_client_id": client.pk})
    return token, raw


@transaction.atomic
def api_token_revoke(
    *, token: ApiToken, user: AbstractBaseUser, request: HttpRequest | None = None
) -> ApiToken:
    """Revoke for good (idempotent: revoking twice keeps the first time). The owner revokes on
    the token page; staff with `change_apitoken` in the Django admin."""
    if not user.has_perm("diagnosis.change_apitoken"):
        _require_owner(client=token.client, user=user)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    audit_record(
        action="api_token.revoke", actor=user, request=request, obj=token, object_id=token.prefix
    )
    logger.info("api token revoked", extra={"api_token_id": token.pk})
    return token


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token matching `raw`, or None (unknown, malformed, revoked, expired, inactive
    client or user). Compares hashes in constant time; touches last_used_at at most once a
    minute with one conditional UPDATE."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    prefix = raw[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + PREFIX_LENGTH]
    if raw[len(TOKEN_PREFIX) + PREFIX_LENGTH : len(TOKEN_PREFIX) + PREFIX_LENGTH + 1] != "_":
        return None
    token = api_token_by_prefix(prefix=prefix)
    if token is None or not hmac.compare_digest(token.token_hash, token_hash(raw)):
        return None
    now = timezone.now()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if not token.client.is_active or not token.client.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).exclude(
            last_used_at__gt=now - LAST_USED_RESOLUTION
        ).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_grants(*, token: ApiToken | None, user: AbstractBaseUser, scope: str) -> bool:
    """Whether a request may act in `scope`: the user's permission, and for token requests also
    the token's scope (a browser session carries every scope its user's permissions allow)."""
    if not _user_holds(user=user, scope=scope):
        return False
    return token is None or scope in (token.scopes or [])


def _user_holds(*, user: AbstractBaseUser, scope: str) -> bool:
    return any(user.has_perm(perm) for perm in SCOPE_PERMISSIONS.get(scope, ()))


def _require_owner(*, client: ApiClient, user: AbstractBaseUser) -> None:
    if client.user_id != user.pk:
        raise NotFoundError("API client not found.")
