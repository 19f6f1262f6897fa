"""Celery tasks (see the package docstring): webhook delivery with exponential backoff."""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings


def webhook_backoff_seconds(retries: int) -> int:
    """Seconds before retry number `retries + 1`: base * 2**retries, capped, with +-20 % jitter."""
    delay = min(
        settings.WEBHOOK_BACKOFF_BASE_SECONDS * 2**retries, settings.WEBHOOK_BACKOFF_MAX_SECONDS
    )
    return max(1, round(delay * random.uniform(0.8, 1.2)))  # noqa: S311 (jitter, not crypto)


@shared_task(
    bind=True,
    name="diagnosis.tasks.webhook_deliver",
    acks_late=True,
    ignore_result=True,
    max_retries=None,  # bounded by WEBHOOK_MAX_ATTEMPTS below
    soft_time_limit=60,
    time_limit=90,
)
def webhook_deliver(self, delivery_id: int) -> None:
    from diagnosis.services.webhooks import WebhookRetryableError
    from diagnosis.services.webhooks import webhook_deliver as deliver

    final_attempt = self.request.retries + 1 >= settings.WEBHOOK_MAX_ATTEMPTS
    try:
        deliver(delivery_id=delivery_id, final_attempt=final_attempt)
    except WebhookRetryableError as exc:
        raise self.retry(exc=exc, countdown=webhook_backoff_seconds(self.request.retries)) from exc
