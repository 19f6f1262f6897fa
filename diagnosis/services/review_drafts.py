"""Server-side drafts of a read in progress: what the reader chose, drew and wrote per image,
kept while they hold the claim so that leaving the review screen loses nothing.

A draft belongs to (case, reader, read number). Only the reader holding the claim may save one; it
is deleted when the read is saved or the claim released (`review_submit`, `review_release`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from diagnosis.exceptions import InvalidStateError
from diagnosis.models import Case, Label, Review, ReviewDraft
from diagnosis.selectors.reviews import ImageWithReads, case_image_reads, case_review_stage
from diagnosis.services.reviews import (
    ClaimRequiredError,
    InvalidReadError,
    boxes_clean,
)

logger = logging.getLogger(__name__)

MAX_COMMENT = 4000
CHOICES = ("", "1", "2")


def _clean_entry(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidReadError("A draft holds one object per image.")
    decision = str(raw.get("decision") or "")
    final_label = str(raw.get("final_label") or "")
    choice = str(raw.get("choice") or "")
    comment = str(raw.get("comment") or "")
    if decision and decision not in Review.Decision.values:
        raise InvalidReadError("Unknown decision in the draft.")
    if final_label and final_label not in Label.values:
        raise InvalidReadError("Unknown label in the draft.")
    if choice not in CHOICES:
        raise InvalidReadError("Unknown read choice in the draft.")
    if len(comment) > MAX_COMMENT:
        raise InvalidReadError("Comments are limited to 4000 characters.")
    return {
        "decision": decision,
        "final_label": final_label,
        "choice": choice,
        # `region` is the older single-box form (drafts saved before several boxes existed)
        "boxes": boxes_clean(raw.get("boxes"), region=raw.get("region")),
        "comment": comment,
    }


def _entry_label(entry: dict[str, Any], item: ImageWithReads) -> str:
    """The label a draft entry gives its image so far ("" while undecided)."""
    if entry["choice"]:
        chosen = item.reads.get(int(entry["choice"]))
        return chosen.final_label if chosen is not None else ""
    if entry["final_label"]:
        return entry["final_label"]
    model = item.model_label
    if not entry["decision"] or not model:
        return ""
    if entry["decision"] == Review.Decision.CONFIRM:
        return model
    return Label.NOT_FRACTURED if model == Label.FRACTURED else Label.FRACTURED


@transaction.atomic
def review_draft_save(*, case: Case, user: AbstractBaseUser, data: Any) -> ReviewDraft:
    """Keep the reader's work in progress on a case they hold (one row, replaced each time).

    `data` maps image ids (as text) of this case to {decision, final_label, choice, boxes,
    comment} (boxes as in `boxes_clean`; a box on a "No fracture" answer is refused). Raises ClaimRequiredError (409) without the claim, InvalidStateError (409) when no
    read is due, InvalidReadError (400) for malformed content.
    """
    locked = Case.objects.select_for_update(of=("self",)).get(pk=case.pk)
    if locked.claimed_by_id != user.pk:
        raise ClaimRequiredError(
            "You no longer hold this case, so your work in progress was not kept."
        )
    stage = case_review_stage(locked)
    if stage is None:
        raise InvalidStateError("This case is not waiting for a read.")
    if not isinstance(data, dict):
        raise InvalidReadError("A draft maps each image to its decision.")
    image_ids = {str(pk) for pk in locked.images.values_list("pk", flat=True)}
    unknown = set(data) - image_ids
    if unknown:
        raise InvalidReadError("The draft names an image that is not part of this case.")
    cleaned = {key: _clean_entry(value) for key, value in data.items()}
    items = {str(item.image.pk): item for item in case_image_reads(case=locked)}
    for key, entry in cleaned.items():
        if entry["boxes"] and _entry_label(entry, items[key]) == Label.NOT_FRACTURED:
            raise InvalidReadError(
                "A box marks a fracture: remove the boxes, or read the image as 'Fracture'.",
                image_id=int(key),
            )
    draft, _ = ReviewDraft.objects.update_or_create(
        case=locked, reviewer=user, read_number=stage, defaults={"data": cleaned}
    )
    logger.debug("review draft saved", extra={"case_id": locked.pk, "user_id": user.pk})
    return draft


def review_draft_discard(*, case: Case, user: AbstractBaseUser) -> None:
    """Drop the reader's drafts of this case (after the read is saved or the claim released)."""
    ReviewDraft.objects.filter(case_id=case.pk, reviewer_id=user.pk).delete()
