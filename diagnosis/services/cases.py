"""Case intake and cancellation.

`case_create` is the only way a case comes into being (page and API). Its contract:

- **Validation first.** The case fields are checked (`full_clean`), then every file goes through
  `diagnosis.imaging.validate_upload`. If anything fails, nothing is stored: no row, no file.
  A bad file raises `InvalidUploadError` whose `code`/`message`/`status_code` are those of the
  first bad file and whose `extra["files"]` lists every bad file as `{index, name, code, message}`.
- **One transaction.** The Case (status `received`) and its XrayImages are created together;
  canonical PNGs (and the full-depth PNG of DICOM and 16-bit PNG images) are written under `staging/` and moved to their generated names only after the
  commit (`services.media`), so a process killed mid-upload leaves no file under `images/`
  without its row; they are deleted again if the transaction fails, and `media_reconcile` removes
  what a killed process left in staging. The prediction request runs on commit (after the files
  are published), so a worker never sees an uncommitted case or a missing file.
- **Idempotency-Key.** With a non-empty `idempotency_key`, a second call by the same user with the
  same key returns the case created by the first call, unchanged (its files are not validated
  or stored again, whatever they are). This holds under concurrency: the database's unique
  constraint (created_by, idempotency_key) decides, and the loser returns the winner's case.
  If anything of the request differs from that case (patient reference, body part, clinical
  question, urgency, or the files: their number, order and SHA-256), the call is refused instead
  (`InvalidUploadError`, code `idempotency_key_reused`, 422). Keys are scoped per user and kept
  for the case's lifetime. The returned Case carries `was_created`: True when this call created
  it, False when an earlier case was returned.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from diagnosis.exceptions import (
    ConflictError,
    InvalidStateError,
    InvalidUploadError,
    NotFoundError,
    PermissionDeniedError,
)
from diagnosis.imaging import CanonicalImage, file_too_large_error, names, validate_upload
from diagnosis.models import ApiClient, Case, XrayImage
from diagnosis.selectors.cases import case_list
from diagnosis.selectors.reviews import claim_is_active
from diagnosis.services.audit import audit_record
from diagnosis.services.case_progress import CANCELLABLE, case_move
from diagnosis.services.fault_barrier import fault_barrier
from diagnosis.services.media import media_delete, media_publish, media_stage
from diagnosis.services.predictions import case_request_predictions

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 128


class ReadInProgressError(ConflictError):
    code = "read_in_progress"


@dataclass(frozen=True)
class _FileError:
    index: int
    name: str
    error: InvalidUploadError

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "code": self.error.code,
            "message": self.error.message,
        }


def case_create(
    *,
    user: AbstractBaseUser,
    patient_ref: str,
    body_part: str,
    clinical_question: str,
    files: Sequence[UploadedFile],
    source: str = Case.Source.WEB,
    api_client: ApiClient | None = None,
    idempotency_key: str = "",
    urgent: bool = False,
    request: HttpRequest | None = None,
) -> Case:
    """Create a case with its images (see the module docstring for the full contract).

    Raises `InvalidUploadError` (bad files, file count or key) or Django's `ValidationError`
    (case fields). Call it outside a transaction: it commits its own, and only then requests
    predictions. `request`, if given, only supplies the client address for the audit row.
    """
    idempotency_key = _clean_idempotency_key(idempotency_key)
    replay = _ReplayRequest(
        patient_ref=patient_ref,
        body_part=body_part,
        clinical_question=clinical_question,
        urgent=urgent,
        files=files,
    )
    if idempotency_key:
        existing = _case_for_key(user=user, idempotency_key=idempotency_key)
        if existing is not None:
            logger.info("idempotent replay", extra={"case_uuid": str(existing.uuid)})
            return _replayed(existing, request=replay)

    case = Case(
        patient_ref=(patient_ref or "").strip(),
        body_part=body_part,
        clinical_question=(clinical_question or "").strip(),
        created_by=user,
        source=source,
        api_client=api_client,
        idempotency_key=idempotency_key,
        urgent=bool(urgent),
        status=Case.Status.RECEIVED,
    )
    _check_free_text(case.clinical_question)
    case.full_clean(validate_unique=False, validate_constraints=False)
    canonical = _validate_files(files)

    written: list[str] = []
    try:
        case = _case_store(case=case, canonical=canonical, written=written, request=request)
    except IntegrityError:
        media_delete(written)
        if idempotency_key:
            existing = _case_for_key(user=user, idempotency_key=idempotency_key)
            if existing is not None:
                logger.info("idempotent race", extra={"case_uuid": str(existing.uuid)})
                return _replayed(existing, request=replay)
        raise
    except BaseException:
        media_delete(written)
        raise
    case.was_created = True
    logger.info(
        "case created",
        extra={"case_uuid": str(case.uuid), "images": len(canonical), "source": source},
    )
    return case


@transaction.atomic
def _case_store(
    *,
    case: Case,
    canonical: list[CanonicalImage],
    written: list[str],
    request: HttpRequest | None = None,
) -> Case:
    """Rows and files in one transaction; `written` collects file names for cleanup."""
    case.save()
    for position, image in enumerate(canonical):
        row = XrayImage(
            case=case,
            position=position,
            original_name=image.display_name,
            sha256=image.sha256,
            width=image.width,
            height=image.height,
            source_format=image.source_format,
            source_bit_depth=image.bit_depth,
            dicom_metadata=image.dicom_metadata,
        )
        row.file.name = _stage(row.file, names.generated_name("png"), image.png_bytes, written)
        if image.original_bytes is not None:
            row.original_file.name = _stage(
                row.original_file,
                names.generated_name(image.original_extension),
                image.original_bytes,
                written,
            )
        if image.depth_png_bytes is not None:
            row.depth_params = image.depth_params
            row.depth_file.name = _stage(
                row.depth_file, names.generated_name("png"), image.depth_png_bytes, written
            )
        row.full_clean(exclude=["case"], validate_unique=False, validate_constraints=False)
        row.save()
    fault_barrier(settings.UPLOAD_TEST_BARRIER, str(len(written)))
    audit_record(
        action="case.create",
        actor=case.created_by,
        request=request,
        obj=case,
        images=len(canonical),
    )
    # The files become visible under their names only once the rows are committed (before the
    # predictions are requested: an in-process task reads them at once).
    staged = list(written)
    transaction.on_commit(lambda: media_publish(staged))
    # robust: a broker outage after commit must not turn the upload into a 500 (the sweeper
    # re-enqueues cases left in `received`/`queued`).
    transaction.on_commit(lambda: case_request_predictions(case=case), robust=True)
    return case


def _stage(field_file: Any, filename: str, data: bytes, written: list[str]) -> str:
    """Write `data` under staging/ (published to the returned final name after commit); the staged
    name goes into `written` for cleanup."""
    final = field_file.field.generate_filename(field_file.instance, filename)
    written.append(media_stage(final, data))
    return final


def _check_free_text(question: str) -> None:
    """TextField max_length is not enforced by full_clean, and PostgreSQL refuses NUL bytes."""
    limit = Case._meta.get_field("clinical_question").max_length or 2000
    if len(question) > limit:
        raise ValidationError({"clinical_question": [f"At most {limit} characters."]})
    if "\x00" in question:
        raise ValidationError({"clinical_question": ["Null characters are not allowed."]})


def _validate_files(files: Sequence[UploadedFile]) -> list[CanonicalImage]:
    files = list(files or [])
    if not files:
        raise InvalidUploadError("Add at least one image.", code="no_files")
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    if limit is not None and len(files) > limit:
        raise InvalidUploadError(
            f"Too many files: {len(files)} (at most {limit} per case).",
            code="too_many_files",
        )
    canonical: list[CanonicalImage] = []
    errors: list[_FileError] = []
    for index, upload in enumerate(files):
        display = names.sanitize_display_name(getattr(upload, "name", "") or "")
        try:
            canonical.append(_validate_one(upload))
        except InvalidUploadError as exc:
            errors.append(_FileError(index=index, name=display, error=exc))
    if errors:
        first = errors[0]
        for error in errors:
            logger.info(
                "upload rejected", extra={"code": error.error.code, "file_index": error.index}
            )
        raise InvalidUploadError(
            first.error.message if len(files) == 1 else f"{first.name}: {first.error.message}",
            code=first.error.code,
            status_code=first.error.status_code,
            files=[error.as_dict() for error in errors],
        )
    return canonical


def _validate_one(upload: UploadedFile) -> CanonicalImage:
    size = getattr(upload, "size", None)
    if size is not None and size > settings.UPLOAD_MAX_FILE_BYTES:
        raise file_too_large_error()  # refused before anything is read into memory
    upload.seek(0)
    data = upload.read(settings.UPLOAD_MAX_FILE_BYTES + 1)
    return validate_upload(data, getattr(upload, "name", "") or "")


def _clean_idempotency_key(key: str | None) -> str:
    key = (key or "").strip()
    if len(key) > IDEMPOTENCY_KEY_MAX or not all(33 <= ord(ch) < 127 for ch in key):
        raise InvalidUploadError(
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters.",
            code="invalid_idempotency_key",
        )
    return key


def _case_for_key(*, user: AbstractBaseUser, idempotency_key: str) -> Case | None:
    return Case.objects.filter(created_by=user, idempotency_key=idempotency_key).first()


@dataclass(frozen=True)
class _ReplayRequest:
    """What a call with an Idempotency-Key asked for, to compare with the key's earlier case."""

    patient_ref: str
    body_part: str
    clinical_question: str
    urgent: bool
    files: Sequence[UploadedFile]

    def matches(self, case: Case) -> bool:
        fields = (
            (self.patient_ref or "").strip(),
            self.body_part,
            (self.clinical_question or "").strip(),
            bool(self.urgent),
        )
        if fields != (case.patient_ref, case.body_part, case.clinical_question, case.urgent):
            return False
        stored = list(case.images.order_by("position").values_list("sha256", flat=True))
        return [_upload_sha256(upload) for upload in self.files or []] == stored


