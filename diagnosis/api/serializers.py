"""Input and output serializers. Inputs only validate; outputs only render. Nothing here saves."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from diagnosis.models import (
    PATIENT_REF_VALIDATOR,
    BodyPart,
    BoxOrigin,
    Case,
    Label,
    ModelVersion,
    Prediction,
    Review,
    XrayImage,
)
from diagnosis.selectors.api import CASE_LIST_COLUMNS, CaseDetail, ImageDetail
from diagnosis.selectors.models import card_localises
from diagnosis.selectors.predictions import prediction_candidates, prediction_row_current
from diagnosis.selectors.reviews import case_review_stage
from diagnosis.services.reviews import MAX_BOXES


def _iso(value: Any, tz: tzinfo | None = None) -> str | None:
    """What DRF's DateTimeField renders (ISO 8601 in the current time zone, UTC as "Z"), cheaper.
    `tz`: the current time zone when the caller has it (`_tz`); looking it up costs more than
    the conversion (a list page renders 50 timestamps)."""
    if value is None:
        return None
    text = value.astimezone(tz or timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _tz(context: dict[str, Any]) -> tzinfo:
    """The current time zone, looked up once per serialisation."""
    tz = context.get("_tz")
    if tz is None:
        tz = context["_tz"] = timezone.get_current_timezone()
    return tz


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
    # Optional without a schema `default` (generated TypeScript types would make them required);
    # the view supplies "" and False.
    clinical_question = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    urgent = serializers.BooleanField(required=False)
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

    def to_representation(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        # Lists render many rows: build them directly from the selector's values (the fields
        # above describe the schema).
        return case_summary_data(instance, self.context)


def case_summary_data(row: Mapping[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A case list row from `api_case_list`'s values (the detail adds to the same fields)."""
    tz = _tz(context)
    return {
        "id": str(row["uuid"]),
        "url": case_url(context, row["uuid"]),
        "patient_ref": row["patient_ref"],
        "body_part": row["body_part"],
        "status": row["status"],
        "source": row["source"],
        "urgent": row["urgent"],
        "final_label": row["final_label"] or None,
        "image_count": row["image_count"],
        "created_at": _iso(row["created_at"], tz),
        "updated_at": _iso(row["updated_at"], tz),
    }


def _image_url_templates(context: dict[str, Any], case_uuid: Any) -> tuple[str, str]:
    """The case's image file and heat-map URLs with an image id slot, reversed once."""
    templates = context.get("_image_url_templates")
    if templates is None:
        kwargs = {"uuid": case_uuid, "image_id": 0}
        templates = context["_image_url_templates"] = (
            _absolute(context, reverse("api:case-image-file", kwargs=kwargs)),
            _absolute(context, reverse("api:case-image-heatmap", kwargs=kwargs)),
        )
    return templates


def _image_url(template: str, image_id: int) -> str:
    head, _, tail = template.rpartition("/images/0/")
    return f"{head}/images/{image_id}/{tail}"


def prediction_data(
    prediction: Mapping[str, Any],
    context: dict[str, Any],
    case_uuid: Any,
    image: ImageDetail,
) -> dict:
    """PredictionOutputSerializer's fields from a prediction row of `api_case_detail`."""
    image_id = image.id
    threshold = (prediction["thresholds"] or {}).get(prediction["operating_point"])
    heatmap_url = None
    if prediction["status"] == Prediction.Status.DONE and prediction["heatmap"]:
        heatmap_url = _image_url(_image_url_templates(context, case_uuid)[1], image_id)
    return {
        "status": prediction["status"],
        "probability": prediction["probability"],
        "label": prediction["label"] or None,
        "operating_point": prediction["operating_point"],
        "threshold": float(threshold) if threshold is not None else None,
        "labels": {str(k): str(v) for k, v in (prediction["labels"] or {}).items()},
        "model_version": prediction["version"],
        "heatmap_url": heatmap_url,
        "localises": card_localises({"localisation": prediction["localisation"]}),
        "candidates": prediction_candidates(
            prediction["candidates"] if prediction["status"] == Prediction.Status.DONE else [],
            width=image.width,
            height=image.height,
        ),
        "error": prediction["error"],
        "finished_at": _iso(prediction["finished_at"], _tz(context)),
    }


