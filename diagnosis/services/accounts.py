"""Accounts: passwords, role groups, demo accounts and failed-login throttling.

Every code path that sets a password outside Django's own forms (demo_setup, the API, management
commands) goes through `user_set_password`, which runs AUTH_PASSWORD_VALIDATORS first. That is
why there is no `pre_save` guard on the user model: the forms validate, and so does this service.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest

from diagnosis import roles
from diagnosis.services.audit import audit_record

logger = logging.getLogger(__name__)

_FAIL_USER = "login-fail:user:{}"
_FAIL_IP = "login-fail:ip:{}"
_LOCK_USER = "login-lock:user:{}"
_LOCK_IP = "login-lock:ip:{}"

DEMO_ACCOUNTS: tuple[tuple[str, str, bool], ...] = (
    # username, role, staff (Django admin access)
    ("demo-clinician", roles.CLINICIAN, False),
    ("demo-radiologist", roles.RADIOLOGIST, False),
    ("demo-radiologist2", roles.RADIOLOGIST, False),
    ("demo-admin", roles.ADMIN, True),
)


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: str
    password: str


# --- passwords ----------------------------------------------------------------------------------


def user_set_password(*, user: AbstractBaseUser, password: str) -> None:
    """Validate `password` against AUTH_PASSWORD_VALIDATORS (raises django ValidationError), then
    store its hash. Other sessions of the user stay valid only until their next request: Django
    checks the session's password hash on every request."""
    validate_password(password, user=user)
    user.set_password(password)
    user.save(update_fields=["password"])
    logger.info("password set", extra={"user_id": user.pk})


def password_generate(*, length: int = 20) -> str:
    """A random password that passes the validators: letters, digits and a few symbols."""
    alphabet = string.ascii_letters + string.digits + "-_.!"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
        ):
            return candidate


# --- roles --------------------------------------------------------------------------------------


def _permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


@transaction.atomic
def roles_sync() -> dict[str, int]:
    """Make each role group hold exactly the permissions in diagnosis.roles. Idempotent.

    Returns the number of permissions per group."""
    counts: dict[str, int] = {}
    for role, dotted_names in roles.ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([_permission(name) for name in dotted_names])
        counts[role] = len(dotted_names)
    logger.info("roles synced", extra={"roles": sorted(counts)})
    return counts


# --- demo accounts ------------------------------------------------------------------------------


@transaction.atomic
def demo_accounts_setup() -> list[DemoAccount]:
    """Create (or reset) one demo account per role with a fresh random password. Idempotent:
    re-running resets the passwords and role memberships. The passwords are returned once and
    stored nowhere but as hashes."""
    roles_sync()
    user_model = get_user_model()
    accounts = []
    for username, role, staff in DEMO_ACCOUNTS:
        user, _ = user_model.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.org"}
        )
        user.is_active = True
        user.is_staff = staff
        user.is_superuser = False
        user.save(update_fields=["is_active", "is_staff", "is_superuser"])
        user.groups.set([Group.objects.get(name=role)])
        password = password_generate()
        user_set_password(user=user, password=password)
        login_failures_reset(username=username)
        accounts.append(DemoAccount(username=username, role=role, password=password))
    return accounts


# --- failed-login throttling --------------------------------------------------------------------


def _key(template: str, value: str) -> str:
    # Hashed: usernames may hold characters a cache key cannot, and keys should not carry them.
    digest = hashlib.sha256(value.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]
    return template.format(digest)


def login_is_locked(*, username: str, ip: str | None) -> bool:
    """True while the username or the client address is locked out. Whether the account exists
    plays no part, so the answer reveals nothing about it."""
    keys = [_key(_LOCK_USER, username)]
    if ip:
        keys.append(_key(_LOCK_IP, ip))
    return any(cache.get_many(keys).values())


def _count_failure(fail_key: str, lock_key: str, limit: int) -> bool:
    window = settings.LOGIN_LOCKOUT_SECONDS
    if cache.add(fail_key, 1, timeout=window):
        count = 1
    else:
        try:
            count = cache.incr(fail_key)
        except ValueError:  # expired between add() and incr()
            cache.set(fail_key, 1, timeout=window)
            count = 1
    if count >= limit:
        cache.set(lock_key, 1, timeout=window)
        return True
    return False


def login_failure_record(*, username: str, ip: str | None) -> bool:
    """Count one failed login for the username and the address (window LOGIN_LOCKOUT_SECONDS).
    Returns True when this failure locked either of them out for LOGIN_LOCKOUT_SECONDS."""
    locked = _count_failure(
        _key(_FAIL_USER, username), _key(_LOCK_USER, username), settings.LOGIN_FAILURE_LIMIT
    )
    if ip:
        locked |= _count_failure(
            _key(_FAIL_IP, ip), _key(_LOCK_IP, ip), settings.LOGIN_IP_FAILURE_LIMIT
        )
    return locked


def login_failures_reset(*, username: str) -> None:
    """A successful login (or an admin reset) clears the username's counter and lock; the
    address counter is left to expire, so one good account cannot unlock a guessing client."""
    cache.delete_many([_key(_FAIL_USER, username), _key(_LOCK_USER, username)])


def login_locked_usernames(*, usernames: list[str]) -> set[str]:
    """Which of `usernames` are locked out now (one cache round trip for the list)."""
    keys = {_key(_LOCK_USER, username): username for username in usernames}
    return {keys[key] for key, value in cache.get_many(list(keys)).items() if value}


def login_lock_clear(
    *,
    users: list[AbstractBaseUser],
    actor: AbstractBaseUser | None,
    request: HttpRequest | None = None,
) -> int:
    """An administrator lifts the sign-in lockout of `users` (failure counter and lock), e.g. after
    confirming a locked-out radiologist by phone. Audited per account whether or not it was
    locked; returns how many were locked. The lockout of a guessing address is not lifted here:
    it expires on its own (LOGIN_LOCKOUT_SECONDS)."""
    usernames = [user.get_username() for user in users]
    locked = login_locked_usernames(usernames=usernames)
    for user in users:
        username = user.get_username()
        login_failures_reset(username=username)
        audit_record(
            action="account.unlock",
            actor=actor,
            request=request,
            obj=user,
            was_locked=username in locked,
        )
    logger.info("sign-in lockout cleared", extra={"count": len(users), "locked": len(locked)})
    return len(locked)
