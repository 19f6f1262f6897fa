"""Sign-in and sign-out pages, with failed-login throttling (per username and per address)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from diagnosis.models import AuditEvent
from diagnosis.services.accounts import (
    login_failure_record,
    login_failures_reset,
    login_is_locked,
)
from diagnosis.services.audit import audit_record, client_ip

LOCKED_MESSAGE = (
    "Too many failed sign-in attempts. Sign-in is blocked for %(minutes)d minutes; "
    "try again later or ask an administrator."
)


class PortalAuthenticationForm(AuthenticationForm):
    """Refuses to authenticate while the username is locked out from this client address (or
    everywhere, in its back-off) or the address itself is locked out.

    The lock and its message do not depend on whether the account exists (no enumeration)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "locked": LOCKED_MESSAGE,
    }

    def _locked_error(self) -> forms.ValidationError:
        minutes = max(1, round(settings.LOGIN_LOCKOUT_SECONDS / 60))
        return forms.ValidationError(
            self.error_messages["locked"], code="locked", params={"minutes": minutes}
        )

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        if username and login_is_locked(username=username, ip=ip):
            audit_record(
                action="auth.login_blocked",
                request=self.request,
                actor=None,
                username=username[:150],
                outcome=AuditEvent.Outcome.DENIED,
            )
            raise self._locked_error()
        try:
            cleaned = super().clean()
        except forms.ValidationError as exc:
            # The failed attempt itself is audited by the user_login_failed receiver.
            if (
                username
                and exc.code == "invalid_login"
                and login_failure_record(username=username, ip=ip)
            ):
                raise self._locked_error() from exc
            raise
        login_failures_reset(username=username, ip=ip)
        return cleaned


class PortalLoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = PortalAuthenticationForm
    redirect_authenticated_user = True


class PortalLogoutView(auth_views.LogoutView):
    """POST only (Django 5): logging out flushes the session server-side."""


def admin_login_redirect(request: HttpRequest) -> HttpResponse:
    """The Django admin signs in through the portal's login page, so the same throttling and
    audit apply to it. A signed-in user without admin access gets 403 (not a redirect loop)."""
    if request.user.is_authenticated:
        if not request.user.is_staff:
            raise PermissionDenied
        return redirect("admin:index")
    next_url = request.GET.get("next") or reverse("admin:index")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("admin:index")
    return redirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