def _upload_sha256(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _replayed(existing: Case, *, request: _ReplayRequest) -> Case:
    """The earlier case for a reused key, unless the request differs from it in anything: that is
    a different request sent with a stale key, refused rather than silently answered with the
    earlier case."""
    if not request.matches(existing):
        raise InvalidUploadError(
            "This Idempotency-Key was already used for a different request; send a new key "
            "(reload the page).",
            code="idempotency_key_reused",
            status_code=422,
        )
    existing.was_created = False
    return existing


@transaction.atomic
def case_cancel(*, case: Case, user: AbstractBaseUser, request: HttpRequest | None = None) -> Case:
    """The case's creator (or staff) cancels a case that is not yet reviewed. `request`, if given,
    only supplies the client address and API token for the audit row.

    Raises NotFoundError if the user may not see the case, PermissionDeniedError if they see it
    but did not create it, InvalidStateError if it is already reviewed or cancelled,
    ReadInProgressError (409) while a reader's claim on it is active.
    """
    if not case_list(user=user).filter(pk=case.pk).exists():
        raise NotFoundError("Case not found.")
    locked = Case.objects.select_for_update().get(pk=case.pk)
    if locked.created_by_id != user.pk and not user.is_staff:
        raise PermissionDeniedError("Only the person who created the case can cancel it.")
    if locked.status not in CANCELLABLE:
        raise InvalidStateError(
            f"A {locked.get_status_display().lower()} case cannot be cancelled."
        )
    if claim_is_active(locked):
        # The rule: a read in progress is never thrown away. The reader's claim (renewed while
        # the review screen is in use) blocks the cancel until the read is saved or released.
        raise ReadInProgressError(
            f"{locked.claimed_by.get_username()} is reading this case; it can be cancelled "
            "once the read is saved or released.",
            claim_expires_at=locked.claim_expires_at.isoformat(),
        )
    moved = case_move(locked, Case.Status.CANCELLED, reason="Cancelled by the submitter.")
    locked.claimed_by = None
    locked.claim_expires_at = None
    locked.save(update_fields=[*moved, "claimed_by", "claim_expires_at"])
    audit_record(action="case.cancel", actor=user, request=request, obj=locked)
    logger.info("case cancelled", extra={"case_uuid": str(locked.uuid)})
    return locked
