"""Auth events go to the audit trail; sign-in stamps the session for the absolute timeout."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.signals import request_started
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from diagnosis.models import AuditEvent
from diagnosis.services.audit import audit_record
from diagnosis.services.sweeper import sweeper_embedded_start

# Read by fracture_portal.middleware.SessionTimeoutMiddleware (absolute session timeout).
LOGIN_AT_KEY = "login_at"


@receiver(user_logged_in)
def _on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[LOGIN_AT_KEY] = int(timezone.now().timestamp())
    audit_record(action="auth.login", actor=user, request=request, obj=user, object_type="user")


@receiver(user_logged_out)
def _on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    reason = getattr(request, "logout_reason", None)
    extra = {"reason": reason} if reason else {}
    audit_record(
        action="auth.logout", actor=user, request=request, obj=user, object_type="user", **extra
    )


@receiver(user_login_failed)
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    audit_record(
        action="auth.login_failed",
        request=request,
        actor=None,
        username=str(credentials.get("username", ""))[:150],
        outcome=AuditEvent.Outcome.FAILURE,
    )


@receiver(post_migrate)
def _sync_roles_after_migrate(sender: Any, app_config: AppConfig, **kwargs: Any) -> None:
    """Keep the role groups' permissions equal to diagnosis.roles after every migrate (and after
    the test runner's flush, which empties the groups migration 0002 created)."""
    if app_config.label != "diagnosis":
        return
    from diagnosis.services.accounts import roles_sync

    roles_sync()


@receiver(request_started)
def _start_embedded_sweeper(sender: Any, **kwargs: Any) -> None:
    """Embedded mode only (settings.EMBEDDED_SWEEPER): the server's first request starts the
    sweeper thread, and later requests stop asking."""
    if sweeper_embedded_start() or not settings.EMBEDDED_SWEEPER:
        request_started.disconnect(_start_embedded_sweeper)
