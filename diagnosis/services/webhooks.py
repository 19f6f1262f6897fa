"""Signed webhook notifications to API clients."""

from __future__ import annotations

from diagnosis.models import Case


def webhook_notify(*, case: Case, event: str) -> None:
    """Queue a signed POST of `event` ("case.predicted", "case.reviewed") to the case's API client,
    if it has one. Safe to call inside a transaction: delivery is dispatched on commit."""
