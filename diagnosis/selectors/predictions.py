"""Prediction reads for the case pages: the current result per image, progress, heat-map files.

Permission scoping goes through `case_get` (foreign cases raise NotFoundError -> 404).
"""

from __future__ import annotations

import math
import uuid as uuid_lib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from diagnosis.exceptions import NotFoundError
from diagnosis.models import Case, Prediction, XrayImage
from diagnosis.selectors.cases import case_get

T = TypeVar("T")

IN_FLIGHT = (Case.Status.RECEIVED, Case.Status.QUEUED, Case.Status.PREDICTING)

CANDIDATE_KEYS = ("x0", "y0", "x1", "y1", "score")


def prediction_candidates(
    candidates: Any, *, width: int | None = None, height: int | None = None
) -> list[dict[str, float]]:
    """A prediction's stored candidates as served: best first, each {"x0", "y0", "x1", "y1",
    "score"} in pixels of the canonical image (origin top-left, x right, y down), the score in
    [0, 1]. Boxes are clipped to `width` x `height` when given; an entry that is not a box with
    positive area inside the image is left out (never shown half-read)."""
    out: list[dict[str, float]] = []
    if not isinstance(candidates, list):
        return out
    for raw in candidates:
        if not isinstance(raw, dict):
            continue
        try:
            box = {key: float(raw[key]) for key in CANDIDATE_KEYS}
        except (KeyError, TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in box.values()):
            continue
        if width:
            box["x0"], box["x1"] = max(0.0, box["x0"]), min(float(width), box["x1"])
        if height:
            box["y0"], box["y1"] = max(0.0, box["y0"]), min(float(height), box["y1"])
        if box["x1"] <= box["x0"] or box["y1"] <= box["y0"]:
            continue
        box["score"] = min(1.0, max(0.0, box["score"]))
        out.append(box)
    out.sort(key=lambda box: -box["score"])  # stable: equal scores keep the model's order
    return out


@dataclass
class ImageWithPrediction:
    image: XrayImage
    prediction: Prediction | None
    threshold: float | None = None


@dataclass
class CaseResults:
    case: Case
    items: list[ImageWithPrediction] = field(default_factory=list)
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def in_flight(self) -> bool:
        return self.case.status in IN_FLIGHT

    @property
    def percent(self) -> int:
        return round(100 * (self.done + self.failed) / self.total) if self.total else 0


def _pick(ordered: Sequence[T], status: Callable[[T], str]) -> T | None:
    for item in ordered:
        if status(item) == Prediction.Status.DONE:
            return item
    return ordered[0] if ordered else None


def prediction_current(predictions: Iterable[Prediction]) -> Prediction | None:
    """Which of an image's predictions is current: the newest finished one (a new version's result
    replaces the old one once done; whatever version is active now, since the reads were made
    against it), else the newest attempt in any state. The one home of this rule: the case pages,
    the review screen, the API and the heat-map downloads all use it."""
    return _pick(sorted(predictions, key=lambda p: (p.created_at, p.pk), reverse=True), _status)


def prediction_row_current(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """`prediction_current` for prediction value rows already ordered newest first (created_at,
    then id), as `api_case_detail` reads them."""
    return _pick(rows, _row_status)


def _status(prediction: Prediction) -> str:
    return prediction.status


def _row_status(row: dict[str, Any]) -> str:
    return str(row["status"])


def case_results(*, case: Case) -> CaseResults:
    """Per image (in position order) its current prediction, with progress counts. Two queries."""
    images = list(case.images.order_by("position", "pk"))
    by_image: dict[int, list[Prediction]] = {image.pk: [] for image in images}
    for prediction in Prediction.objects.filter(image__case=case).select_related("model_version"):
        by_image[prediction.image_id].append(prediction)
    results = CaseResults(case=case)
    for image in images:
        current = prediction_current(by_image[image.pk])
        threshold = None
        if current is not None:
            version = current.model_version
            threshold = version.thresholds.get(version.default_operating_point)
            results.done += current.status == Prediction.Status.DONE
            results.failed += current.status == Prediction.Status.FAILED
        results.items.append(
            ImageWithPrediction(image=image, prediction=current, threshold=threshold)
        )
    return results


def prediction_get_for_image(
    *,
    user: AbstractBaseUser | AnonymousUser,
    case_uuid: uuid_lib.UUID | str,
    image_pk: int,
    prediction_id: int | None = None,
) -> tuple[Case, Prediction]:
    """A finished prediction of one image of a case the user may see: `prediction_id` if given
    (it must belong to that image), else the current one. NotFoundError (404) otherwise."""
    case = case_get(user=user, case_uuid=case_uuid)
    if not case.images.filter(pk=image_pk).exists():
        raise NotFoundError("Image not found.")
    predictions = Prediction.objects.filter(image_id=image_pk)
    if prediction_id is not None:
        predictions = predictions.filter(pk=prediction_id)
    current = prediction_current(predictions)
    if current is None or current.status != Prediction.Status.DONE or not current.heatmap:
        raise NotFoundError("No heat-map for this image yet.")
    return case, current
