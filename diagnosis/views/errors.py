"""Error pages for requests Django answers before (or instead of) a view: unknown URLs, server
errors, malformed requests, CSRF failures. Under /api/ they answer in the API's one error format
(`{"code", "message", "extra"}`, JSON) like every API view does; elsewhere Django's own pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "extra": {}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json("bad_request", "The request is malformed.", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json("permission_denied", "You do not have permission to do this.", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json("not_found", "No such API endpoint.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _json("server_error", "Something went wrong on our side; try again later.", 500)
    return defaults.server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    request.refusal_reason = "csrf_failed"  # type: ignore[attr-defined]  (for the refusal audit)
    if _is_api(request):
        return _json("csrf_failed", "CSRF verification failed; send the CSRF token.", 403)
    return django_csrf_failure(request, reason=reason)
