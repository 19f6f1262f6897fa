"""Reads for the REST API and the token page, scoped to what the caller may see."""

from __future__ import annotations

import uuid as uuid_lib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import F, Func, IntegerField, OuterRef, Prefetch, QuerySet, Subquery

from diagnosis.exceptions import NotFoundError
from diagnosis.models import (
    ApiClient,
    ApiToken,
    Case,
    ModelVersion,
    Prediction,
    Review,
    WebhookDelivery,
    XrayImage,
)
from diagnosis.selectors.cases import case_list
from diagnosis.selectors.predictions import prediction_current
from diagnosis.selectors.reads import reader_display_name, reads_visible

User = AbstractBaseUser | AnonymousUser


# The columns of a case list row (`CaseListOutputSerializer`), read as values: building 25 model
# instances per page cost 0.6 ms of CPU per request.
CASE_LIST_COLUMNS = (
    "uuid",
    "patient_ref",
    "body_part",
    "status",
    "source",
    "urgent",
    "final_label",
    "created_at",
    "updated_at",
)


def _image_count() -> Subquery:
    """A correlated COUNT of the case's images (a subquery, not Count(): the paginator's COUNT(*)
    drops it instead of grouping). The ORM form is within 20 % of the former hand-written one
    (docs/benchmarks.md, "Hand-written SQL against the ORM", case list page)."""
    images = (
        XrayImage.objects.filter(case=OuterRef("pk"))
        .order_by()
        .annotate(count=Func(F("pk"), function="COUNT"))
        .values("count")
    )
    return Subquery(images, output_field=IntegerField())


