"""The audit trail: one append-only AuditEvent per PHI read/write and auth event, and the refused
accesses (`audit_refusal`, aggregated in bursts so that nobody can flood the table)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

from diagnosis.models import AuditEvent

logger = logging.getLogger(__name__)

REFUSAL_ACTION = "access.denied"


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address. REMOTE_ADDR only: X-Forwarded-For is trusted only via the proxy's
    own rewrite of REMOTE_ADDR (gunicorn --forwarded-allow-ips), never from the client."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    action: str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    request: HttpRequest | None = None,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    outcome: str = AuditEvent.Outcome.SUCCESS,
    username: str = "",
    **extra: Any,
) -> AuditEvent:
    """Append one audit row. `obj` (a model instance) fills object_type/object_id; cases use
    their public uuid. Never pass image bytes, names or clinical free text in `extra`."""
    if actor is None and request is not None:
        actor = getattr(request, "user", None)
    token = getattr(request, "auth", None) if request is not None else None
    if token is not None and getattr(token, "pk", None) is not None and "token_id" not in extra:
        extra["token_id"] = token.pk  # an API call: which token acted
    if request is not None and outcome == AuditEvent.Outcome.DENIED:
        # The refusal is audited with its reason: the refusal middleware adds no second row (on
        # the Django request, also when given DRF's wrapper).
        getattr(request, "_request", request).refusal_audited = True
    actor_id = actor.pk if actor is not None and actor.is_authenticated else None
    if actor is not None and actor.is_authenticated:
        username = actor.get_username()
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or str(getattr(obj, "uuid", None) or obj.pk)
    event = AuditEvent.objects.create(
        actor_id=actor_id,
        actor_username=username[:150],
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:64],
        ip=client_ip(request),
        outcome=outcome,
        extra=extra,
    )
    logger.info(
        "audit %s %s", action, outcome, extra={"audit_id": event.pk, "object_id": event.object_id}
    )
    return event


# --- refused accesses --------------------------------------------------------------------------
#
# Every refused request on a route that touches patient data or administration becomes an
# `access.denied` row (outcome denied): actor or token, client address, route, object id, reason.
# Bursts are aggregated so that a client hammering a route cannot grow the table without bound:
# within one AUDIT_REFUSAL_WINDOW_SECONDS window, the refusals of one (actor or token, address,
# route, object, reason) are written at their 1st, 10th, 100th... occurrence (`extra.count` says how many so far),
# and once AUDIT_REFUSAL_MAX_ROWS rows were written in the window (all keys together), only every
# power-of-ten refusal of the window is written (`access.denied_flood`). The counters live in the
# cache; without it, in this process.

_local_counts: dict[str, int] = {}
_local_lock = threading.Lock()


def _bump(key: str, window: int) -> int:
    try:
        if cache.add(key, 1, timeout=2 * window):
            return 1
        return int(cache.incr(key))
    except (RedisError, OSError, ValueError):
        with _local_lock:
            bucket = key.split(":", 2)[1]
            for stale in [k for k in _local_counts if k.split(":", 2)[1] != bucket]:
                del _local_counts[stale]
            _local_counts[key] = _local_counts.get(key, 0) + 1
            return _local_counts[key]


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


def audit_refusal(
    *,
    actor_id: int | None,
    username: str,
    token_id: int | None,
    token_prefix: str,
    ip: str | None,
    route: str,
    method: str,
    status: int,
    reason: str,
    object_type: str = "",
    object_id: str = "",
) -> AuditEvent | None:
    """Record one refused request (see above). Returns the row written, or None when the refusal
    was counted into a burst already on record."""
    window = settings.AUDIT_REFUSAL_WINDOW_SECONDS
    bucket = int(time.time() // window)
    who = f"{actor_id or ''}|{token_id or token_prefix}|{ip or ''}|{route}|{object_id}|{reason}"
    digest = hashlib.sha256(who.encode("utf-8", "replace")).hexdigest()[:32]
    count = _bump(f"audit-refusal:{bucket}:{digest}", window)
    if not _is_power_of_ten(count):
        return None
    extra: dict[str, Any] = {
        "route": route[:200],
        "method": method[:10],
        "status": status,
        "reason": reason[:64],
        "count": count,
        "window_seconds": window,
    }
    if token_id is not None:
        extra["token_id"] = token_id
    elif token_prefix:
        extra["token_prefix"] = token_prefix[:12]
    action = REFUSAL_ACTION
    rows = _bump(f"audit-refusal:{bucket}:rows", window)
    if rows > settings.AUDIT_REFUSAL_MAX_ROWS:
        total = _bump(f"audit-refusal:{bucket}:flood", window)
        if not _is_power_of_ten(total):
            return None
        action, extra["flood_count"] = "access.denied_flood", total
    event = AuditEvent.objects.create(
        actor_id=actor_id,
        actor_username=username[:150],
        action=action,
        object_type=object_type[:64],
        object_id=str(object_id)[:64],
        ip=ip,
        outcome=AuditEvent.Outcome.DENIED,
        extra=extra,
    )
    logger.info("audit %s %s", action, reason, extra={"audit_id": event.pk, "count": count})
    return event
