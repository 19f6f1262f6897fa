"""Requesting predictions and dispatching them to the inference workers.

Flow: `case_request_predictions` (after the case's creating transaction commits) creates one
pending Prediction per image on the active model version, moves the case to `queued` and, after
commit, sends batch tasks to the `inference` queue. A worker runs
`prediction_results.prediction_run_batch`, which writes the results and moves the case on
(`case_progress`).

Nothing is lost: if the broker is down at dispatch the case stays `queued` and the periodic
`sweeper.case_sweep_stuck` re-dispatches it, as it does for `predicting` cases whose work went stale
and for `received` cases that waited for a model to be activated.
"""

from __future__ import annotations

import logging

import redis.exceptions
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerOperationalError

from diagnosis.exceptions import InvalidStateError, NoActiveModelError
from diagnosis.models import Case, Prediction
from diagnosis.selectors.models import model_version_get_active
from diagnosis.services.case_progress import case_advance, case_move
from diagnosis.tasks.predictions import prediction_run_batch as prediction_run_batch_task

logger = logging.getLogger(__name__)

# Errors a publish raises when the broker is unreachable (after kombu's short retry policy).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    BrokerOperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    OSError,
)
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
NO_MODEL_REASON = "Waiting for an active model version; predictions start once one is registered."
OPEN = (Prediction.Status.PENDING, Prediction.Status.RUNNING)


def predictions_dispatch(*, prediction_ids: list[int], case_id: int | None = None) -> bool:
    """Send batch tasks (ids only). A broker outage is logged, never raised: the rows are
    committed and the sweeper sends them again. In embedded mode this runs the task in-process."""
    if not prediction_ids:
        return True
    size = max(1, settings.INFERENCE_BATCH_SIZE)
    try:
        for start in range(0, len(prediction_ids), size):
            prediction_run_batch_task.apply_async(
                args=[prediction_ids[start : start + size]],
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
    except BROKER_ERRORS as exc:
        logger.warning(
            "broker unavailable: predictions left queued for the sweeper",
            extra={
                "case_id": case_id,
                "prediction_ids": prediction_ids,
                "error": type(exc).__name__,
            },
        )
        return False
    return True


@transaction.atomic
def case_request_predictions(*, case: Case) -> list[int]:
    """Create a pending Prediction per image on the active model version (idempotent: one per
    image and version) and dispatch them after commit; returns the ids sent.

    A `received`/`queued`/`failed` case becomes `queued`; a case further along (predicted, in
    review) keeps its status while the new version's predictions run. Without an active model the
    case stays `received` with a reason, and the sweeper requests again once a model is active.
    """
    case = Case.objects.select_for_update().get(pk=case.pk)
    if case.status == Case.Status.CANCELLED:
        return []
    version = model_version_get_active()
    if version is None:
        if case.status == Case.Status.RECEIVED and case.status_reason != NO_MODEL_REASON:
            case.status_reason = NO_MODEL_REASON
            case.save(update_fields=["status_reason", "updated_at"])
        logger.warning("no active model version", extra={"case_id": case.pk})
        return []
    open_ids = []
    for image in case.images.order_by("position", "pk"):
        prediction, _ = Prediction.objects.get_or_create(image=image, model_version=version)
        if prediction.status in OPEN:
            open_ids.append(prediction.pk)
    if case.status in (Case.Status.RECEIVED, Case.Status.QUEUED, Case.Status.FAILED):
        if open_ids:
            case.save(update_fields=case_move(case, Case.Status.QUEUED, reason=""))
        else:
            case_advance(case_id=case.pk, model_version_id=version.pk)
    logger.info(
        "predictions requested",
        extra={"case_id": case.pk, "model_version": version.version, "prediction_ids": open_ids},
    )
    transaction.on_commit(lambda: predictions_dispatch(prediction_ids=open_ids, case_id=case.pk))
    return open_ids


@transaction.atomic
def case_retry_predictions(*, case: Case, user: AbstractBaseUser) -> Case:
    """Staff action on a failed (or stuck) case: reset its failed predictions on the active version
    (fresh attempt budget) and request predictions again."""
    case = Case.objects.select_for_update().get(pk=case.pk)
    if case.status not in (Case.Status.FAILED, Case.Status.QUEUED, Case.Status.RECEIVED):
        raise InvalidStateError(f"A {case.get_status_display().lower()} case cannot be retried.")
    version = model_version_get_active()
    if version is None:
        raise NoActiveModelError("No model version is active.")
    Prediction.objects.filter(
        image__case=case, model_version=version, status=Prediction.Status.FAILED
    ).update(status=Prediction.Status.PENDING, attempts=0, error="", started_at=None)
    if case.status == Case.Status.FAILED:
        case.save(update_fields=case_move(case, Case.Status.RECEIVED))
    case_request_predictions(case=case)
    logger.info("case retried", extra={"case_id": case.pk, "user_id": user.pk})
    case.refresh_from_db()
    return case
