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
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest
from django.utils import timezone
from redis.exceptions import RedisError

from diagnosis import roles
from diagnosis.models import AuditEvent
from diagnosis.services.audit import audit_record
from diagnosis.services.notifications import notification_security

logger = logging.getLogger(__name__)

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
        login_locks_clear(username=username)
        accounts.append(DemoAccount(username=username, role=role, password=password))
    return accounts


# --- failed-login throttling --------------------------------------------------------------------
#
# Three counters, each with its own lock (see docs/security.md, "Sign-in lockout"):
# - per username *and* client address: LOGIN_FAILURE_LIMIT failures lock that pair for
#   LOGIN_LOCKOUT_SECONDS. Someone guessing from one address locks out only that address, never
#   the account's owner elsewhere;
# - per client address: LOGIN_IP_FAILURE_LIMIT failures (any usernames) lock the address;
# - per username from all addresses (slow back-off): every LOGIN_USER_FAILURE_LIMIT failures within
#   LOGIN_USER_WINDOW_SECONDS lock the username everywhere for LOGIN_USER_BACKOFF_SECONDS, doubled
#   at each further step, at most LOGIN_LOCKOUT_SECONDS. It takes several addresses to reach.
# The account's owner is told (in-app notification and e-mail) when a lock falls on their account.
#
# The counters live in the shared cache (Redis). When the cache cannot be reached, sign-in goes on
# and the locks are derived from the audit trail in the database instead (failed sign-ins of the
# pair within LOGIN_LOCKOUT_SECONDS since its last success or the account's last unlock, and of
# the address); the slow per-username back-off is not applied then.

_FAIL_PAIR = "login-fail:pair:{}"
_LOCK_PAIR = "login-lock:pair:{}"
_FAIL_IP = "login-fail:ip:{}"
_LOCK_IP = "login-lock:ip:{}"
_FAIL_USER = "login-fail:user:{}"
_LOCK_USER = "login-lock:user:{}"
_PAIRS_LOCKED = "login-pairs-locked:user:{}"  # some address is locked out of this username
_GENERATION = "login-gen:user:{}"  # bumped by an unlock: every pair counter of the user restarts
_NOTIFIED = "login-notified:user:{}"

# What a cache that cannot be reached raises (redis-py's errors; sockets' own).
CACHE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


def _digest(*values: str) -> str:
    # Hashed: usernames may hold characters a cache key cannot, and keys should not carry them.
    joined = "\x00".join(value.strip().lower() for value in values)
    return hashlib.sha256(joined.encode("utf-8", "replace")).hexdigest()[:32]


def _key(template: str, *values: str) -> str:
    return template.format(_digest(*values))


def _pair_keys(username: str, ip: str | None) -> tuple[str, str]:
    generation = str(cache.get(_key(_GENERATION, username)) or 0)
    pair = _digest(username, ip or "", generation)
    return _FAIL_PAIR.format(pair), _LOCK_PAIR.format(pair)


def login_is_locked(*, username: str, ip: str | None) -> bool:
    """True while this username is locked out from this address, the address is locked out, or the
    username is in its slow back-off. Whether the account exists plays no part, so the answer
    reveals nothing about it. Works without the cache (see above)."""
    try:
        keys = [_pair_keys(username, ip)[1], _key(_LOCK_USER, username)]
        if ip:
            keys.append(_key(_LOCK_IP, ip))
        return any(cache.get_many(keys).values())
    except CACHE_ERRORS:
        logger.warning("login throttle: cache unreachable, using the audit trail")
        return _locked_from_audit(username=username, ip=ip)


def _count(fail_key: str, window: int) -> int:
    if cache.add(fail_key, 1, timeout=window):
        return 1
    try:
        return cache.incr(fail_key)
    except ValueError:  # expired between add() and incr()
        cache.set(fail_key, 1, timeout=window)
        return 1


