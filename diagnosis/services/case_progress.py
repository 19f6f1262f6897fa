"""Case progress: the one place that changes `Case.status`.

received -> queued -> predicting -> predicted -> in_review -> reviewed; the prediction states can
end in failed (a retry goes back to received or queued); any case not yet reviewed can be
cancelled. `TRANSITIONS` lists every allowed move.

Every change goes through `case_move` (one locked case, saved by the caller together with its own
fields in the same transaction), `cases_start_predicting` (a worker's claim) or `cases_advance`
(results landed). A new status, or a new way into one, is added here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from diagnosis.exceptions import InvalidStateError
from diagnosis.models import Case, ModelVersion, Prediction, XrayImage
from diagnosis.services.bulk import rows_update
from diagnosis.services.webhooks import webhook_notify

logger = logging.getLogger(__name__)

S = Case.Status
# Where a case may go from each status. A move to the same status is allowed only where listed
# (a queued case queued again by a new request; a claim renewed).
TRANSITIONS: dict[str, frozenset[str]] = {
    S.RECEIVED: frozenset({S.QUEUED, S.PREDICTED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.QUEUED, S.PREDICTING, S.PREDICTED, S.FAILED, S.CANCELLED}),
    S.PREDICTING: frozenset({S.PREDICTED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.RECEIVED, S.QUEUED, S.PREDICTED, S.CANCELLED}),
    S.PREDICTED: frozenset({S.IN_REVIEW, S.CANCELLED}),
    S.IN_REVIEW: frozenset({S.IN_REVIEW, S.PREDICTED, S.REVIEWED, S.CANCELLED}),
    S.REVIEWED: frozenset(),
    S.CANCELLED: frozenset(),
}
CANCELLABLE = frozenset(status for status, to in TRANSITIONS.items() if S.CANCELLED in to)
# Cases that new prediction results move on (predicted and later cases keep their status).
ADVANCEABLE = (S.RECEIVED, S.QUEUED, S.PREDICTING, S.FAILED)
# The timestamp a status sets on arrival.
_STAMPS = {S.QUEUED: "queued_at", S.PREDICTED: "predicted_at", S.REVIEWED: "reviewed_at"}


def case_move(
    case: Case, to: str, *, reason: str | None = None, now: datetime | None = None
) -> list[str]:
    """Set `case` (a row the caller holds locked) to status `to` in memory and return the fields
    changed, for the caller's `save(update_fields=...)` in the same transaction.

    `reason` replaces `status_reason` when given. Raises InvalidStateError for a move
    `TRANSITIONS` does not list.
    """
    if to not in TRANSITIONS[case.status]:
        raise InvalidStateError(
            f"A {case.get_status_display().lower()} case cannot become {S(to).label.lower()}."
        )
    now = now or timezone.now()
    case.status = to
    case.updated_at = now
    fields = ["status", "updated_at"]
    if to in _STAMPS:
        setattr(case, _STAMPS[to], now)
        fields.append(_STAMPS[to])
    if reason is not None:
        case.status_reason = reason[:500]
        fields.append("status_reason")
    return fields


def cases_start_predicting(*, case_ids: Iterable[int], now: datetime) -> None:
    """A worker claimed predictions of these cases: queued ones become `predicting`."""
    sources = [status for status, to in TRANSITIONS.items() if S.PREDICTING in to]
    Case.objects.filter(pk__in=set(case_ids), status__in=sources).update(
        status=S.PREDICTING, updated_at=now
    )


# --- Priority (pure) ----------------------------------------------------------------------------------

PRIORITY_URGENT = 4.0
PRIORITY_SUSPECTED = 2.0
PRIORITY_UNCERTAIN = 1.0
UNCERTAINTY_BAND = 0.15


def case_priority(
    *,
    probabilities: Sequence[float | None],
    threshold: float,
    urgent: bool = False,
    band: float = UNCERTAINTY_BAND,
) -> float:
    """Queue priority of a predicted case; higher is read first, equal values in arrival order.

    Buckets add up: urgent (4), suspected fracture - some image at or above the default operating
    point's threshold (2), model uncertain - some image within `band` of the threshold (1). So the
    queue runs urgent cases, then suspected fractures (uncertain ones first), then uncertain
    negatives, then confident negatives; within a bucket, oldest first. Called by the inference
    pipeline when a case's predictions land.
    """
    known = [p for p in probabilities if p is not None and not math.isnan(p)]
    priority = PRIORITY_URGENT if urgent else 0.0
    if not known:
        return priority + PRIORITY_UNCERTAIN  # no usable prediction: a reader must look
    if max(known) >= threshold:
        priority += PRIORITY_SUSPECTED
    if any(abs(p - threshold) < band for p in known):
        priority += PRIORITY_UNCERTAIN
    return priority


# --- Results landed -----------------------------------------------------------------------------------


class _Outcome(NamedTuple):
    """What moving a case on needs of one of its predictions (read as values, not models)."""

    position: int
    status: str
    probability: float | None
    error: str


def case_advance(*, case_id: int, model_version_id: int) -> None:
    """`cases_advance` for one case."""
    cases_advance(case_ids=[case_id], version=ModelVersion.objects.get(pk=model_version_id))


def cases_advance(*, case_ids: Iterable[int], version: ModelVersion) -> None:
    """Move cases on from their predictions on `version`: any failed -> `failed` with the reason;
    all done -> `predicted` (priority computed, `case.predicted` webhook after commit). Cases
    already predicted or in review keep their status (a new version's results do not move them
    back). A constant number of queries for the whole batch."""
    cases = list(
        Case.objects.select_for_update()
        .filter(pk__in=set(case_ids), status__in=ADVANCEABLE)
        .order_by("pk")  # one lock order for every worker: no deadlocks
    )
    if not cases:
        return
    # The cases' images, then their predictions by image id: both lookups follow the narrow
    # indexes (image case, unique image + version), never the model-version index that nearly
    # every prediction shares.
    images = {
        pk: (case_id, position)
        for pk, case_id, position in XrayImage.objects.filter(
            case_id__in=[case.pk for case in cases]
        ).values_list("pk", "case_id", "position")
    }
    n_images = Counter(case_id for case_id, _ in images.values())
    by_case: dict[int, list[_Outcome]] = defaultdict(list)
    for image_id, status, probability, error in Prediction.objects.filter(
        image_id__in=list(images), model_version=version
    ).values_list("image_id", "status", "probability", "error"):
        case_id, position = images[image_id]
        by_case[case_id].append(_Outcome(position, status, probability, error))
    for outcomes in by_case.values():
        outcomes.sort(key=lambda outcome: outcome.position)
    threshold = float(version.thresholds.get(version.default_operating_point, 0.5))
    now = timezone.now()
    failed, predicted = [], []
    for case in cases:
        predictions = by_case[case.pk]
        bad = [p for p in predictions if p.status == Prediction.Status.FAILED]
        if bad:
            if case.status != S.FAILED:
                case_move(
                    case,
                    S.FAILED,
                    reason=f"Prediction failed for image {bad[0].position + 1}: {bad[0].error}",
                    now=now,
                )
                failed.append(case)
            continue
        done = [p for p in predictions if p.status == Prediction.Status.DONE]
        if not n_images.get(case.pk) or len(done) < n_images[case.pk]:
            continue
        case_move(case, S.PREDICTED, reason="", now=now)
        case.priority = case_priority(
            probabilities=[float(p.probability or 0.0) for p in done],
            threshold=threshold,
            urgent=case.urgent,
        )
        predicted.append(case)
    if failed:
        rows_update(failed, ["status", "status_reason", "updated_at"])
    if predicted:
        rows_update(
            predicted, ["status", "status_reason", "predicted_at", "priority", "updated_at"]
        )
    for case in predicted:
        logger.info("case predicted", extra={"case_id": case.pk, "model_version": version.version})
        transaction.on_commit(functools.partial(webhook_notify, case=case, event="case.predicted"))
