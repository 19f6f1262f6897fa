"""The sweeper: re-dispatches prediction work that should have happened by now (run periodically:
by beat in the full stack, by a thread of the web process in the embedded mode)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from diagnosis.models import Case, Prediction
from diagnosis.selectors.models import model_version_get_active
from diagnosis.services.media import media_reconcile
from diagnosis.services.predictions import case_request_predictions, predictions_dispatch

logger = logging.getLogger(__name__)


def case_sweep_stuck(*, now: Any = None) -> dict[str, int]:
    """Re-dispatch work that should have happened by now (idempotent; safe to run anywhere):
    `received` cases once a model is active, `queued` cases whose messages were never sent or were
    lost, and `predicting` cases whose predictions went stale (pending, or running without a
    result) beyond settings.STUCK_CASE_SECONDS. Each case is touched at most once per that bound,
    once its work was sent: with the broker down the sweep stops at the first failed publish and
    leaves that case and the rest untouched, so the next sweep retries them (`deferred` counts
    them)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_CASE_SECONDS)
    counts = {"requested": 0, "redispatched": 0, "predictions": 0, "deferred": 0}
    if model_version_get_active() is not None:
        waiting = Case.objects.filter(
            status=Case.Status.RECEIVED, created_at__lt=cutoff, updated_at__lt=cutoff
        ).values_list("pk", flat=True)
        for case in Case.objects.filter(pk__in=list(waiting[:500])):
            case_request_predictions(case=case)
            counts["requested"] += 1
    stuck = Case.objects.filter(
        Q(status=Case.Status.QUEUED) | Q(status=Case.Status.PREDICTING), updated_at__lt=cutoff
    ).values_list("pk", flat=True)
    stuck_ids = list(stuck[:500])
    for n, case_id in enumerate(stuck_ids):
        stale = list(
            Prediction.objects.filter(image__case_id=case_id)
            .filter(
                Q(status=Prediction.Status.PENDING)
                | Q(status=Prediction.Status.RUNNING, started_at__lt=cutoff)
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if stale and not predictions_dispatch(prediction_ids=stale, case_id=case_id):
            # The broker is down: this case and the rest stay untouched (not marked swept), so
            # the next sweep tries them again at once instead of a whole bound later.
            counts["deferred"] = len(stuck_ids) - n
            logger.warning("sweep deferred: broker unavailable", extra=counts)
            break
        Case.objects.filter(pk=case_id).update(updated_at=now)
        if stale:
            counts["redispatched"] += 1
            counts["predictions"] += len(stale)
    if any(counts.values()):
        logger.info("sweeper re-dispatched stuck work", extra=counts)
    return counts


# --- Embedded mode: no broker, no beat -------------------------------------------------------------

_embedded_thread: threading.Thread | None = None
_embedded_guard = threading.Lock()


def sweeper_embedded_start() -> bool:
    """Start the sweeper thread of an embedded-mode process (settings.EMBEDDED_SWEEPER), once;
    True if this call started it. Called by the process's first request, so `manage.py` commands
    other than the server never start it."""
    global _embedded_thread
    if not settings.EMBEDDED_SWEEPER:
        return False
    with _embedded_guard:
        if _embedded_thread is not None:
            return False
        _embedded_thread = threading.Thread(
            target=_embedded_loop, name="embedded-sweeper", daemon=True
        )
        _embedded_thread.start()
    logger.info("embedded sweeper started", extra={"interval_s": settings.SWEEP_INTERVAL_SECONDS})
    return True


def _embedded_loop() -> None:
    """What beat schedules in the full stack: the sweep, and the media reconcile less often."""
    reconciled = time.monotonic()
    while True:
        time.sleep(max(1, settings.SWEEP_INTERVAL_SECONDS))
        try:
            case_sweep_stuck()  # in-process: re-dispatched work runs in this thread
            if time.monotonic() - reconciled >= settings.MEDIA_RECONCILE_INTERVAL_SECONDS:
                reconciled = time.monotonic()
                media_reconcile(fix=True)
        except Exception:  # a boundary: log, and sweep again next time
            logger.exception("embedded sweep failed; retried at the next interval")
        finally:
            connection.close()
