"""Celery tasks of retraining: thin wrappers, ids in, one service call.

`training_run` (queue `training` by the `diagnosis.tasks.training_*` route) acknowledges early: a
training worker killed mid-run must not have its message redelivered and start hours of work again.
The run is marked failed instead, by the heartbeat check in `retrain_schedule_check` (beat, default
queue: it is light) or, for errors the worker survives, by `on_failure`. TensorFlow is imported only
inside the task, in the worker child.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

logger = logging.getLogger(__name__)


def _on_failure(
    task: Any, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
) -> None:
    from diagnosis.services.training import training_run_fail

    run_id = args[0] if args else kwargs.get("run_id")
    if run_id is not None:
        training_run_fail(run_id=int(run_id), reason=f"{type(exc).__name__}: {exc}"[:500])


@shared_task(
    name="diagnosis.tasks.training_run",
    bind=True,
    acks_late=False,
    ignore_result=True,
    soft_time_limit=max(60, settings.CELERY_TRAINING_TIME_LIMIT - 120),
    time_limit=settings.CELERY_TRAINING_TIME_LIMIT,
    on_failure=_on_failure,
)
def training_run(self: Any, run_id: int) -> None:
    from diagnosis.services.training import training_run_execute

    training_run_execute(run_id=int(run_id))


@shared_task(
    name="diagnosis.tasks.retrain_schedule_check",
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def retrain_schedule_check() -> dict[str, Any]:
    from diagnosis.services.training import retrain_schedule_check as check

    return check()
