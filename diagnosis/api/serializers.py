"""Input and output serializers. Inputs only validate; outputs only render. Nothing here saves."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from diagnosis.models import (
    PATIENT_REF_VALIDATOR,
    BodyPart,
    Case,
    Label,
    ModelVersion,
    Prediction,
    Review,
    XrayImage,
)
from diagnosis.selectors.api import prediction_pick
from diagnosis.selectors.reviews import case_review_stage


def _iso(value: Any) -> str | None:
    """What DRF's DateTimeField renders (ISO 8601 in the current time zone, UTC as "Z"), cheaper."""
    if value is None:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _absolute(context: dict[str, Any], url: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(url) if request is not None else url


_UUID_SLOT = "00000000-0000-0000-0000-000000000000"


def case_url(context: dict[str, Any], case_uuid: Any) -> str:
    """The case's API URL; the reversed template is computed once per serialisation."""
    template = context.get("_case_url_template")
    if template is None:
        template = _absolute(context, reverse("api:case-detail", kwargs={"uuid": _UUID_SLOT}))
        context["_case_url_template"] = template
    return template.replace(_UUID_SLOT, str(case_uuid))


# --- Cases: input ------------------------------------------------------------------------------------


class CaseCreateInputSerializer(serializers.Serializer):
    patient_ref = serializers.CharField(
        max_length=64,
        validators=[PATIENT_REF_VALIDATOR],
        help_text="Pseudonymous patient reference (never a name): 1-64 letters, digits, . _ -",
    )
    body_part = serializers.ChoiceField(choices=BodyPart.choices)
    clinical_question = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default=""
    )
    urgent = serializers.BooleanField(required=False, default=False)
    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        min_length=1,
        max_length=settings.DATA_UPLOAD_MAX_NUMBER_FILES,
        help_text="One or more radiographs (PNG, JPEG or DICOM), each as an `images` part.",
    )


class CaseListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Case.Status.choices, required=False)
    body_part = serializers.ChoiceField(choices=BodyPart.choices, required=False)
    created_after = serializers.DateTimeField(
        required=False, help_text="Only cases created at or after this time (ISO 8601)."
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="Only cases created before this time (ISO 8601)."
    )


# --- Cases: output -----------------------------------------------------------------------------------


class CaseCreatedOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    status = serializers.ChoiceField(choices=Case.Status.choices)
    status_url = serializers.SerializerMethodField()
    replayed = serializers.SerializerMethodField(
        help_text="True when an earlier request with the same Idempotency-Key created this case."
    )

    def get_status_url(self, case: Case) -> str:
        return case_url(self.context, case.uuid)

    def get_replayed(self, case: Case) -> bool:
        return bool(self.context.get("replayed", False))


class CaseListOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    url = serializers.SerializerMethodField()
    patient_ref = serializers.CharField()
    body_part = serializers.ChoiceField(choices=BodyPart.choices)
    status = serializers.ChoiceField(choices=Case.Status.choices)
    source = serializers.ChoiceField(choices=Case.Source.choices)
    urgent = serializers.BooleanField()
    final_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    image_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_url(self, case: Case) -> str:
        return case_url(self.context, case.uuid)

    def to_representation(self, instance: Case) -> dict[str, Any]:
        # Lists render many rows: build them directly (the fields above describe the schema).
        return {
            "id": str(instance.uuid),
            "url": case_url(self.context, instance.uuid),
            "patient_ref": instance.patient_ref,
            "body_part": instance.body_part,
            "status": instance.status,
            "source": instance.source,
            "urgent": instance.urgent,
            "final_label": instance.final_label or None,
            "image_count": self._image_count(instance),
            "created_at": _iso(instance.created_at),
            "updated_at": _iso(instance.updated_at),
        }

    def _image_count(self, instance: Case) -> int:
        return instance.image_count


