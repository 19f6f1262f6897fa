"""Celery tasks of the inference pipeline: thin wrappers, ids in, one service call.

Delivery: `acks_late` + `reject_on_worker_lost`, so a message whose worker child died (SIGKILL, OOM
killer) is redelivered instead of lost. That is safe because the service is idempotent (one
Prediction per image and version, fixed heat-map names, writes only over unfinished rows) and
counts every attempt in the database before running: past settings.INFERENCE_MAX_ATTEMPTS the
prediction and its case are marked failed instead of looping. Only transient errors are retried
(backoff with jitter); any other final failure goes through `on_failure` to `prediction_fail`.
Time limits stay below half the broker visibility timeout (checked in settings).

TensorFlow is never imported here or by the services at import time: the model code loads inside
the worker child (warmed up by `worker_process_init` on workers that consume the inference queue).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError

from diagnosis.exceptions import TransientInferenceError

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (TransientInferenceError, OperationalError, InterfaceError)
_consumes_inference_queue = False


def _on_final_failure(
    task: Any, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
) -> None:
    from diagnosis.services.prediction_results import prediction_fail

    ids = args[0] if args else kwargs.get("prediction_ids") or kwargs.get("prediction_id")
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    reason = f"Prediction failed: {type(exc).__name__}"
    message = str(exc).strip()
    if message:
        reason = f"{reason}: {message}"[:300]
    logger.error(
        "prediction task failed for good", extra={"task_id": task_id, "prediction_ids": ids}
    )
    prediction_fail(prediction_ids=ids, reason=reason)


_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": settings.INFERENCE_MAX_ATTEMPTS,
    "soft_time_limit": settings.INFERENCE_SOFT_TIME_LIMIT,
    "time_limit": settings.INFERENCE_TIME_LIMIT,
    "ignore_result": True,
    "on_failure": _on_final_failure,
}


@shared_task(name="diagnosis.tasks.prediction_run", **_TASK_OPTIONS)
def prediction_run(self: Any, prediction_id: int) -> dict[str, int]:
    """One image per task (no draining): the baseline the batched task is measured against."""
    from diagnosis.services.prediction_results import prediction_run_batch as run

    return run(prediction_ids=[int(prediction_id)], drain=False)


@shared_task(name="diagnosis.tasks.prediction_run_batch", **_TASK_OPTIONS)
def prediction_run_batch(self: Any, prediction_ids: list[int]) -> dict[str, int]:
    """The given predictions plus other waiting ones, up to settings.INFERENCE_BATCH_SIZE."""
    from diagnosis.services.prediction_results import prediction_run_batch as run

    return run(prediction_ids=[int(pk) for pk in prediction_ids], drain=True)


@shared_task(
    name="diagnosis.tasks.case_sweep_stuck",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def case_sweep_stuck() -> dict[str, int]:
    from diagnosis.services.sweeper import case_sweep_stuck as sweep

    return sweep()


@shared_task(
    name="diagnosis.tasks.media_reconcile",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
)
def media_reconcile() -> dict[str, int]:
    """Periodic: remove media files without rows (past the grace period), flag rows without files."""
    from diagnosis.services.media import media_reconcile as reconcile

    return reconcile(fix=True).as_counts()


@celeryd_after_setup.connect
def _note_queues(sender: Any, instance: Any, **kwargs: Any) -> None:
    """In the worker's main process, before the pool forks: remember whether this worker serves
    the inference queue (the flag is inherited by the children)."""
    global _consumes_inference_queue
    queues = instance.app.amqp.queues.consume_from or {}
    _consumes_inference_queue = "inference" in queues


@worker_process_init.connect
def _warm_up(**kwargs: Any) -> None:
    """In each new worker child of an inference worker: import TensorFlow and load the model."""
    if not (_consumes_inference_queue and settings.INFERENCE_PRELOAD):
        return
    from diagnosis.services.prediction_results import prediction_worker_warm_up

    prediction_worker_warm_up()
