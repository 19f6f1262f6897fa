"""Builders for review-workflow tests: predicted cases with images and finished predictions."""

from __future__ import annotations

from collections.abc import Sequence

from diagnosis.models import BodyPart, Case, Label, ModelVersion, Prediction
from diagnosis.tests import factories


def active_model_version() -> ModelVersion:
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    return version or factories.ModelVersionFactory()


def predicted_case(
    *,
    probabilities: Sequence[float | None] = (0.8,),
    created_by=None,
    body_part: str = BodyPart.HAND,
    priority: float = 0.0,
    threshold: float = 0.5,
    model_version: ModelVersion | None = None,
    status: str = Case.Status.PREDICTED,
) -> Case:
    """A case waiting for its first read: one image per probability (None: no prediction)."""
    kwargs = {"created_by": created_by} if created_by is not None else {}
    case = factories.CaseFactory(body_part=body_part, priority=priority, status=status, **kwargs)
    version = model_version or active_model_version()
    for position, probability in enumerate(probabilities):
        image = factories.XrayImageFactory(case=case, position=position)
        if probability is None:
            continue
        label = Label.FRACTURED if probability >= threshold else Label.NOT_FRACTURED
        factories.PredictionFactory(
            image=image,
            model_version=version,
            status=Prediction.Status.DONE,
            probability=probability,
            label=label,
            labels={"balanced": label},
        )
    return case
