"""Model registry reads."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from diagnosis.models import ModelVersion


def model_version_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("promoted_by", "training_run").order_by(
        "-created_at"
    )


# What each operating point means, in the words shown next to the model's output.
OPERATING_POINT_MEANING = {
    "balanced": (
        "the threshold that best balances sensitivity and specificity on the validation split"
    ),
    "high_sensitivity": (
        "the highest threshold that still finds at least 90 % of fractures on the validation split"
    ),
}


def model_version_test_metrics(version: ModelVersion) -> dict[str, Any]:
    """The frozen-test-set metrics of a version, whatever their origin: a registered artifact's
    card nests them under "test", a training run's evaluation stores them flat."""
    metrics = version.metrics or {}
    nested = metrics.get("test")
    return nested if isinstance(nested, dict) else metrics


def model_version_operating_point(version: ModelVersion, name: str = "") -> dict[str, Any]:
    """One operating point of a version with its test-set meaning: name, display name, threshold,
    meaning, sensitivity, specificity, PPV, NPV and the test prevalence (None where unknown)."""
    name = name or version.default_operating_point
    metrics = model_version_test_metrics(version)
    point = (metrics.get("operating_points") or {}).get(name) or {}
    prevalence = metrics.get("prevalence")
    if prevalence is None and metrics.get("n") and metrics.get("positives") is not None:
        prevalence = metrics["positives"] / metrics["n"]
    if prevalence is None and point.get("confusion"):
        c = point["confusion"]
        total = sum(c.get(k, 0) for k in ("tp", "fp", "tn", "fn"))
        prevalence = (c.get("tp", 0) + c.get("fn", 0)) / total if total else None
    return {
        "name": name,
        "display": name.replace("_", " "),
        "threshold": (version.thresholds or {}).get(name),
        "meaning": OPERATING_POINT_MEANING.get(name, ""),
        "sensitivity": point.get("sensitivity"),
        "specificity": point.get("specificity"),
        "ppv": point.get("ppv"),
        "npv": point.get("npv"),
        "prevalence": prevalence,
    }


def model_version_localises(version: ModelVersion | None) -> bool:
    """Whether a version marks suspected fracture sites (its card has a localisation section);
    a classifier-only version gives a probability and a heat-map but no candidates."""
    return version is not None and card_localises(version.card)


def card_localises(card: Any) -> bool:
    """`model_version_localises` for a registered card (or its `localisation` section) as read
    from the database."""
    section = card.get("localisation") if isinstance(card, dict) else None
    return isinstance(section, dict) and bool(section)
