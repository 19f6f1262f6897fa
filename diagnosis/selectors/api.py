"""Reads for the REST API and the token page, scoped to what the caller may see."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce

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

User = AbstractBaseUser | AnonymousUser


def api_case_list(
    *,
    user: User,
    status: str | None = None,
    body_part: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Case]:
    # A subquery, not Count(): the paginator's COUNT(*) then drops it instead of grouping.
    images = (
        XrayImage.objects.filter(case_id=OuterRef("pk"))
        .order_by()
        .values("case_id")
        .annotate(n=Count("pk"))
        .values("n")[:1]
    )
    qs = (
        case_list(user=user, status=status)
        .select_related(None)
        .annotate(image_count=Coalesce(Subquery(images, output_field=IntegerField()), 0))
    )
    if body_part:
        qs = qs.filter(body_part=body_part)
    if created_after is not None:
        qs = qs.filter(created_at__gte=created_after)
    if created_before is not None:
        qs = qs.filter(created_at__lt=created_before)
    return qs


# Registry columns the API never renders (the full model card can be large).
_MODEL_VERSION_BULK = tuple(
    f"model_version__{name}" for name in ("card", "metrics", "plots", "input_spec", "notes")
)


def _images_with_results() -> Prefetch:
    predictions = (
        Prediction.objects.select_related("model_version")
        .defer("timings", *_MODEL_VERSION_BULK)
        .order_by("-created_at", "-pk")
    )
    reviews = (
        Review.objects.select_related("reviewer")
        .only(
            "image_id", "read_number", "decision", "final_label", "created_at", "reviewer__username"
        )
        .order_by("read_number")
    )
    return Prefetch(
        "images",
        queryset=XrayImage.objects.order_by("position").prefetch_related(
            Prefetch("predictions", queryset=predictions),
            Prefetch("reviews", queryset=reviews),
        ),
    )


def api_case_get(*, user: User, case_uuid: uuid_lib.UUID | str) -> Case:
    """The case with images, predictions and reads prefetched; NotFoundError when not visible."""
    try:
        return (
            case_list(user=user)
            .select_related(None)  # the API renders neither the creator nor the client
            .prefetch_related(_images_with_results())
            .get(uuid=case_uuid)
        )
    except (Case.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFoundError("Case not found.") from exc


def api_image_get(*, user: User, case_uuid: uuid_lib.UUID | str, image_id: int) -> XrayImage:
    """An image of a case the user may see; NotFoundError otherwise."""
    try:
        return XrayImage.objects.select_related("case").get(
            pk=image_id, case__in=case_list(user=user).filter(uuid=case_uuid)
        )
    except (XrayImage.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFoundError("Image not found.") from exc


def prediction_pick(predictions: Iterable[Prediction]) -> Prediction | None:
    """The result to show for an image: the newest finished prediction (whatever version is
    active now, since that is the one the reads were made against), else the newest attempt.
    `predictions` is ordered newest first."""
    predictions = list(predictions)
    for prediction in predictions:
        if prediction.status == Prediction.Status.DONE:
            return prediction
    return predictions[0] if predictions else None


def api_heatmap_prediction_get(
    *, user: User, case_uuid: uuid_lib.UUID | str, image_id: int
) -> Prediction:
    image = api_image_get(user=user, case_uuid=case_uuid, image_id=image_id)
    prediction = prediction_pick(
        image.predictions.select_related("model_version").order_by("-created_at", "-pk")
    )
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
