"""One error format for the whole API: {"code", "message", "extra"}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from diagnosis.exceptions import DomainError

logger = logging.getLogger(__name__)

# Redis (the cache, or the broker) unreachable in a place that does not absorb it: the client is
# told to retry, in the API's format, rather than getting Django's HTML "Server Error (500)".
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisError, BrokerOperationalError)
RETRY_AFTER_SECONDS = 30


def _outage(exc: BaseException, context: dict[str, Any]) -> Response:
    view = context.get("view")
    logger.warning(
        "api: backing service unavailable",
        extra={"error": type(exc).__name__, "view": type(view).__name__ if view else ""},
    )
    body = {
        "code": "service_unavailable",
        "message": "A backing service is briefly unavailable; retry in a moment.",
        "extra": {"retry_after_seconds": RETRY_AFTER_SECONDS},
    }
    return Response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _suspicious(exc: SuspiciousOperation) -> Response:
    """Request-parsing limits (body size, field and file counts) as 4xx in the one format."""
    if isinstance(exc, RequestDataTooBig):
        code, status, message = "request_too_large", 413, "The request body is too large."
    elif isinstance(exc, TooManyFilesSent):
        code, status, message = "too_many_files", 400, "Too many files in one request."
    elif isinstance(exc, TooManyFieldsSent):
        code, status, message = "too_many_fields", 400, "Too many fields in one request."
    else:
        code, status, message = "bad_request", 400, "The request is malformed."
    return Response({"code": code, "message": message, "extra": {}}, status=status)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OUTAGE_ERRORS):
        return _outage(exc, context)
    if isinstance(exc, SuspiciousOperation):
        return _suspicious(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "message": exc.message, "extra": exc.extra}
        return Response(body, status=exc.status_code)
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django logs it and answers 500
    if isinstance(exc, exceptions.ValidationError):
        body = {
            "code": "invalid",
            "message": "The request is invalid.",
            "extra": {"fields": exc.detail},
        }
    else:
        detail = getattr(exc, "detail", "")
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = {"code": str(code), "message": str(detail), "extra": {}}
        wait = getattr(exc, "wait", None)
        if wait is not None:
            body["extra"] = {"retry_after_seconds": wait}
    response.data = body
    return response
