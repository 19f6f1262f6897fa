"""Reads for retraining: reviewed images and their final labels, snapshots, runs, registry usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max, Q, QuerySet

from diagnosis.exceptions import NotFoundError
from diagnosis.models import (
    Case,
    DatasetSnapshot,
    Label,
    ModelVersion,
    Prediction,
    Review,
    TrainingRun,
    XrayImage,
)
from diagnosis.selectors.reads import reads_agreed_label, reads_deciding_boxes

IN_FLIGHT = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)


@dataclass(frozen=True)
class LabelledImage:
    image: XrayImage
    label: str
    latest_review_at: object  # datetime | None
    # the agreed fracture boxes, fractions of the canonical image ({x, y, w, h, origin})
    boxes: list[dict[str, Any]] = field(default_factory=list)


def image_final_label(image: XrayImage) -> str | None:
    """The image's agreed label: the adjudication if any, else the reads if they agree, else None.

    Uses the prefetched `reviews`; an image without reads falls back to its case's final label.
    """
    reads = {review.read_number: review.final_label for review in image.reviews.all()}
    if reads:
        return reads_agreed_label(reads)
    return image.case.final_label or None


def image_final_boxes(image: XrayImage, label: str) -> list[dict[str, Any]]:
    """The agreed fracture boxes of an image with agreed `label` (`reads_deciding_boxes`), from
    the prefetched `reviews`."""
    return reads_deciding_boxes(image.reviews.all(), label)


def snapshot_reviewed_images() -> list[LabelledImage]:
    """Images of reviewed cases with an agreed label and its boxes, oldest first."""
    images = (
        XrayImage.objects.filter(case__status=Case.Status.REVIEWED)
        .select_related("case")
        .prefetch_related("reviews")
        .order_by("pk")
    )
    out = []
    for image in images:
        label = image_final_label(image)
        if label in Label.values:
            latest = max(
                (r.created_at for r in image.reviews.all()), default=image.case.reviewed_at
            )
            out.append(
                LabelledImage(
                    image=image,
                    label=label,
                    latest_review_at=latest,
                    boxes=image_final_boxes(image, label),
                )
            )
    return out


def snapshot_list() -> QuerySet[DatasetSnapshot]:
    return DatasetSnapshot.objects.select_related("created_by", "frozen_test_of").order_by(
        "-created_at", "-pk"
    )


def snapshot_get_latest() -> DatasetSnapshot | None:
    return snapshot_list().first()


def snapshot_get(*, snapshot_id: int) -> DatasetSnapshot:
    try:
        return snapshot_list().get(pk=snapshot_id)
    except DatasetSnapshot.DoesNotExist as exc:
        raise NotFoundError("Snapshot not found.") from exc


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related(
        "triggered_by", "snapshot", "result_version"
    ).order_by("-created_at", "-pk")


def training_run_get(*, run_id: int) -> TrainingRun:
    try:
        return training_run_list().get(pk=run_id)
    except TrainingRun.DoesNotExist as exc:
        raise NotFoundError("Training run not found.") from exc


def training_run_get_in_flight() -> TrainingRun | None:
    return training_run_list().filter(status__in=IN_FLIGHT).first()


def new_reviews_since_last_run() -> int:
    """Reviews (reads of reviewed cases) created after the latest run was triggered, not counting
    runs that failed or were cancelled: they learned nothing from the reviews, so a failed
    "Retrain now" does not reset the count."""
    last = (
        TrainingRun.objects.exclude(
            status__in=(TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)
        )
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    qs = Review.objects.filter(image__case__status=Case.Status.REVIEWED)
    if last is not None:
        qs = qs.filter(created_at__gt=last)
    return qs.count()


def model_version_get(*, version_id: int) -> ModelVersion:
    try:
        return ModelVersion.objects.select_related("promoted_by", "training_run").get(pk=version_id)
    except ModelVersion.DoesNotExist as exc:
        raise NotFoundError("Model version not found.") from exc


def model_version_list_with_usage() -> QuerySet[ModelVersion]:
    """Versions, newest first, with how many predictions and cases each produced."""
    return (
        ModelVersion.objects.select_related("promoted_by", "training_run")
        .annotate(
            prediction_count=Count("predictions", filter=Q(predictions__status="done")),
            case_count=Count("predictions__image__case", distinct=True),
            last_prediction_at=Max("predictions__created_at"),
        )
        .order_by("-created_at", "-pk")
    )


def model_version_get_previous_active() -> ModelVersion | None:
    """The version that was active before the current one (the rollback target)."""
    return (
        ModelVersion.objects.filter(status=ModelVersion.Status.RETIRED, promoted_at__isnull=False)
        .order_by("-promoted_at", "-pk")
        .first()
    )


def cases_predicted_by_version(*, version: ModelVersion) -> QuerySet[Case]:
    return (
        Case.objects.filter(images__predictions__model_version=version)
        .distinct()
        .order_by("-created_at", "-pk")
    )


def unreviewed_cases_without_version(*, version: ModelVersion) -> QuerySet[Case]:
    """Cases awaiting review (predicted or failed) that have an image not yet predicted by `version`."""
    done = Prediction.objects.filter(model_version=version).values("image_id")
    return (
        Case.objects.filter(
            status__in=[Case.Status.PREDICTED, Case.Status.FAILED],
            images__in=XrayImage.objects.exclude(pk__in=done),
        )
        .distinct()
        .order_by("created_at", "pk")
    )
