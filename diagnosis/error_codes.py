"""Every `code` an API error answer can carry, with its HTTP status: the one table of record.

The schema's error responses and the list in docs/api.md are rendered from it
(`python manage.py api_error_codes --write docs/api.md`); a test checks that every code the
portal raises is listed here with the status it is raised with, and that the docs agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCS_START, DOCS_END = "<!-- error-codes:start -->", "<!-- error-codes:end -->"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    meaning: str


ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("invalid", 400, "Invalid input; per-field messages in `extra.fields`."),
    ErrorCode("parse_error", 400, "Malformed JSON or multipart body."),
    ErrorCode("bad_request", 400, "A request the server could not parse."),
    ErrorCode("no_files", 400, "A case needs at least one image."),
    ErrorCode("too_many_files", 400, "More image parts than one case may have."),
    ErrorCode("too_many_fields", 400, "More form fields than one request may have."),
    ErrorCode("empty_file", 400, "An uploaded file is empty."),
    ErrorCode("corrupt_image", 400, "An uploaded file cannot be decoded as an image."),
    ErrorCode(
        "file_name_too_long",
        400,
        "An uploaded file's name is too long for the multipart upload (about 900 characters).",
    ),
    ErrorCode("malformed_request", 400, "The multipart upload was cut off or malformed."),
    ErrorCode("image_too_large", 400, "An image has more pixels than the limit."),
    ErrorCode("unsupported_format", 400, "Not PNG, JPEG or a supported DICOM encoding."),
    ErrorCode("multi_frame", 400, "Animated PNG or multi-frame DICOM."),
    ErrorCode("invalid_dicom", 400, "A DICOM file that is malformed or truncated."),
    ErrorCode("burned_in_annotation", 400, "A DICOM image that declares burned-in text."),
    ErrorCode("invalid_image", 400, "An uploaded file is not an acceptable radiograph."),
    ErrorCode("invalid_idempotency_key", 400, "`Idempotency-Key` is not 1-128 printable ASCII."),
    ErrorCode("invalid_read", 400, "A read that does not fit the case (image, label, boxes)."),
    ErrorCode("invalid_training_config", 400, "A training configuration out of its limits."),
    ErrorCode("invalid_base_dataset", 400, "The base dataset of a training run is unusable."),
    ErrorCode("invalid_model_artifact", 400, "A model folder that is not a valid artifact."),
    ErrorCode("invalid_token_request", 400, "A token request the token page refuses."),
    ErrorCode("invalid_webhook_url", 400, "A webhook URL that is not allowed."),
    ErrorCode("not_authenticated", 401, "No credentials (`WWW-Authenticate` says how)."),
    ErrorCode("authentication_failed", 401, "An unknown, expired or revoked token."),
    ErrorCode("insufficient_scope", 403, "The token or account lacks the endpoint's scope."),
    ErrorCode("permission_denied", 403, "The account may not do this."),
    ErrorCode("csrf_failed", 403, "A session-authenticated write without its CSRF token."),
    ErrorCode("read_not_allowed", 403, "A read this account may not do (stage, permission)."),
    ErrorCode("same_reader", 403, "A second read or adjudication by an earlier reader."),
    ErrorCode("not_found", 404, "No such endpoint or object, or not visible to this account."),
    ErrorCode("method_not_allowed", 405, "The endpoint does not take this HTTP method."),
    ErrorCode("not_acceptable", 406, "The `Accept` header asks for what the endpoint lacks."),
    ErrorCode("conflict", 409, "The object's state does not allow this."),
    ErrorCode("invalid_state", 409, "The case's state does not allow this (e.g. cancel)."),
    ErrorCode(
        "idempotency_key_reused",
        422,
        "The `Idempotency-Key` was used for a request with other fields or files.",
    ),
    ErrorCode("claimed_by_other", 409, "Another reviewer holds the claim."),
    ErrorCode("claim_required", 409, "Claim the case before submitting a read."),
    ErrorCode(
        "read_in_progress",
        409,
        "A reviewer is reading the case (active claim): it cannot be cancelled until the read "
        "is saved or released.",
    ),
    ErrorCode("no_active_model", 409, "No model version is active."),
    ErrorCode("no_previous_version", 409, "No earlier model version to roll back to."),
    ErrorCode("training_in_progress", 409, "A training run is already queued or running."),
    ErrorCode(
        "insufficient_training_data",
        409,
        "Too few labelled images of a class to train (the message and `extra` give the counts).",
    ),
    ErrorCode("empty_snapshot", 409, "No reviewed images to train on."),
    ErrorCode("file_too_large", 413, "An uploaded file is larger than the per-file limit."),
    ErrorCode("request_too_large", 413, "The request body is larger than the limit."),
    ErrorCode("unsupported_media_type", 415, "A body in a media type the endpoint does not take."),
    ErrorCode("unreadable_image", 422, "A stored image the model cannot read."),
    ErrorCode("throttled", 429, "Too many requests: wait `Retry-After` seconds."),
    ErrorCode("server_error", 500, "An unexpected error on the server (logged); try again."),
    ErrorCode("inference_unavailable", 503, "Inference is temporarily unavailable."),
    ErrorCode(
        "service_unavailable",
        503,
        "Redis (cache or queue) is briefly unreachable; retry after `Retry-After` seconds.",
    ),
)


def error_codes_for_status(status: int) -> list[str]:
    return [entry.code for entry in ERROR_CODES if entry.status == status]


def error_codes_markdown() -> str:
    """The table as the Markdown list in docs/api.md (by status, in table order)."""
    rows = [
        f"| {entry.status} | `{entry.code}` | {entry.meaning} |"
        for entry in sorted(ERROR_CODES, key=lambda e: e.status)
    ]
    return "\n".join(["| status | code | meaning |", "|---|---|---|", *rows]) + "\n"


def docs_with_error_codes(text: str) -> str:
    """`text` (docs/api.md) with the block between the error-code markers rendered anew."""
    pattern = re.compile(re.escape(DOCS_START) + r".*?" + re.escape(DOCS_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {DOCS_START} ... {DOCS_END} block")
    block = f"{DOCS_START}\n{error_codes_markdown()}{DOCS_END}"
    return pattern.sub(lambda _: block, text, count=1)
