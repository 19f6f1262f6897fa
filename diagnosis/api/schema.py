"""OpenAPI details that generated clients rely on: every operation documents its error answers in
the one JSON error format (codes from `diagnosis.error_codes`), the token scope it needs
(`x-required-scopes` and its description) and the headers the server sends with them."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from diagnosis.error_codes import error_codes_for_status


class ErrorSerializer(serializers.Serializer):
    """Every error the API returns: a stable snake_case code, a message, and details."""

    code = serializers.CharField(help_text="Stable, machine-readable, snake_case.")
    message = serializers.CharField()
    extra = serializers.DictField(
        child=serializers.JSONField(), help_text="Details, e.g. per-field errors under `fields`."
    )


_ERRORS = {
    "400": "Invalid input (see `extra.fields`).",
    "401": "Missing, invalid, expired or revoked credentials.",
    "403": "The token or account lacks the scope or permission.",
    "404": "Not found, or not visible to this account.",
    "406": "The Accept header asks for a representation the endpoint cannot give.",
    "429": "Throttled: retry after `Retry-After` seconds (also in `extra.retry_after_seconds`).",
}
_WRITE_ERRORS = {
    "409": "The object is in a state that does not allow this.",
    "413": "The request body is too large.",
    "415": "Unsupported media type.",
    "422": "Well-formed, but it cannot be processed as sent.",
}
#: Errors are JSON whatever the endpoint's success media type (a download's 404 too).
ERROR_MEDIA_TYPE = "application/json"

#: Headers every operation may answer with.
_RESPONSE_HEADERS = [
    OpenApiParameter(
        "WWW-Authenticate",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[401],
        description='How to authenticate: `Bearer realm="api"`.',
    ),
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[429],
        description="Seconds to wait before the next request in this scope.",
    ),
]

SCOPE_EXTENSION = "x-required-scopes"


def _error_description(code: str, description: str) -> str:
    codes = error_codes_for_status(int(code))
    if not codes:
        return description
    return f"{description} Codes: {', '.join(f'`{c}`' for c in codes)}."


class PortalAutoSchema(AutoSchema):
    def get_description(self) -> str:
        # The action's own docstring or `extend_schema(description=...)`, never the viewset's
        # class docstring (an internal note that every operation would otherwise repeat).
        action = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        return (getattr(action, "__doc__", None) or "").strip()

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        required_scope = getattr(self.view, "required_scope", None)
        if operation is None or required_scope is None:
            return operation
        scope = required_scope()
        operation[SCOPE_EXTENSION] = [scope]
        note = f"Requires the `{scope}` token scope (and the matching permission of the account)."
        description = operation.get("description", "").strip()
        operation["description"] = f"{description}\n\n{note}" if description else note
        return operation

    def get_override_parameters(self) -> list[Any]:
        return [*super().get_override_parameters(), *_RESPONSE_HEADERS]

    def _get_format_parameters(self) -> list[dict[str, Any]]:
        # The API has no `?format=` override (ApiViewSet negotiates on the Accept header only).
        return []

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        errors = dict(_ERRORS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors |= _WRITE_ERRORS
        for code, description in errors.items():
            if code not in responses:
                response = self._get_response_for_code(
                    ErrorSerializer, code, media_types=[ERROR_MEDIA_TYPE], direction=direction
                )
                response["description"] = _error_description(code, description)
                responses[code] = response
        return responses
