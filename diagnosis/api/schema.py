"""OpenAPI details: every operation documents its error answers in the one error format."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


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
    "429": "Throttled: retry after `extra.retry_after_seconds`.",
}
_WRITE_ERRORS = {
    "409": "The object is in a state that does not allow this.",
    "413": "The request body is too large.",
    "415": "Unsupported media type.",
}


class PortalAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        errors = dict(_ERRORS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors |= _WRITE_ERRORS
        for code, description in errors.items():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = description
                responses[code] = response
        return responses