def api_case_list(
    *,
    user: User,
    status: str | None = None,
    body_part: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Case, dict[str, Any]]:
    """The cases the user may see, newest first, as dicts of CASE_LIST_COLUMNS + image_count."""
    qs = case_list(user=user, status=status, body_part=body_part).values(
        *CASE_LIST_COLUMNS,
        image_count=_image_count(),
    )
    if created_after is not None:
        qs = qs.filter(created_at__gte=created_after)
    if created_before is not None:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def api_case_get(*, user: User, case_uuid: uuid_lib.UUID | str) -> Case:
    """The case if the user may see it; NotFoundError otherwise (foreign objects answer 404)."""
    try:
        return (
            case_list(user=user)
            .select_related(None)  # the API renders neither the creator nor the client
            .get(uuid=case_uuid)
        )
    except (Case.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFoundError("Case not found.") from exc


@dataclass(frozen=True)
class ImageDetail:
    """An image of a case detail with its predictions (newest first) and reads (in order)."""

    id: int
    position: int
    width: int
    height: int
    source_format: str
    predictions: list[dict[str, Any]]
    reads: list[dict[str, Any]]


@dataclass(frozen=True)
class CaseDetail:
    case: Case
    images: list[ImageDetail]


# Per image, one row per prediction (LEFT JOIN: one row of NULLs when there is none), with the
# model version columns the API renders.
_PREDICTION_VALUES = {
    "p_id": F("predictions__id"),
    "p_status": F("predictions__status"),
    "p_probability": F("predictions__probability"),
    "p_label": F("predictions__label"),
    "p_labels": F("predictions__labels"),
    "p_heatmap": F("predictions__heatmap"),
    "p_error": F("predictions__error"),
    "p_finished_at": F("predictions__finished_at"),
    "p_version": F("predictions__model_version__version"),
    "p_thresholds": F("predictions__model_version__thresholds"),
    "p_operating_point": F("predictions__model_version__default_operating_point"),
    "p_candidates": F("predictions__candidates"),
    # The card's localisation section (empty or absent for a classifier-only version).
    "p_localisation": F("predictions__model_version__card__localisation"),
}


def api_case_detail(*, user: User, case_uuid: uuid_lib.UUID | str) -> CaseDetail:
    """The case with its images, their predictions and reads, in three queries (case; images
    joined with predictions and model versions; reads with reviewers). Read as values: the
    nested prefetches (images, predictions, reads) cost one more query and 2 ms more CPU per
    request in prefetch bookkeeping and model instances. NotFoundError when not visible."""
    case = api_case_get(user=user, case_uuid=case_uuid)
    image_rows = (
        XrayImage.objects.filter(case_id=case.pk)
        .order_by("position", "-predictions__created_at", "-predictions__id")
        .values("id", "position", "width", "height", "source_format", **_PREDICTION_VALUES)
    )
    reads: dict[int, list[dict[str, Any]]] = {}
    all_reads = (
        Review.objects.filter(image__case_id=case.pk)
        .order_by("read_number")
        .values(
            "id",
            "image_id",
            "read_number",
            "decision",
            "final_label",
            "boxes",
            "created_at",
            "reviewer_id",
            reviewer_first_name=F("reviewer__first_name"),
            reviewer_last_name=F("reviewer__last_name"),
        )
    )
    # Blind reads: only what the user may see (selectors.reads), readers by display name.
    for read in reads_visible(user=user, case=case, reads=all_reads):
        read["reviewer_name"] = reader_display_name(
            first_name=read.pop("reviewer_first_name"),
            last_name=read.pop("reviewer_last_name"),
            user_id=read["reviewer_id"],
        )
        reads.setdefault(read["image_id"], []).append(read)
    images: dict[int, ImageDetail] = {}
    for row in image_rows:
        image = images.get(row["id"])
        if image is None:
            image = images[row["id"]] = ImageDetail(
                id=row["id"],
                position=row["position"],
                width=row["width"],
                height=row["height"],
                source_format=row["source_format"],
                predictions=[],
                reads=reads.get(row["id"], []),
            )
        if row["p_id"] is not None:
            image.predictions.append(
                {name[2:]: value for name, value in row.items() if name.startswith("p_")}
            )
    return CaseDetail(case=case, images=list(images.values()))


def api_image_get(*, user: User, case_uuid: uuid_lib.UUID | str, image_id: int) -> XrayImage:
    """An image of a case the user may see; NotFoundError otherwise."""
    try:
        return XrayImage.objects.select_related("case").get(
            pk=image_id, case__in=case_list(user=user).filter(uuid=case_uuid)
        )
    except (XrayImage.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFoundError("Image not found.") from exc


def api_heatmap_prediction_get(
    *, user: User, case_uuid: uuid_lib.UUID | str, image_id: int
) -> Prediction:
    image = api_image_get(user=user, case_uuid=case_uuid, image_id=image_id)
    prediction = prediction_current(image.predictions.select_related("model_version"))
    if prediction is None or prediction.status != Prediction.Status.DONE or not prediction.heatmap:
        raise NotFoundError("No heat-map for this image yet.")
    return prediction


# --- Token page ------------------------------------------------------------------------------------


def api_client_list(*, user: User) -> QuerySet[ApiClient]:
    if not user.is_authenticated:
        return ApiClient.objects.none()
    tokens = ApiToken.objects.order_by("-created_at")
    return (
        ApiClient.objects.filter(user=user)
        .prefetch_related(Prefetch("tokens", queryset=tokens))
        .order_by("name", "pk")
    )


def api_client_get(*, user: User, client_id: int) -> ApiClient:
    try:
        return api_client_list(user=user).get(pk=client_id)
    except (ApiClient.DoesNotExist, ValueError) as exc:
        raise NotFoundError("API client not found.") from exc


def api_token_get(*, user: User, token_id: int) -> ApiToken:
    if not user.is_authenticated:
        raise NotFoundError("Token not found.")
    try:
        return ApiToken.objects.select_related("client").get(pk=token_id, client__user=user)
    except (ApiToken.DoesNotExist, ValueError) as exc:
        raise NotFoundError("Token not found.") from exc


def webhook_delivery_list(*, user: User, limit: int = 50) -> list[WebhookDelivery]:
    if not user.is_authenticated:
        return []
    return list(
        WebhookDelivery.objects.filter(client__user=user)
        .select_related("client", "case")
        .order_by("-created_at", "-pk")[:limit]
    )


def api_model_version_get(*, version: str) -> ModelVersion:
    try:
        return ModelVersion.objects.select_related("promoted_by").get(version=version)
    except ModelVersion.DoesNotExist as exc:
        raise NotFoundError("Model version not found.") from exc