def box_data(box: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "x": box["x"],
        "y": box["y"],
        "w": box["w"],
        "h": box["h"],
        "origin": box.get("origin") or BoxOrigin.READER.value,
    }


def read_data(read: Mapping[str, Any], tz: tzinfo | None = None) -> dict[str, Any]:
    return {
        "read_number": read["read_number"],
        "decision": read["decision"],
        "final_label": read["final_label"],
        "boxes": [box_data(box) for box in read.get("boxes") or []],
        "reviewer": read["reviewer_name"],
        "created_at": _iso(read["created_at"], tz),
    }


def image_data(image: ImageDetail, context: dict[str, Any], case_uuid: Any) -> dict[str, Any]:
    prediction = prediction_row_current(image.predictions)
    return {
        "id": image.id,
        "position": image.position,
        "width": image.width,
        "height": image.height,
        "source_format": image.source_format,
        "file_url": _image_url(_image_url_templates(context, case_uuid)[0], image.id),
        "prediction": None
        if prediction is None
        else prediction_data(prediction, context, case_uuid, image),
        "reads": [read_data(read, _tz(context)) for read in image.reads],
    }


class CandidateOutputSerializer(serializers.Serializer):
    """A suspected fracture site marked by the model."""

    x0 = serializers.FloatField(help_text="Left edge, in pixels of the image (0 = left border).")
    y0 = serializers.FloatField(help_text="Top edge, in pixels of the image (0 = top border).")
    x1 = serializers.FloatField(help_text="Right edge, in pixels of the image (x1 > x0).")
    y1 = serializers.FloatField(help_text="Bottom edge, in pixels of the image (y1 > y0).")
    score = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        help_text=(
            "The model's score for a fracture at this site, 0 to 1 (the strength of its mark, "
            "not a calibrated probability: that is the prediction's `probability`)."
        ),
    )


CANDIDATES_HELP = (
    "Suspected fracture sites marked by the model, best first (at most the model's limit, above "
    "the score cut chosen on validation). Boxes are in pixels of the canonical image that "
    "`file_url` serves, whose size is the image's `width` x `height` (origin top-left, x to the "
    "right, y down): divide by them for fractions. Empty when the model found no site, when the "
    "prediction is not done, and always for a version that does not localise (`localises` false)."
)


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
    localises = serializers.BooleanField(
        help_text=(
            "Whether the model version marks suspected fracture sites (`candidates`); false for "
            "a classifier-only version, whose `candidates` is always empty."
        )
    )
    candidates = CandidateOutputSerializer(many=True, help_text=CANDIDATES_HELP)
    error = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)


class BoxOutputSerializer(serializers.Serializer):
    """Documents `box_data`: a reader's fracture box in fractions of the canonical image."""

    x = serializers.FloatField(help_text="Left edge, fraction of the image width (0 = left).")
    y = serializers.FloatField(help_text="Top edge, fraction of the image height (0 = top).")
    w = serializers.FloatField(help_text="Width, fraction of the image width.")
    h = serializers.FloatField(help_text="Height, fraction of the image height.")
    origin = serializers.ChoiceField(
        choices=BoxOrigin.choices,
        help_text="reader: drawn by the reader; model_accepted: a model candidate accepted as "
        "is; model_moved: a model candidate the reader moved or resized.",
    )


class ReadOutputSerializer(serializers.Serializer):
    """Documents `read_data`."""

    read_number = serializers.ChoiceField(choices=Review.Read.choices)
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    final_label = serializers.ChoiceField(choices=Label.choices)
    boxes = BoxOutputSerializer(
        many=True, help_text="The reader's fracture boxes (empty on a 'No fracture' read)."
    )
    reviewer = serializers.CharField()
    created_at = serializers.DateTimeField()


