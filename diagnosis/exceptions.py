"""Domain errors: each carries a stable snake_case code and an HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    code = "invalid"
    status_code = 400

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFoundError(DomainError):
    code, status_code = "not_found", 404


class PermissionDeniedError(DomainError):
    code, status_code = "permission_denied", 403


class ConflictError(DomainError):
    code, status_code = "conflict", 409


class InvalidUploadError(DomainError):
    """A file that is not an acceptable radiograph; `code` says why (stable, machine-readable)."""

    code, status_code = "invalid_image", 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message, **extra)
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NoActiveModelError(DomainError):
    code, status_code = "no_active_model", 409


class UnreadableImageError(DomainError):
    code, status_code = "unreadable_image", 422


class TransientInferenceError(DomainError):
    code, status_code = "inference_unavailable", 503


class InvalidStateError(DomainError):
    code, status_code = "invalid_state", 409


class ModelArtifactError(DomainError):
    """A model folder that is not a valid artifact (missing/malformed card or model, checksum)."""

    code, status_code = "invalid_model_artifact", 400
