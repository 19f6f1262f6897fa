"""Fracture Portal data model.

Case -> XrayImage -> Prediction (one per image and model version) and Review (reads by radiologists).
ModelVersion is the model registry; DatasetSnapshot and TrainingRun close the relabel/retrain loop;
ApiClient/ApiToken/WebhookDelivery serve integrators; AuditEvent is append-only.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

PATIENT_REF_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    "Use a pseudonymous reference: 1-64 letters, digits, '.', '_' or '-' (never a name).",
    code="invalid_patient_ref",
)


class Label(models.TextChoices):
    FRACTURED = "fractured", "Fracture"
    NOT_FRACTURED = "not_fractured", "No fracture"


class BodyPart(models.TextChoices):
    # Regions follow the training data's flags so per-region metrics line up with the model card.
    HAND = "hand", "Upper limb (hand, wrist, forearm, elbow, arm)"
    LEG = "leg", "Lower limb (foot, ankle, knee, leg)"
    HIP = "hip", "Hip / pelvis"
    SHOULDER = "shoulder", "Shoulder"
    OTHER = "other", "Other / several regions"


class Case(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        QUEUED = "queued", "Queued"
        PREDICTING = "predicting", "Predicting"
        PREDICTED = "predicted", "Predicted"
        IN_REVIEW = "in_review", "In review"
        REVIEWED = "reviewed", "Reviewed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Source(models.TextChoices):
        WEB = "web", "Web upload"
        API = "api", "API"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient_ref = models.CharField(max_length=64, validators=[PATIENT_REF_VALIDATOR])
    body_part = models.CharField(max_length=16, choices=BodyPart.choices)
    clinical_question = models.TextField(max_length=2000, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cases"
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    api_client = models.ForeignKey(
        "ApiClient", null=True, blank=True, on_delete=models.SET_NULL, related_name="cases"
    )
    idempotency_key = models.CharField(max_length=128, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    status_reason = models.CharField(max_length=500, blank=True, default="")
    # Higher runs first in the review queue; recomputed when predictions land.
    priority = models.FloatField(default=0.0)
    urgent = models.BooleanField(default=False)
    # Review workflow
    final_label = models.CharField(max_length=16, choices=Label.choices, blank=True, default="")
    needs_second_read = models.BooleanField(default=False)
    needs_adjudication = models.BooleanField(default=False)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="claimed_cases",
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    # Who made the first and second read (denormalised from Review, so the queue can exclude a
    # case's earlier readers with a column comparison instead of a join over every review).
    first_reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    second_reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    predicted_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("view_all_cases", "Can see every case"),
            ("review_case", "Can review cases"),
            ("adjudicate_case", "Can adjudicate disagreeing reads"),
            ("manage_models", "Can manage models, datasets and retraining"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="case_unique_idempotency_key_per_user",
            ),
        ]
        indexes = [
            # Readers' and admins' case list: newest first over every case (case_list's ordering).
            models.Index(fields=["-created_at", "-id"], name="case_recent"),
            models.Index(fields=["created_by", "-created_at"], name="case_owner_recent"),
            models.Index(fields=["status", "-created_at"], name="case_status_recent"),
            models.Index(
                fields=["-priority", "created_at"],
                name="case_review_queue",
                condition=Q(status__in=["predicted", "in_review"]),
            ),
            models.Index(fields=["status", "queued_at"], name="case_status_queued_at"),
            # Review queue counts: an index-only scan over the waiting cases (PostgreSQL INCLUDE).
            models.Index(
                fields=["status", "needs_second_read", "needs_adjudication", "body_part"],
                include=[
                    "id",
                    "claimed_by",
                    "claim_expires_at",
                    "first_reader",
                    "second_reader",
                ],
                name="case_review_queue_counts",
                condition=Q(status__in=["predicted", "in_review"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Case {self.uuid} ({self.get_status_display()})"


class XrayImage(models.Model):
    class SourceFormat(models.TextChoices):
        PNG = "png", "PNG"
        JPEG = "jpeg", "JPEG"
        DICOM = "dicom", "DICOM"
        OTHER = "other", "Other"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveSmallIntegerField(default=0)
    # Canonical re-encoded 8-bit grayscale PNG under a generated name; never served inline.
    file = models.FileField(upload_to="images/%Y/%m/", max_length=255)
    original_file = models.FileField(upload_to="originals/%Y/%m/", max_length=255, blank=True)
    # Grayscale DICOM and 16-bit PNG: the exact values as a 16-bit grayscale PNG (same orientation
    # as `file`) for windowing in the viewer; the model never reads it. `depth_params` says how to
    # read it: value = sample * slope + intercept; min, max; the file's window [centre, width] or
    # null; invert (MONOCHROME1); exact (false: a wider span quantised to 16 bits).
    depth_file = models.FileField(upload_to="depth/%Y/%m/", max_length=255, blank=True)
    depth_params = models.JSONField(default=dict, blank=True)
    original_name = models.CharField(
        max_length=255, blank=True, default=""
    )  # sanitised, display only
    sha256 = models.CharField(max_length=64)  # of the uploaded bytes
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    source_format = models.CharField(max_length=8, choices=SourceFormat.choices)
    source_bit_depth = models.PositiveSmallIntegerField(default=8)
    dicom_metadata = models.JSONField(default=dict, blank=True)  # de-identified tags only
    inference_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["case", "position"], name="image_unique_position"),
        ]
        indexes = [models.Index(fields=["sha256"], name="image_sha256")]

    def __str__(self) -> str:
        return f"Image {self.pk} of case {self.case_id}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"
        REJECTED = "rejected", "Rejected"

    version = models.CharField(max_length=64, unique=True)
    artifact_dir = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    architecture = models.CharField(max_length=64)
    input_spec = models.JSONField(default=dict)
    # {"balanced": 0.41, "high_sensitivity": 0.18}: probability thresholds fitted on validation.
    thresholds = models.JSONField(default=dict)
    default_operating_point = models.CharField(max_length=32, default="balanced")
    temperature = models.FloatField(default=1.0)
    gradcam_layer = models.CharField(max_length=128, blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True)  # frozen-test-set metrics with CIs
    plots = models.JSONField(default=dict, blank=True)  # name -> media path of PNGs
    card = models.JSONField(default=dict, blank=True)  # the artifact's card.json as registered
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    training_run = models.ForeignKey(
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="model_version_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"


class Prediction(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    image = models.ForeignKey(XrayImage, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="predictions"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    probability = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    # Label at the version's default operating point, and at each one: {"balanced": "fractured", ...}
    label = models.CharField(max_length=16, choices=Label.choices, blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    heatmap = models.FileField(upload_to="heatmaps/", max_length=255, blank=True)
    # Suspected fracture sites from a model that localises, best first: [{"x0", "y0", "x1", "y1",
    # "score"}] in pixels of the canonical image (origin top-left); empty for a classifier.
    candidates = models.JSONField(default=list, blank=True)
    timings = models.JSONField(
        default=dict, blank=True
    )  # milliseconds: preprocess, predict, gradcam
    error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="prediction_unique_image_version"
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="prediction_status")]

    def __str__(self) -> str:
        return f"Prediction {self.pk} ({self.status})"


class BoxOrigin(models.TextChoices):
    """Where a reader's fracture box came from."""

    READER = "reader", "Drawn by the reader"
    MODEL_ACCEPTED = "model_accepted", "Model candidate, accepted as is"
    MODEL_MOVED = "model_moved", "Model candidate, moved or resized by the reader"


