"""Site-wide middleware: security headers Django 5.2 does not set, and the session idle timeout."""

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

_IDLE_KEY = "last_activity"


class SecurityHeadersMiddleware:
    """Adds Content-Security-Policy, Permissions-Policy and cross-origin isolation headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY and not request.path.startswith("/api/docs"):
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class SessionTimeoutMiddleware:
    """Logs a browser session out after SESSION_IDLE_TIMEOUT_SECONDS without a request.

    The absolute timeout is SESSION_COOKIE_AGE (the session is not refreshed on every request).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            now = int(timezone.now().timestamp())
            last = request.session.get(_IDLE_KEY)
            if last is not None and now - int(last) > settings.SESSION_IDLE_TIMEOUT_SECONDS:
                logout(request)
                if not request.path.startswith("/api/"):
                    return redirect(
                        f"{reverse('login')}?{urlencode({'next': request.path, 'expired': 1})}"
                    )
            else:
                request.session[_IDLE_KEY] = now
        return self.get_response(request)
