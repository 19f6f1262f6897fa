"""Template helpers of the inference pipeline: the case page's images with their current results."""

from __future__ import annotations

import re
from typing import Any

from django import template

from diagnosis.models import Case, Label, Prediction
from diagnosis.selectors.models import model_version_operating_point
from diagnosis.selectors.predictions import CaseResults, case_results

register = template.Library()

RETRY_PERMISSIONS = ("diagnosis.review_case", "diagnosis.manage_models")


@register.simple_tag
def case_prediction_results(case: Case) -> CaseResults | None:
    """Per image its current prediction (newest finished, else newest), with progress counts."""
    if not isinstance(case, Case):
        return None
    return case_results(case=case)


@register.simple_tag(takes_context=True)
def may_retry_predictions(context: template.Context) -> bool:
    """Whether the signed-in user sees the retry action of a failed case (readers and admins)."""
    request = context.get("request")
    user: Any = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    return any(user.has_perm(perm) for perm in RETRY_PERMISSIONS)


@register.simple_tag
def model_suggestion(prediction: Prediction | None) -> dict[str, Any] | None:
    """A finished prediction worded as the model's suggestion: whether it flags a fracture at the
    version's default operating point, its probability, and that point's threshold and test-set
    meaning (PPV / NPV). None when there is no finished result."""
    if prediction is None or prediction.status != Prediction.Status.DONE:
        return None
    if prediction.probability is None:
        return None
    point = model_version_operating_point(prediction.model_version)
    return {
        "flagged": prediction.label == Label.FRACTURED,
        "probability": prediction.probability,
        "point": point,
        "version": prediction.model_version.version,
    }


@register.filter
def percent(value: float | None) -> str:
    """0.8734 -> '87.3 %'."""
    if value is None:
        return "—"
    return f"{100.0 * float(value):.1f} %"


@register.filter
def operating_point(value: str | None) -> str:
    """'high_sensitivity' -> 'high sensitivity'."""
    return (value or "").replace("_", " ")


@register.filter
def label_display(value: str | None) -> str:
    """A stored label value ('fractured' / 'not_fractured') -> its display name."""
    return str(Label(value).label) if value in Label.values else (value or "—")


# An exception's class name or repr ("OperationalError(...)", "Prediction failed: TimeoutError: x").
_TECHNICAL = re.compile(
    r"\b[A-Z][A-Za-z]*(Error|Exception|Timeout|Interrupt)\b|Traceback|\w+\(['\"]"
)
PLAIN_FAILURE = (
    "A technical fault stopped the model on this image (the details are in the server log); "
    "retrying usually helps."
)


@register.filter
def plain_reason(value: str | None) -> str:
    """A failure reason in plain words: internal exception names and reprs become one sentence
    (the full text stays in the log and the database); readable reasons pass through."""
    text = (value or "").strip()
    if not text:
        return ""
    return PLAIN_FAILURE if _TECHNICAL.search(text) else text
