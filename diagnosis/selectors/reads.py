"""Who may see a radiologist's read: the one blind-read rule, used by the review pages, the case
pages, the API and the webhooks.

Until a case is final (``reviewed``), a read is visible only to:

- the radiologist who made it;
- administrators (superusers and the admin role);
- at the adjudication stage, whoever may adjudicate and made no read of the case: the first and
  second reads are what they adjudicate.

Nobody else sees it, the case's clinician and the second reader included (a second read is blind).
Once the case is final every read is visible to whoever may see the case, and readers are shown by
display name (`reader_display_name`), never by user name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from diagnosis.models import Case, Label, Review

ReadT = TypeVar("ReadT")
User = AbstractBaseUser | AnonymousUser | None


def user_is_portal_admin(user: User) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and (user.is_superuser or user.has_perm("diagnosis.manage_models"))
    )


def reads_agreed_label(labels: Mapping[int, str]) -> str | None:
    """An image's agreed label from its reads' labels by read number: the adjudication if any,
    else the label every read gave; None while reads disagree (they wait for adjudication) or
    when there is no read. The one home of this rule: the review workflow (does a second read
    finish the case?) and the training snapshot (which label an image is trained on)."""
    if Review.Read.ADJUDICATION in labels:
        return labels[Review.Read.ADJUDICATION]
    distinct = set(labels.values())
    return distinct.pop() if len(distinct) == 1 else None


def reads_deciding_boxes(reads: Iterable[Review], label: str) -> list[dict[str, Any]]:
    """The agreed fracture boxes of an image whose agreed label is `label`: those of the latest
    read with that label that marked boxes (an adjudicator who picked a read without drawing keeps
    its boxes); none when the label is not a fracture. The one home of this rule (the case page,
    the review screen, webhooks and dataset snapshots)."""
    if label != Label.FRACTURED:
        return []
    for read in sorted(reads, key=lambda r: r.read_number, reverse=True):
        if read.final_label == label and read.boxes:
            return list(read.boxes)
    return []


def case_is_final(case: Case) -> bool:
    return case.status == Case.Status.REVIEWED


def _read_key(read: Any) -> tuple[int, int | None]:
    if isinstance(read, dict):
        return read["read_number"], read["reviewer_id"]
    return read.read_number, read.reviewer_id


def reads_visible(
    *,
    user: User,
    case: Case,
    reads: Iterable[ReadT],
    key: Callable[[ReadT], tuple[int, int | None]] = _read_key,
) -> list[ReadT]:
    """The reads of `case` that `user` may see (see the module docstring). `reads` must be all the
    case's reads (the adjudication rule looks at who read it); `key` gives (read number, reviewer
    id) of a read (Review instances and value dicts by default). `user` None is the case's API
    client or clinician (webhooks): it sees reads only once the case is final."""
    reads = list(reads)
    if case_is_final(case) or user_is_portal_admin(user):
        return reads
    if user is None or not user.is_authenticated:
        return []
    readers = {key(read)[1] for read in reads}
    adjudicator = (
        case.status == Case.Status.IN_REVIEW
        and case.needs_adjudication
        and user.pk not in readers
        and user.has_perm("diagnosis.adjudicate_case")
    )
    visible = []
    for read in reads:
        number, reviewer_id = key(read)
        if reviewer_id == user.pk or (
            adjudicator and number in (Review.Read.FIRST, Review.Read.SECOND)
        ):
            visible.append(read)
    return visible


def reader_display_name(*, first_name: str, last_name: str, user_id: int | None) -> str:
    """How a reader is shown on cases: their full name, else "Reader <id>"; never the user name
    (which is also the sign-in name, see docs/security.md)."""
    full = f"{first_name or ''} {last_name or ''}".strip()
    return full or f"Reader {user_id}"


def case_final_reading(*, case: Case) -> dict[str, Any] | None:
    """What the case's clinician and API client get of the review: the final label and when, and
    only once the case is final (None before)."""
    if not case_is_final(case):
        return None
    return {"final_label": case.final_label or None, "reviewed_at": case.reviewed_at}
