"""Prediction requests and results (inference pipeline)."""

from __future__ import annotations

from diagnosis.models import Case


def case_request_predictions(*, case: Case) -> None:
    """Called after the case's creating transaction commits: queue a prediction per image.

    Until the inference pipeline is wired this leaves the case `received`.
    """
