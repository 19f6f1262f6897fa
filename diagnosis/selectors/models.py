"""Model registry reads."""

from __future__ import annotations

from django.db.models import QuerySet

from diagnosis.models import ModelVersion


def model_version_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("promoted_by", "training_run").order_by(
        "-created_at"
    )