def prediction_data(prediction: Prediction, context: dict[str, Any], case_uuid: Any) -> dict:
    """PredictionOutputSerializer's fields, rendered directly (a case page renders several)."""
    version = prediction.model_version
    threshold = (version.thresholds or {}).get(version.default_operating_point)
    heatmap_url = None
    if prediction.status == Prediction.Status.DONE and prediction.heatmap:
        heatmap_url = _absolute(
            context,
            reverse(
                "api:case-image-heatmap",
                kwargs={"uuid": case_uuid, "image_id": prediction.image_id},
            ),
        )
    return {
        "status": prediction.status,
        "probability": prediction.probability,
        "label": prediction.label or None,
        "operating_point": version.default_operating_point,
        "threshold": float(threshold) if threshold is not None else None,
        "labels": {str(k): str(v) for k, v in (prediction.labels or {}).items()},
        "model_version": version.version,
        "heatmap_url": heatmap_url,
        "error": prediction.error,
        "finished_at": _iso(prediction.finished_at),
    }


def read_data(review: Review) -> dict[str, Any]:
    return {
        "read_number": review.read_number,
        "decision": review.decision,
        "final_label": review.final_label,
        "reviewer": review.reviewer.username,
        "created_at": _iso(review.created_at),
    }


def image_data(image: XrayImage, context: dict[str, Any], case_uuid: Any) -> dict[str, Any]:
    prediction = prediction_pick(image.predictions.all())
    file_url = reverse("api:case-image-file", kwargs={"uuid": case_uuid, "image_id": image.pk})
    return {
        "id": image.pk,
        "position": image.position,
        "width": image.width,
        "height": image.height,
        "source_format": image.source_format,
        "file_url": _absolute(context, file_url),
        "prediction": None
        if prediction is None
        else prediction_data(prediction, context, case_uuid),
        "reads": [read_data(review) for review in image.reviews.all()],
    }


class PredictionOutputSerializer(serializers.Serializer):
    """Documents `prediction_data`."""

    status = serializers.ChoiceField(choices=Prediction.Status.choices)
    probability = serializers.FloatField(
        allow_null=True, help_text="Calibrated probability of a fracture."
    )
    label = serializers.ChoiceField(
        choices=Label.choices, allow_null=True, help_text="Label at the model's operating point."
    )
    operating_point = serializers.CharField()
    threshold = serializers.FloatField(allow_null=True)
    labels = serializers.DictField(
        child=serializers.CharField(), help_text="Label at each operating point."
    )
    model_version = serializers.CharField()
    heatmap_url = serializers.URLField(
        allow_null=True, help_text="Grad-CAM heat-map (RGBA PNG); localisation is approximate."
    )
    error = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ReadOutputSerializer(serializers.Serializer):
    """Documents `read_data`."""

    read_number = serializers.ChoiceField(choices=Review.Read.choices)
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    final_label = serializers.ChoiceField(choices=Label.choices)
    reviewer = serializers.CharField()
    created_at = serializers.DateTimeField()


class ImageOutputSerializer(serializers.Serializer):
    """Documents `image_data`."""

    id = serializers.IntegerField()
    position = serializers.IntegerField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    source_format = serializers.ChoiceField(choices=XrayImage.SourceFormat.choices)
    file_url = serializers.URLField()
    prediction = PredictionOutputSerializer(allow_null=True)
    reads = ReadOutputSerializer(many=True)


class CaseReviewOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[("pending", "Pending"), ("in_review", "In review"), ("reviewed", "Reviewed")]
    )
    final_label = serializers.ChoiceField(choices=Label.choices, allow_null=True)
    reviewed_by = serializers.CharField(allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)
    needs_second_read = serializers.BooleanField()
    needs_adjudication = serializers.BooleanField()


