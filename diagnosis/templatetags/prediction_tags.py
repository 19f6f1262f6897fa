"""Template helpers of the inference pipeline: the case page's images with their current results."""

from __future__ import annotations

import re
from typing import Any

from django import template

from diagnosis.models import Case, Label, Prediction, XrayImage
from diagnosis.selectors.models import model_version_localises, model_version_operating_point
from diagnosis.selectors.predictions import CaseResults, case_results, prediction_candidates

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


@register.simple_tag
def model_marks(prediction: Prediction | None, image: XrayImage) -> dict[str, Any] | None:
    """The suspected fracture sites a finished prediction marks, ready to draw over the image in
    an SVG whose viewBox is the canonical image's pixels: `localises` (False for a
    classifier-only version, which marks nothing), `count`, `boxes` best first (each x, y, w, h,
    score, rank and where its score label goes), label sizes in image pixels, and `candidates`
    (the boxes as the API serves them, for the review viewer). None when there
    is no finished result."""
    if prediction is None or prediction.status != Prediction.Status.DONE:
        return None
    width, height = image.width, image.height
    localises = model_version_localises(prediction.model_version)
    candidates = (
        prediction_candidates(prediction.candidates, width=width, height=height)
        if localises
        else []
    )
    # Labels about 1/28 of the longer side: some 11-14 screen pixels at the page's image widths.
    font = max(8.0, max(width, height) / 28)
    boxes = []
    for rank, box in enumerate(candidates, start=1):
        above = box["y0"] - font * 0.3
        boxes.append(
            {
                "rank": rank,
                "x": box["x0"],
                "y": box["y0"],
                "w": box["x1"] - box["x0"],
                "h": box["y1"] - box["y0"],
                "score": box["score"],
                # Above the box, or inside its top edge when the box touches the image's top.
                "label_x": min(box["x0"], max(0.0, width - 3.2 * font)),
                "label_y": above if above - font >= 0 else box["y0"] + font,
            }
        )
    return {
        "localises": localises,
        "count": len(boxes),
        "boxes": boxes,
        "candidates": candidates,  # as served: pixel boxes with their score, best first
        "font": round(font, 1),
        "outline": round(font / 5, 2),
        "viewbox": f"0 0 {width} {height}",
    }


@register.simple_tag
def reader_boxes(summary: dict[str, Any] | None, image: XrayImage) -> list[dict[str, float]]:
    """The radiologists' final fracture boxes of one image of a reviewed case (`review_summary`),
    in pixels of the canonical image (x, y, w, h), to draw beside the model's marks; empty while
    the case is not reviewed or the final reading marks no fracture."""
    if not summary or not image.width or not image.height:
        return []
    for item in summary.get("images") or []:
        if item.image.pk != image.pk:
            continue
        out = []
        for box in item.final_boxes():
            try:
                x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
            except (KeyError, TypeError, ValueError):
                continue
            if w > 0 and h > 0:
                out.append(
                    {
                        "x": x * image.width,
                        "y": y * image.height,
                        "w": w * image.width,
                        "h": h * image.height,
                    }
                )
        return out
    return []


@register.filter
def score(value: float | None) -> str:
    """A candidate's score in [0, 1] with two decimals: 0.8134 -> '0.81'."""
    return "—" if value is None else f"{float(value):.2f}"


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