def login_failure_record(*, username: str, ip: str | None) -> bool:
    """Count one failed sign-in. Returns True when the username is now locked out from this
    address (this failure locked the pair, the address or the username's back-off). Tells the
    account's owner when a lock falls on their account."""
    lockout = settings.LOGIN_LOCKOUT_SECONDS
    try:
        fail_pair, lock_pair = _pair_keys(username, ip)
        pair_locked = _count(fail_pair, lockout) >= settings.LOGIN_FAILURE_LIMIT
        if pair_locked:
            cache.set(lock_pair, 1, timeout=lockout)
            cache.set(_key(_PAIRS_LOCKED, username), 1, timeout=lockout)
        ip_locked = False
        if ip and _count(_key(_FAIL_IP, ip), lockout) >= settings.LOGIN_IP_FAILURE_LIMIT:
            cache.set(_key(_LOCK_IP, ip), 1, timeout=lockout)
            ip_locked = True
        backoff = _user_backoff(username)
    except CACHE_ERRORS:
        logger.warning("login throttle: cache unreachable, using the audit trail")
        pairs = _audit_failures(username=username, ip=ip)
        if pairs == settings.LOGIN_FAILURE_LIMIT:
            _notify_owner(username=username, ip=ip, backoff_seconds=0, throttle=False)
        return _locked_from_audit(username=username, ip=ip)
    if pair_locked or backoff:
        _notify_owner(username=username, ip=ip, backoff_seconds=backoff, throttle=True)
    return pair_locked or ip_locked or bool(backoff)


def _user_backoff(username: str) -> int:
    """Count the failure against the username (all addresses); at every LOGIN_USER_FAILURE_LIMIT-th
    failure lock it everywhere for a back-off that doubles per step. Returns the seconds locked
    now, 0 when this failure set no lock."""
    limit = settings.LOGIN_USER_FAILURE_LIMIT
    count = _count(_key(_FAIL_USER, username), settings.LOGIN_USER_WINDOW_SECONDS)
    if count % limit:
        return 0
    step = count // limit
    seconds = min(
        settings.LOGIN_USER_BACKOFF_SECONDS * 2 ** min(step - 1, 16),
        settings.LOGIN_LOCKOUT_SECONDS,
    )
    cache.set(_key(_LOCK_USER, username), 1, timeout=seconds)
    return seconds