class CaseDetailOutputSerializer(CaseListOutputSerializer):
    clinical_question = serializers.CharField()
    status_reason = serializers.CharField()
    queued_at = serializers.DateTimeField(allow_null=True)
    predicted_at = serializers.DateTimeField(allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)
    model_version = serializers.CharField(allow_null=True)
    review = CaseReviewOutputSerializer()
    images = ImageOutputSerializer(many=True)

    def to_representation(self, instance: Case) -> dict[str, Any]:
        # Built directly, like the list rows (the fields above describe the schema; a test
        # checks that both agree).
        images = list(instance.images.all())
        data = super().to_representation(instance)
        data.update(
            {
                "clinical_question": instance.clinical_question,
                "status_reason": instance.status_reason,
                "queued_at": _iso(instance.queued_at),
                "predicted_at": _iso(instance.predicted_at),
                "reviewed_at": _iso(instance.reviewed_at),
                "model_version": self._model_version(images),
                "review": self._review(instance, images),
                "images": [image_data(image, self.context, instance.uuid) for image in images],
            }
        )
        return data

    def _image_count(self, instance: Case) -> int:
        return len(instance.images.all())

    @staticmethod
    def _model_version(images: list[XrayImage]) -> str | None:
        for image in images:
            prediction = prediction_pick(image.predictions.all())
            if prediction is not None:
                return prediction.model_version.version
        return None

    @staticmethod
    def _review(case: Case, images: list[XrayImage]) -> dict[str, Any]:
        reads = [read for image in images for read in image.reviews.all()]
        last = max(reads, key=lambda r: (r.created_at, r.pk), default=None)
        if case.status == Case.Status.REVIEWED:
            status = "reviewed"
        elif case.status == Case.Status.IN_REVIEW:
            status = "in_review"
        else:
            status = "pending"
        return {
            "status": status,
            "final_label": case.final_label or None,
            "reviewed_by": last.reviewer.username if last is not None else None,
            "reviewed_at": _iso(case.reviewed_at),
            "needs_second_read": case.needs_second_read,
            "needs_adjudication": case.needs_adjudication,
        }


# --- Model registry ----------------------------------------------------------------------------------


class ModelVersionOutputSerializer(serializers.Serializer):
    version = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    architecture = serializers.CharField()
    sha256 = serializers.CharField()
    input_spec = serializers.DictField(child=serializers.JSONField())
    thresholds = serializers.DictField(child=serializers.FloatField())
    default_operating_point = serializers.CharField()
    temperature = serializers.FloatField()
    metrics = serializers.DictField(child=serializers.JSONField())
    promoted_by = serializers.CharField(source="promoted_by.username", allow_null=True)
    promoted_at = serializers.DateTimeField(allow_null=True)
    notes = serializers.CharField()
    created_at = serializers.DateTimeField()

    def to_representation(self, instance: ModelVersion) -> dict[str, Any]:
        data = super().to_representation(instance)
        if instance.promoted_by_id is None:
            data["promoted_by"] = None
        return data


# --- Review -------------------------------------------------------------------------------------------


class ReviewQueueFilterSerializer(serializers.Serializer):
    body_part = serializers.ChoiceField(choices=BodyPart.choices, required=False)
    stage = serializers.ChoiceField(
        choices=Review.Read.choices,
        required=False,
        help_text="1: first read, 2: second read, 3: adjudication.",
    )


class ReviewQueueItemOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    url = serializers.SerializerMethodField()
    body_part = serializers.ChoiceField(choices=BodyPart.choices)
    status = serializers.ChoiceField(choices=Case.Status.choices)
    stage = serializers.SerializerMethodField(help_text="The read the case waits for (1, 2, 3).")
    urgent = serializers.BooleanField()
    priority = serializers.FloatField()
    top_probability = serializers.FloatField(allow_null=True)
    top_model_version = serializers.CharField(allow_null=True)
    image_count = serializers.IntegerField(allow_null=True)
    claimed_by = serializers.CharField(source="claimed_by.username", allow_null=True)
    claim_expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_url(self, case: Case) -> str:
        return case_url(self.context, case.uuid)

    def get_stage(self, case: Case) -> int | None:
        return case_review_stage(case)


class ClaimOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    status = serializers.ChoiceField(choices=Case.Status.choices)
    stage = serializers.SerializerMethodField()
    claimed_by = serializers.CharField(source="claimed_by.username", allow_null=True)
    claim_expires_at = serializers.DateTimeField(allow_null=True)

    def get_stage(self, case: Case) -> int | None:
        return case_review_stage(case)


class RegionInputSerializer(serializers.Serializer):
    x = serializers.FloatField(min_value=0.0, max_value=1.0)
    y = serializers.FloatField(min_value=0.0, max_value=1.0)
    w = serializers.FloatField(min_value=0.0, max_value=1.0)
    h = serializers.FloatField(min_value=0.0, max_value=1.0)


class ReadInputSerializer(serializers.Serializer):
    image_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    final_label = serializers.ChoiceField(
        choices=Label.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="Optional: implied by the decision when the image has a model result.",
    )
    region = RegionInputSerializer(required=False, allow_null=True, default=None)
    comment = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")


class ReviewSubmitInputSerializer(serializers.Serializer):
    reads = ReadInputSerializer(many=True, min_length=1, max_length=100)
