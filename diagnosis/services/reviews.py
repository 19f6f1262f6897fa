"""Review workflow writes: queue priority, claims, reads, second reads and adjudication.

A case moves ``predicted -> in_review -> reviewed``. Each read covers every image of the case and is
stored as one Review per image with its read number (1 first, 2 second, 3 adjudication):

- after the first read, the second-read rule (settings ``SECOND_READ_*``) either finishes the case
  or sets ``needs_second_read``;
- after a second read, agreement on every image finishes the case; any disagreement sets
  ``needs_adjudication``;
- an adjudication always finishes the case.

Finishing sets ``final_label`` (fractured if any image is), ``reviewed_at`` and status ``reviewed``,
notifies the creator and, after commit, the API client's webhook ("case.reviewed").

A claim is a row lock plus an expiry: ``select_for_update`` serialises concurrent claims, and
``claim_expires_at`` (now + ``REVIEW_CLAIM_TTL_SECONDS``) frees a case an absent reader left.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from diagnosis.exceptions import (
    ConflictError,
    DomainError,
    InvalidStateError,
    PermissionDeniedError,
)
from diagnosis.models import BoxOrigin, Case, Label, Review, ReviewDraft
from diagnosis.selectors.reads import reads_agreed_label
from diagnosis.selectors.reviews import (
    STAGE_ADJUDICATION,
    STAGE_FIRST,
    STAGE_NAMES,
    STAGE_SECOND,
    QueueFilters,
    case_image_reads,
    case_readers,
    case_review_stage,
    claim_is_active,
    review_queue,
    review_queue_counts_forget,
    user_stages,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.case_progress import case_move
from diagnosis.services.notifications import notification_case_reviewed
from diagnosis.services.webhooks import webhook_notify

logger = logging.getLogger(__name__)


class ClaimedByOtherError(ConflictError):
    code = "claimed_by_other"


class ClaimRequiredError(ConflictError):
    code = "claim_required"


class NotYourReadError(PermissionDeniedError):
    code = "read_not_allowed"


class SameReaderError(PermissionDeniedError):
    """A second reader who made the first read, or an adjudicator who made either."""

    code = "same_reader"


class InvalidReadError(DomainError):
    code, status_code = "invalid_read", 400


# --- Second-read rule (pure) ----------------------------------------------------------------------------


def second_read_draw(case_uuid: Any, *, seed: str) -> float:
    """A deterministic draw in [0, 100) per case: the same case and seed always give the same
    number, so the random-percentage rule is reproducible and auditable."""
    digest = hashlib.sha256(f"{seed}:{case_uuid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def second_read_reasons(
    *,
    case_uuid: Any,
    model_positive: bool,
    disagreement: bool,
    rule: dict[str, Any] | None = None,
) -> list[str]:
    """Which parts of the second-read rule a finished first read triggers (empty: none)."""
    rule = rule or second_read_rule()
    reasons = []
    if rule["model_positive"] and model_positive:
        reasons.append("model_positive")
    if rule["disagreement"] and disagreement:
        reasons.append("model_reader_disagreement")
    percent = float(rule["random_percent"])
    if percent > 0 and second_read_draw(case_uuid, seed=rule["seed"]) < percent:
        reasons.append("random_sample")
    return reasons


def second_read_rule() -> dict[str, Any]:
    return {
        "model_positive": settings.SECOND_READ_MODEL_POSITIVE,
        "disagreement": settings.SECOND_READ_ON_DISAGREEMENT,
        "random_percent": settings.SECOND_READ_RANDOM_PERCENT,
        "seed": settings.SECOND_READ_SEED,
    }


# --- Reads --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRead:
    """One reader's decision on one image. `final_label` may be left empty when the decision
    says it (confirm = the model's label, correct = the other label). `boxes` are the fracture
    boxes (see `boxes_clean`); `region` is the older single-box form, read as one box drawn by
    the reader (give one or the other)."""

    image_id: int
    decision: str
    final_label: str = ""
    boxes: Sequence[Any] | None = None
    comment: str = ""
    region: Any = None


MAX_BOXES = 20
BOX_KEYS = ("x", "y", "w", "h")


def region_clean(region: Any) -> dict[str, float] | None:
    """Validate a box given as fractions of the image: {x, y, w, h}, inside [0, 1]."""
    if region in (None, "", {}):
        return None
    if not isinstance(region, dict) or set(region) != set(BOX_KEYS):
        raise InvalidReadError("A box is {x, y, w, h} in fractions of the image.")
    return _coords_clean(region)


def _coords_clean(region: dict[str, Any]) -> dict[str, float]:
    try:
        box = {k: float(region[k]) for k in BOX_KEYS}
    except (TypeError, ValueError) as exc:
        raise InvalidReadError("Box coordinates must be numbers.") from exc
    eps = 1e-6
    if any(not math.isfinite(v) for v in box.values()):
        raise InvalidReadError("Box coordinates must be finite.")
    if box["w"] <= 0 or box["h"] <= 0:
        raise InvalidReadError("A box needs a positive width and height.")
    if box["x"] < -eps or box["y"] < -eps or box["x"] + box["w"] > 1 + eps:
        raise InvalidReadError("The box must lie inside the image.")
    if box["y"] + box["h"] > 1 + eps:
        raise InvalidReadError("The box must lie inside the image.")
    return {k: round(min(max(v, 0.0), 1.0), 5) for k, v in box.items()}


def box_clean(box: Any) -> dict[str, Any]:
    """One fracture box: {x, y, w, h} in fractions of the canonical image (inside [0, 1]) and its
    `origin` (BoxOrigin; a box without one was drawn by the reader)."""
    if not isinstance(box, dict) or not set(BOX_KEYS) <= set(box):
        raise InvalidReadError("A box is {x, y, w, h} in fractions of the image, with its origin.")
    extra = set(box) - {*BOX_KEYS, "origin"}
    if extra:
        raise InvalidReadError(f"Unknown box field: {sorted(extra)[0]}.")
    origin = box.get("origin") or BoxOrigin.READER
    if origin not in BoxOrigin.values:
        raise InvalidReadError("A box's origin is one of: " + ", ".join(BoxOrigin.values) + ".")
    return {**_coords_clean(box), "origin": str(origin)}


def boxes_clean(boxes: Any = None, *, region: Any = None) -> list[dict[str, Any]]:
    """Validate a read's boxes (a list of `box_clean` boxes, at most MAX_BOXES); `region` is the
    older single-box form, taken as one box drawn by the reader."""
    if region not in (None, "", {}):
        if boxes:
            raise InvalidReadError("Give either boxes or a region, not both.")
        return [{**region_clean(region), "origin": BoxOrigin.READER.value}]  # type: ignore[dict-item]
    if boxes in (None, ""):
        return []
    if not isinstance(boxes, list | tuple):
        raise InvalidReadError("Boxes are a list of {x, y, w, h, origin}.")
    if len(boxes) > MAX_BOXES:
        raise InvalidReadError(f"At most {MAX_BOXES} boxes per image.")
    return [box_clean(box) for box in boxes]


def _other_label(label: str) -> str:
    return Label.NOT_FRACTURED if label == Label.FRACTURED else Label.FRACTURED


def _resolve_label(read: ImageRead, model_label: str) -> tuple[str, str]:
    """(decision, final label) of a read, checked against the model's label."""
    if read.decision not in Review.Decision.values:
        raise InvalidReadError("Choose confirm or correct for every image.", image_id=read.image_id)
    if read.final_label and read.final_label not in Label.values:
        raise InvalidReadError("Unknown label.", image_id=read.image_id)
    if not model_label:
        # Nothing to confirm: the reader states the label.
        if not read.final_label:
            raise InvalidReadError(
                "This image has no model result: choose the label.", image_id=read.image_id
            )
        return Review.Decision.CORRECT, read.final_label
    implied = model_label if read.decision == Review.Decision.CONFIRM else _other_label(model_label)
    if read.final_label and read.final_label != implied:
        raise InvalidReadError("The decision and the label disagree.", image_id=read.image_id)
    return read.decision, implied


# --- Claims -------------------------------------------------------------------------------------------


def _case_lock(case_id: int) -> Case:
    """The case row, locked until the transaction ends (serialises claims and reads)."""
    return Case.objects.select_for_update(of=("self",)).get(pk=case_id)


def check_may_read(*, case: Case, user: AbstractBaseUser, stage: int | None) -> int:
    """The read `stage` if this user may do it on this case; raises otherwise (does not lock)."""
    if stage is None:
        message = (
            "This case was cancelled by its submitter: there is nothing left to read, and a "
            "read was not saved."
            if case.status == Case.Status.CANCELLED
            else "This case is not waiting for a read."
        )
        raise InvalidStateError(message, status=case.status, case=str(case.uuid))
    if stage not in user_stages(user):
        if stage == STAGE_ADJUDICATION:
            raise NotYourReadError("Adjudication needs the adjudicate permission.")
        raise NotYourReadError("You may not read cases.")
    readers = case_readers(case=case)
    if any(user.pk in ids for ids in readers.values()):
        if stage == STAGE_SECOND:
            raise SameReaderError(
                "You made the first read of this case: a second read needs another radiologist."
            )
        raise SameReaderError("You already read this case: adjudication needs a third reader.")
    return stage


def _claim_conflict(case: Case) -> ClaimedByOtherError:
    holder = case.claimed_by.get_username() if case.claimed_by else "another reader"
    until = (
        timezone.localtime(case.claim_expires_at).strftime("%H:%M") if case.claim_expires_at else ""
    )
    return ClaimedByOtherError(
        f"{holder} is reading this case (claimed until {until}). Pick another case from the queue.",
        claimed_by=holder,
        claim_expires_at=case.claim_expires_at.isoformat() if case.claim_expires_at else None,
    )


@transaction.atomic
def review_claim(*, case: Case, user: AbstractBaseUser, request: HttpRequest | None = None) -> Case:
    """Claim the case for the read it waits for (or renew one's own claim).

    Raises ClaimedByOtherError (409) while another reader's claim is active, NotYourReadError (403)
    when the user may not do this read, InvalidStateError (409) when no read is due.
    """
    locked = _case_lock(case.pk)
    now = timezone.now()
    stage = check_may_read(case=locked, user=user, stage=case_review_stage(locked))
    if claim_is_active(locked, now=now) and locked.claimed_by_id != user.pk:
        raise _claim_conflict(locked)
    renewed = locked.claimed_by_id == user.pk
    locked.claimed_by = user
    locked.claim_expires_at = now + timedelta(seconds=settings.REVIEW_CLAIM_TTL_SECONDS)
    moved = case_move(locked, Case.Status.IN_REVIEW, now=now)
    locked.save(update_fields=["claimed_by", "claim_expires_at", *moved])
    _forget_counts(user.pk)
    audit_record(
        action="review.claim",
        actor=user,
        request=request,
        obj=locked,
        read_number=stage,
        renewed=renewed,
    )
    logger.info(
        "case claimed", extra={"case_id": locked.pk, "user_id": user.pk, "read_number": stage}
    )
    return locked


@transaction.atomic
def review_release(
    *, case: Case, user: AbstractBaseUser, request: HttpRequest | None = None
) -> Case:
    """Give the claim back; a case with no read yet returns to ``predicted``."""
    locked = _case_lock(case.pk)
    if locked.claimed_by_id != user.pk:
        raise ClaimRequiredError("You do not hold a claim on this case.")
    stage = case_review_stage(locked)
    locked.claimed_by = None
    locked.claim_expires_at = None
    moved = case_move(locked, Case.Status.PREDICTED) if stage == STAGE_FIRST else ["updated_at"]
    locked.save(update_fields=["claimed_by", "claim_expires_at", *moved])
    ReviewDraft.objects.filter(case_id=locked.pk, reviewer_id=user.pk).delete()
    _forget_counts(user.pk)
    audit_record(
        action="review.release", actor=user, request=request, obj=locked, read_number=stage
    )
    return locked


def review_claim_next(
    *,
    user: AbstractBaseUser,
    filters: QueueFilters | None = None,
    request: HttpRequest | None = None,
    exclude_ids: Iterable[int] = (),
) -> Case | None:
    """Claim the first case of the user's queue; skips cases someone else claimed meanwhile."""
    exclude = set(exclude_ids)
    for _ in range(5):
        queue = review_queue(user=user, filters=filters).exclude(pk__in=exclude)
        candidate = queue.filter(claimed_by_id=user.pk).first() or queue.first()
        if candidate is None:
            return None
        try:
            return review_claim(case=candidate, user=user, request=request)
        except (ClaimedByOtherError, InvalidStateError, PermissionDeniedError):
            exclude.add(candidate.pk)
    return None


# --- Reads ------------------------------------------------------------------------------------------------


def _aggregate_label(labels: Iterable[str]) -> str:
    return Label.FRACTURED if Label.FRACTURED in set(labels) else Label.NOT_FRACTURED


@transaction.atomic
def review_submit(
    *,
    case: Case,
    user: AbstractBaseUser,
    reads: Sequence[ImageRead],
    request: HttpRequest | None = None,
    started_at: datetime | None = None,
) -> Case:
    """Record the user's read of every image of the case and move the case on.

    The user must hold the claim (an expired claim nobody else took still counts).
    """
    locked = _case_lock(case.pk)
    stage = check_may_read(case=locked, user=user, stage=case_review_stage(locked))
    if locked.claimed_by_id != user.pk:
        if claim_is_active(locked):
            raise _claim_conflict(locked)
        raise ClaimRequiredError("Claim the case before saving a read.")

    images = case_image_reads(case=locked)
    by_id = {item.image.pk: item for item in images}
    given = {read.image_id: read for read in reads}
    if len(given) != len(reads) or set(given) != set(by_id):
        raise InvalidReadError("Give one decision for every image of the case.")

    now = timezone.now()
    if started_at is None and locked.claim_expires_at is not None:
        started_at = locked.claim_expires_at - timedelta(seconds=settings.REVIEW_CLAIM_TTL_SECONDS)
    new_reviews = []
    for image_id, item in by_id.items():
        read = given[image_id]
        decision, label = _resolve_label(read, item.model_label)
        try:
            boxes = boxes_clean(read.boxes, region=read.region)
        except InvalidReadError as exc:
            raise InvalidReadError(exc.message, image_id=image_id) from exc
        if boxes and label != Label.FRACTURED:
            raise InvalidReadError(
                "A box marks a fracture: remove the boxes, or read the image as 'Fracture'.",
                image_id=image_id,
            )
        comment = (read.comment or "").strip()
        if len(comment) > 4000:
            raise InvalidReadError("Comments are limited to 4000 characters.", image_id=image_id)
        review = Review(
            image=item.image,
            prediction=item.prediction,
            reviewer=user,
            read_number=stage,
            decision=decision,
            final_label=label,
            boxes=boxes,
            comment=comment,
            started_at=started_at,
        )
        review.full_clean(exclude=["image", "prediction", "reviewer"], validate_unique=False)
        new_reviews.append(review)
        item.reads[stage] = review
    Review.objects.bulk_create(new_reviews)
    ReviewDraft.objects.filter(case_id=locked.pk, reviewer_id=user.pk).delete()

    locked.claimed_by = None
    locked.claim_expires_at = None
    update_fields = ["claimed_by", "claim_expires_at", "status", "updated_at"]
    outcome: dict[str, Any] = {"read_number": stage, "images": len(new_reviews)}

    if stage == STAGE_FIRST:
        locked.first_reader = user
        update_fields.append("first_reader")
        reasons = second_read_reasons(
            case_uuid=locked.uuid,
            model_positive=any(i.model_label == Label.FRACTURED for i in images),
            disagreement=any(
                i.model_label and i.reads[STAGE_FIRST].final_label != i.model_label for i in images
            ),
        )
        outcome["second_read_reasons"] = reasons
        if reasons:
            locked.needs_second_read = True
            update_fields.append("needs_second_read")
        else:
            _finish(locked, labels=[i.reads[STAGE_FIRST].final_label for i in images], now=now)
            update_fields += ["final_label", "reviewed_at"]
    elif stage == STAGE_SECOND:
        locked.second_reader = user
        update_fields.append("second_reader")
        disagree = [
            i.image.pk
            for i in images
            if reads_agreed_label({n: read.final_label for n, read in i.reads.items()}) is None
        ]
        outcome["disagreements"] = len(disagree)
        if disagree:
            locked.needs_adjudication = True
            update_fields.append("needs_adjudication")
        else:
            _finish(locked, labels=[i.reads[STAGE_SECOND].final_label for i in images], now=now)
            update_fields += ["final_label", "reviewed_at"]
    else:
        _finish(locked, labels=[i.reads[STAGE_ADJUDICATION].final_label for i in images], now=now)
        update_fields += ["final_label", "reviewed_at"]

    locked.save(update_fields=update_fields)
    _forget_counts(user.pk)
    outcome["case_status"] = locked.status
    audit_record(
        action="review.adjudicate" if stage == STAGE_ADJUDICATION else "review.submit",
        actor=user,
        request=request,
        obj=locked,
        **outcome,
    )
    logger.info(
        "%s saved",
        STAGE_NAMES[stage],
        extra={"case_id": locked.pk, "user_id": user.pk, "case_status": locked.status},
    )
    if locked.status == Case.Status.REVIEWED:
        notification_case_reviewed(case=locked)
        case_pk = locked.pk
        transaction.on_commit(lambda: _notify_webhook(case_pk))
    return locked


def _forget_counts(user_pk: int) -> None:
    """The user's cached queue counts go stale with their own action: drop them after commit."""
    transaction.on_commit(lambda: review_queue_counts_forget(user_pk=user_pk))


def _finish(case: Case, *, labels: Sequence[str], now: datetime) -> None:
    case.final_label = _aggregate_label(labels)
    case_move(case, Case.Status.REVIEWED, now=now)


def _notify_webhook(case_pk: int) -> None:
    webhook_notify(case=Case.objects.get(pk=case_pk), event="case.reviewed")


__all__ = [
    "MAX_BOXES",
    "STAGE_ADJUDICATION",
    "STAGE_FIRST",
    "STAGE_SECOND",
    "ClaimRequiredError",
    "ClaimedByOtherError",
    "ImageRead",
    "InvalidReadError",
    "NotYourReadError",
    "SameReaderError",
    "box_clean",
    "boxes_clean",
    "check_may_read",
    "region_clean",
    "review_claim",
    "review_claim_next",
    "review_release",
    "review_submit",
    "second_read_draw",
    "second_read_reasons",
]
