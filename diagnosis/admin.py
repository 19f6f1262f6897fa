"""Django admin: every model registered; history (audit, predictions, reviews) is read-only."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from diagnosis import models


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Case)
class CaseAdmin(ReadOnlyAdmin):
    list_display = ("uuid", "patient_ref", "body_part", "status", "created_by", "created_at")
    list_filter = ("status", "body_part", "source")
    search_fields = ("uuid", "patient_ref")
    list_select_related = ("created_by",)


@admin.register(models.XrayImage)
class XrayImageAdmin(ReadOnlyAdmin):
    list_display = ("pk", "case", "source_format", "width", "height", "created_at")
    list_select_related = ("case",)
    exclude = ("dicom_metadata",)


@admin.register(models.Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("pk", "image", "model_version", "status", "probability", "label", "created_at")
    list_filter = ("status", "model_version")
    list_select_related = ("image", "model_version")


@admin.register(models.Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "image",
        "reviewer",
        "read_number",
        "decision",
        "final_label",
        "created_at",
    )
    list_filter = ("decision", "final_label", "read_number")
    list_select_related = ("image", "reviewer")


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "architecture", "status", "promoted_at", "created_at")
    list_filter = ("status",)
    readonly_fields = (
        "version",
        "artifact_dir",
        "sha256",
        "architecture",
        "input_spec",
        "thresholds",
        "metrics",
        "plots",
        "card",
        "status",
        "training_run",
        "promoted_by",
        "promoted_at",
        "temperature",
        "gradcam_layer",
        "default_operating_point",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # models are registered by `manage.py register_model` or a training run

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("version", "reviews_included", "created_by", "created_at")


@admin.register(models.TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ("pk", "trigger", "status", "triggered_by", "result_version", "created_at")
    list_filter = ("status", "trigger")


@admin.register(models.ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "is_active", "webhook_url", "created_at")
    exclude = ("webhook_secret",)


@admin.register(models.ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "client", "scopes", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = ("prefix", "token_hash", "last_used_at", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued on the token page so the secret is shown once


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("pk", "client", "event", "status", "attempts", "last_status_code", "created_at")
    list_filter = ("status", "event")


@admin.register(models.Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("user", "message", "read_at", "created_at")


@admin.register(models.AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "actor_username",
        "action",
        "object_type",
        "object_id",
        "outcome",
        "ip",
    )
    list_filter = ("action", "outcome")
    search_fields = ("actor_username", "object_id", "action")
