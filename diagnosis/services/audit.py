"""The audit trail: one append-only AuditEvent per PHI read/write and auth event."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from diagnosis.models import AuditEvent

logger = logging.getLogger(__name__)


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
