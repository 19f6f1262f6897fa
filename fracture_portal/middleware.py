"""Site-wide middleware: the trusted proxy's X-Forwarded-Proto, security headers Django 5.2 does
not set (CSP, no-store on everything not cached on purpose), the one request-size limit, and the
session timeouts."""

import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.http import urlencode

from diagnosis.services.audit import audit_refusal, client_ip
from diagnosis.signals import LOGIN_AT_KEY

IDLE_KEY = "last_activity"
# The idle stamp is rewritten at most this often, so reads do not write the session every time.
_IDLE_RESOLUTION_SECONDS = 30


def _from_trusted_proxy(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.TRUSTED_PROXIES)


class TrustedProxyMiddleware:
    """Drops X-Forwarded-Proto unless the request comes from TRUSTED_PROXIES, so only the TLS proxy
    can tell Django a request was HTTPS (SECURE_PROXY_SSL_HEADER: secure cookies, the HTTPS
    redirect, CSRF's referer check). First in MIDDLEWARE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_X_FORWARDED_PROTO" in request.META and not _from_trusted_proxy(request):
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)


class SecurityHeadersMiddleware:
    """Adds Content-Security-Policy (the API docs' own), Permissions-Policy and cross-origin
    isolation headers, and `Cache-Control: no-store` (Django's never-cache set) to every response
    that does not set its own caching: pages and API answers carry patient data, which no browser
    or proxy may keep. Static files (WhiteNoise, before this) and the image files, which set
    `private` caching themselves, are not touched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = (
            settings.API_DOCS_CONTENT_SECURITY_POLICY
            if request.path.startswith("/api/docs")
            else settings.CONTENT_SECURITY_POLICY
        )
        if policy:
            response.headers.setdefault("Content-Security-Policy", policy)
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or (
        "application/json" in request.headers.get("Accept", "")
    )


class RequestSizeLimitMiddleware:
    """The one request-size limit (settings.DATA_UPLOAD_MAX_MEMORY_SIZE, env
    UPLOAD_MAX_REQUEST_BYTES) for every path, files included, refused from the Content-Length
    header before anything reads the body (Django's own check skips file parts, so without this
    the API took any number of files up to the per-file limit each). A body without a
    Content-Length is never read by Django at all. Answered 413 `request_too_large` in the path's
    error format: the API's `{code, message, extra}`, the pages' JSON for script requests, a page
    otherwise. Before the session and CSRF middleware, which may read a form body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is None or length <= limit:
            return self.get_response(request)
        message = f"The request is larger than {filesizeformat(limit)} in total."
        if request.path.startswith("/api/"):
            body = {"code": "request_too_large", "message": message, "extra": {"limit": limit}}
            return JsonResponse(body, status=413)
        if _wants_json(request):
            body = {"code": "request_too_large", "message": message, "limit": limit}
            return JsonResponse(body, status=413)
        return render(request, "request_too_large.html", {"message": message}, status=413)


class SessionTimeoutMiddleware:
    """Logs a browser session out after SESSION_IDLE_TIMEOUT_SECONDS without a request, and
    SESSION_ABSOLUTE_TIMEOUT_SECONDS after sign-in whatever the activity.

    The sign-in time is stamped by the user_logged_in receiver (diagnosis.signals); a session
    without the stamp (created before it existed) is stamped on its first request.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            now = int(timezone.now().timestamp())
            session = request.session
            last = session.get(IDLE_KEY)
            login_at = session.get(LOGIN_AT_KEY)
            idle = last is not None and now - int(last) > settings.SESSION_IDLE_TIMEOUT_SECONDS
            expired = (
                login_at is not None
                and now - int(login_at) > settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS
            )
            if idle or expired:
                request.logout_reason = "absolute_timeout" if expired else "idle_timeout"  # type: ignore[attr-defined]
                logout(request)
                if not request.path.startswith("/api/"):
                    return redirect(
                        f"{reverse('login')}?{urlencode({'next': request.path, 'expired': 1})}"
                    )
                # API calls go on anonymously: a token still authenticates, a session does not.
                return self.get_response(request)
            if login_at is None:
                session[LOGIN_AT_KEY] = now
            if last is None or now - int(last) >= _IDLE_RESOLUTION_SECONDS:
                session[IDLE_KEY] = now
        return self.get_response(request)


# Routes whose refusals are not about patient data or administration: the login page (failed
# sign-ins have their own audit), the health check, the API's catch-all for unknown paths.
_UNAUDITED_ROUTES = frozenset({"login", "healthz", "api:not-found", "admin-login-redirect"})
_REFUSALS = {401: "not_authenticated", 403: "forbidden", 404: "not_found"}
# URL keyword arguments that name the object a request is about (first found wins): its type.
_OBJECT_KWARGS = {
    "case_uuid": "case",
    "uuid": "case",
    "version": "modelversion",
    "token_id": "apitoken",
    "client_id": "apiclient",
    "run_id": "trainingrun",
    "pk": "object",
}


def _refusal_reason(request: HttpRequest, response: HttpResponse) -> str:
    explicit = getattr(request, "refusal_reason", "")
    if explicit:
        return explicit
    data = getattr(response, "data", None)  # a DRF answer carries the API's error code
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return data["code"]
    return _REFUSALS[response.status_code]


def _token_prefix(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    parts = header.split()
    if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].startswith("fp_"):
        return parts[1].split("_")[1][:12]  # the public part of "fp_<prefix>_<secret>"
    return ""


class RefusalAuditMiddleware:
    """Audits every request refused with 401, 403 or 404 on a real route (pages, API, admin), with
    the actor or API token, client address, route, object id and reason, unless the view audited
    the refusal itself. Aggregated in bursts by `diagnosis.services.audit.audit_refusal`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code in _REFUSALS and not getattr(request, "refusal_audited", False):
            match = getattr(request, "resolver_match", None)
            if match is not None and match.view_name not in _UNAUDITED_ROUTES:
                self._audit(request, response, match.view_name, match.kwargs)
        return response

    @staticmethod
    def _audit(
        request: HttpRequest, response: HttpResponse, route: str, kwargs: dict[str, object]
    ) -> None:
        user = getattr(request, "user", None)
        authenticated = user is not None and user.is_authenticated
        token = getattr(request, "auth", None)
        name = next((key for key in _OBJECT_KWARGS if key in kwargs), "")
        audit_refusal(
            actor_id=user.pk if authenticated else None,
            username=user.get_username() if authenticated else "",
            token_id=getattr(token, "pk", None),
            token_prefix=_token_prefix(request),
            ip=client_ip(request),
            route=route,
            method=request.method or "",
            status=response.status_code,
            reason=_refusal_reason(request, response),
            object_type=_OBJECT_KWARGS.get(name, ""),
            object_id=str(kwargs.get(name, "")) if name else "",
        )