def _since_reset(username: str, *, ip: str | None, logins: bool = True) -> datetime:
    """Start of the audit window: LOGIN_LOCKOUT_SECONDS ago, or the user's last unlock or (with
    `logins`) last successful sign-in from `ip`, if later."""
    since = timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    user = get_user_model().objects.filter(username__iexact=username.strip()).first()
    if user is None:
        return since
    resets = Q(action="account.unlock", object_type="user", object_id=str(user.pk))
    if logins:
        resets |= Q(action="auth.login", actor_id=user.pk, ip=ip)
    latest = (
        AuditEvent.objects.filter(resets, created_at__gt=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return latest if latest is not None else since


def _audit_failures(*, username: str, ip: str | None) -> int:
    return AuditEvent.objects.filter(
        action="auth.login_failed",
        actor_username__iexact=username.strip(),
        ip=ip,
        created_at__gt=_since_reset(username, ip=ip),
    ).count()


def _locked_from_audit(*, username: str, ip: str | None) -> bool:
    """The cache-less lock: the pair's and the address's failed sign-ins in the audit trail."""
    if _audit_failures(username=username, ip=ip) >= settings.LOGIN_FAILURE_LIMIT:
        return True
    if not ip:
        return False
    since = timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    failures = AuditEvent.objects.filter(action="auth.login_failed", ip=ip, created_at__gt=since)
    return failures.count() >= settings.LOGIN_IP_FAILURE_LIMIT


def _notify_owner(*, username: str, ip: str | None, backoff_seconds: int, throttle: bool) -> None:
    """Tell the account's owner, at most once per LOGIN_LOCKOUT_SECONDS (when the cache is up)."""
    user = (
        get_user_model().objects.filter(username__iexact=username.strip(), is_active=True).first()
    )
    if user is None:
        return
    if throttle and not cache.add(
        _key(_NOTIFIED, username), 1, timeout=settings.LOGIN_LOCKOUT_SECONDS
    ):
        return
    minutes = max(1, round(settings.LOGIN_LOCKOUT_SECONDS / 60))
    if backoff_seconds:
        what = (
            f"Repeated failed sign-ins to your account from several addresses: sign-in is paused "
            f"for {max(1, round(backoff_seconds / 60))} minute(s) everywhere."
        )
    else:
        what = (
            f"Repeated failed sign-ins to your account from address {ip or 'unknown'}: that "
            f"address is blocked for {minutes} minutes; your other devices are not."
        )
    notification_security(
        user=user,
        message=f"{what} If this was not you, tell an administrator.",
    )
    logger.info("sign-in lock: owner notified", extra={"user_id": user.pk})


def login_failures_reset(*, username: str, ip: str | None = None) -> None:
    """A successful sign-in from `ip` clears the username's pair counter for that address and its
    all-address counter. Address counters are left to expire, so one good account cannot unlock a
    guessing client. Without the cache there is nothing to clear (the audit window restarts at
    the sign-in)."""
    try:
        cache.delete_many([*_pair_keys(username, ip), _key(_FAIL_USER, username)])
    except CACHE_ERRORS:
        logger.warning("login throttle: cache unreachable, nothing to reset")


def login_locked_usernames(*, usernames: list[str]) -> set[str]:
    """Which of `usernames` are locked out now, from some address or everywhere (one cache round
    trip for the list; without the cache, from the audit trail)."""
    keys: dict[str, str] = {}
    for username in usernames:
        keys[_key(_LOCK_USER, username)] = username
        keys[_key(_PAIRS_LOCKED, username)] = username
    try:
        return {keys[key] for key, value in cache.get_many(list(keys)).items() if value}
    except CACHE_ERRORS:
        return {
            username
            for username in usernames
            if AuditEvent.objects.filter(
                action="auth.login_failed",
                actor_username__iexact=username,
                created_at__gt=_since_reset(username, ip=None, logins=False),
            )
            .values("ip")
            .annotate(n=Count("id"))
            .filter(n__gte=settings.LOGIN_FAILURE_LIMIT)
            .exists()
        }


def login_locks_clear(*, username: str) -> None:
    """Forget every sign-in counter and lock of `username` (all addresses, the back-off); the
    address locks stay. Not audited: `login_lock_clear` is the audited, administrator's path."""
    try:
        generation = _key(_GENERATION, username)
        cache.set(generation, int(cache.get(generation) or 0) + 1, timeout=None)
        cache.delete_many(
            [_key(_LOCK_USER, username), _key(_FAIL_USER, username), _key(_PAIRS_LOCKED, username)]
        )
    except CACHE_ERRORS:
        logger.warning("login throttle: cache unreachable, unlock recorded in the audit only")


def login_lock_clear(
    *,
    users: list[AbstractBaseUser],
    actor: AbstractBaseUser | None,
    request: HttpRequest | None = None,
) -> int:
    """An administrator lifts the sign-in lockout of `users`: every address's lock on the account
    and its back-off, e.g. after confirming a locked-out radiologist by phone. Audited per account
    whether or not it was locked (the audit row also restarts the cache-less window); returns how
    many were locked. The lockout of a guessing address itself is not lifted here: it expires on
    its own (LOGIN_LOCKOUT_SECONDS)."""
    usernames = [user.get_username() for user in users]
    locked = login_locked_usernames(usernames=usernames)
    for user in users:
        username = user.get_username()
        login_locks_clear(username=username)
        audit_record(
            action="account.unlock",
            actor=actor,
            request=request,
            obj=user,
            was_locked=username in locked,
        )
    logger.info("sign-in lockout cleared", extra={"count": len(users), "locked": len(locked)})
    return len(locked)