class Review(models.Model):
    class Decision(models.TextChoices):
        CONFIRM = "confirm", "Confirm"
        CORRECT = "correct", "Correct"

    class Read(models.IntegerChoices):
        FIRST = 1, "First read"
        SECOND = 2, "Second read"
        ADJUDICATION = 3, "Adjudication"

    image = models.ForeignKey(XrayImage, on_delete=models.CASCADE, related_name="reviews")
    prediction = models.ForeignKey(
        Prediction, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    read_number = models.PositiveSmallIntegerField(choices=Read.choices, default=Read.FIRST)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    final_label = models.CharField(max_length=16, choices=Label.choices)
    # Fracture boxes as fractions of the canonical image, in the reader's order:
    # [{"x": .., "y": .., "w": .., "h": .., "origin": BoxOrigin}]; empty on a "No fracture" read.
    boxes = models.JSONField(default=list, blank=True)
    comment = models.TextField(max_length=4000, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image_id", "read_number"]
        constraints = [
            models.UniqueConstraint(fields=["image", "read_number"], name="review_unique_read"),
        ]
        indexes = [models.Index(fields=["reviewer", "-created_at"], name="review_reviewer_recent")]

    def __str__(self) -> str:
        return f"Read {self.read_number} of image {self.image_id}: {self.final_label}"


class ReviewDraft(models.Model):
    """A reader's unsaved work on a claimed case (decisions, boxes, comments per image), kept on
    the server so leaving the review screen loses nothing; deleted when the read is saved or the
    claim released."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    read_number = models.PositiveSmallIntegerField(choices=Review.Read.choices)
    # {"<image id>": {"decision": "confirm", "final_label": "", "choice": "", "boxes": [...],
    #  "comment": "..."}}
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "reviewer", "read_number"], name="review_draft_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"Draft of read {self.read_number} of case {self.case_id}"


class DatasetSnapshot(models.Model):
    version = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_dataset = models.CharField(max_length=500, blank=True, default="")
    # Frozen manifest: list of {"key", "path", "label", "split", "group", "body_part", "source"}.
    manifest = models.FileField(upload_to="snapshots/", max_length=255)
    manifest_sha256 = models.CharField(max_length=64)
    counts = models.JSONField(default=dict)  # {"train": {"fractured": n, ...}, ...}
    frozen_test_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviews_included = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Snapshot {self.version}"


class TrainingRun(models.Model):
    class Trigger(models.TextChoices):
        MANUAL = "manual", "Manual"
        SCHEDULED = "scheduled", "Scheduled"
        API = "api", "API"
        COMMAND = "command", "Management command"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.JSONField(
        default=dict, blank=True
    )  # {"epoch": 3, "epochs": 10, "val_auroc": ..}
    log = models.TextField(blank=True, default="")
    error = models.CharField(max_length=1000, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision = models.JSONField(
        default=dict, blank=True
    )  # the promotion rule's verdict and reasons
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One run at a time: at most one row may be queued or running.
            models.UniqueConstraint(
                models.Value(1),
                condition=Q(status__in=["queued", "running"]),
                name="training_run_one_in_flight",
            ),
        ]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"


class ApiClient(models.Model):
    """A telemedicine app acting for one account; owns tokens and a webhook."""

    name = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_clients"
    )
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(max_length=128, blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Write"
        REVIEW = "review", "Review"
        ADMIN = "admin", "Admin"

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=12, unique=True)  # shown to users to tell tokens apart
    token_hash = models.CharField(
        max_length=64, unique=True
    )  # sha256 of the secret; never the secret
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.client})"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="deliveries")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=32)  # case.predicted, case.reviewed
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "case", "event"], name="webhook_unique_event"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.client} ({self.status})"


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    case = models.ForeignKey(
        Case, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    message = models.CharField(max_length=300)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self) -> str:
        return self.message


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutableError("Audit events cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("Audit events cannot be deleted.")


class AuditImmutableError(Exception):
    pass


class AuditEvent(models.Model):
    """Append-only. The application cannot update or delete rows; PostgreSQL enforces it too."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        DENIED = "denied", "Denied"
        FAILURE = "failure", "Failure"

    # No foreign keys: a user's deletion must not rewrite history.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(
        max_length=64
    )  # e.g. case.view, case.create, auth.login, auth.login_failed
    object_type = models.CharField(max_length=64, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.SUCCESS)
    extra = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="audit_recent"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
            models.Index(fields=["actor_id", "-created_at"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AuditImmutableError("Audit events cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("Audit events cannot be deleted.")