class ImageOutputSerializer(serializers.Serializer):
    """Documents `image_data`."""

    id = serializers.IntegerField()
    position = serializers.IntegerField()
    width = serializers.IntegerField(
        help_text="Width of the canonical image in pixels (the frame of `candidates`)."
    )
    height = serializers.IntegerField(
        help_text="Height of the canonical image in pixels (the frame of `candidates`)."
    )
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

    def to_representation(self, instance: CaseDetail) -> dict[str, Any]:
        # Built directly from `api_case_detail`, like the list rows (the fields above describe
        # the schema; a test checks that both agree).
        case, images = instance.case, instance.images
        row = {name: getattr(case, name) for name in CASE_LIST_COLUMNS}
        data = case_summary_data({**row, "image_count": len(images)}, self.context)
        tz = _tz(self.context)
        data.update(
            {
                "clinical_question": case.clinical_question,
                "status_reason": case.status_reason,
                "queued_at": _iso(case.queued_at, tz),
                "predicted_at": _iso(case.predicted_at, tz),
                "reviewed_at": _iso(case.reviewed_at, tz),
                "model_version": self._model_version(images),
                "review": self._review(case, images, tz),
                "images": [image_data(image, self.context, case.uuid) for image in images],
            }
        )
        return data

    @staticmethod
    def _model_version(images: list[ImageDetail]) -> str | None:
        for image in images:
            prediction = prediction_row_current(image.predictions)
            if prediction is not None:
                return prediction["version"]
        return None

    @staticmethod
    def _review(case: Case, images: list[ImageDetail], tz: tzinfo) -> dict[str, Any]:
        reads = [read for image in images for read in image.reads]
        last = max(reads, key=lambda r: (r["created_at"], r["id"]), default=None)
        if case.status == Case.Status.REVIEWED:
            status = "reviewed"
        elif case.status == Case.Status.IN_REVIEW:
            status = "in_review"
        else:
            status = "pending"
        return {
            "status": status,
            "final_label": case.final_label or None,
            # Who reviewed, once the case is final (the reads the user may see are its reads).
            "reviewed_by": last["reviewer_name"]
            if last is not None and case.status == Case.Status.REVIEWED
            else None,
            "reviewed_at": _iso(case.reviewed_at, tz),
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


class BoxInputSerializer(RegionInputSerializer):
    # No `default`: the schema would then show it as sent by clients (see ReadInputSerializer).
    origin = serializers.ChoiceField(
        choices=BoxOrigin.choices,
        required=False,
        help_text="Where the box came from; omitted: drawn by the reader.",
    )


class ReadInputSerializer(serializers.Serializer):
    image_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    # Optional fields carry no `default` in the schema: generated clients would then send or
    # require it (and "" is no member of the label enum); ImageRead supplies the defaults.
    final_label = serializers.ChoiceField(
        choices=Label.choices,
        required=False,
        allow_blank=True,
        help_text="Optional: implied by the decision when the image has a model result.",
    )
    boxes = BoxInputSerializer(
        many=True,
        required=False,
        max_length=MAX_BOXES,
        help_text="Fracture boxes in fractions of the canonical image; only on a 'Fracture' read.",
    )
    region = RegionInputSerializer(
        required=False,
        allow_null=True,
        help_text="Deprecated: one box drawn by the reader (the form before `boxes`). Give "
        "`boxes` or `region`, not both.",
    )
    comment = serializers.CharField(max_length=4000, required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("boxes") and attrs.get("region"):
            raise serializers.ValidationError("Give either boxes or a region, not both.")
        return attrs


class ReviewSubmitInputSerializer(serializers.Serializer):
    reads = ReadInputSerializer(many=True, min_length=1, max_length=100)
