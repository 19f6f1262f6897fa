"""Django admin: every model registered; history (audit, predictions, reviews) is read-only."""

from typing import Any

from django.contrib import admin
from django.contrib.admin import widgets as admin_widgets
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import models as db_models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from diagnosis import models
from diagnosis.services.accounts import login_lock_clear, login_locked_usernames
from diagnosis.services.audit import audit_record

User = get_user_model()


class LabelledSplitDateTime(admin_widgets.AdminSplitDateTime):
    """The admin's date and time inputs, each with an accessible name ("Last login, date"): the
    field's one <label> cannot point at two inputs."""

    def __init__(self, label: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.label = label

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        for sub, part in zip(context["widget"]["subwidgets"], ("date", "time"), strict=False):
            sub["attrs"]["aria-label"] = f"{self.label}, {part}"
        return context


class PortalModelAdmin(admin.ModelAdmin):
    """Every admin page of the portal: labelled date/time inputs (WCAG 1.3.1, 4.1.2)."""

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, db_models.DateTimeField) and not db_field.choices:
            kwargs["widget"] = LabelledSplitDateTime(str(db_field.verbose_name).capitalize())
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class ReadOnlyAdmin(PortalModelAdmin):
    """History: nobody adds, changes or deletes through the admin, superusers included."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

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

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        case = self.get_object(request, object_id)
        if case is not None and response.status_code == 200:
            audit_record(action="case.view", request=request, obj=case, via="admin")
        return response


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


@admin.register(models.ReviewDraft)
class ReviewDraftAdmin(ReadOnlyAdmin):
    """Work in progress of readers holding a claim (read-only: the review screen owns it)."""

    list_display = ("pk", "case", "reviewer", "read_number", "updated_at")
    list_select_related = ("case", "reviewer")


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
class ModelVersionAdmin(PortalModelAdmin):
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
class ApiClientAdmin(PortalModelAdmin):
    list_display = ("name", "user", "is_active", "webhook_url", "created_at")
    exclude = ("webhook_secret",)


@admin.register(models.ApiToken)
class ApiTokenAdmin(PortalModelAdmin):
    list_display = ("prefix", "client", "scopes", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "client__name", "client__user__username")
    readonly_fields = (
        "client",
        "name",
        "prefix",
        "token_hash",
        "scopes",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_at",
    )
    actions = ("revoke_tokens",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued on the token page so the secret is shown once

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[models.ApiToken]) -> None:
        from diagnosis.services.tokens import api_token_revoke

        for token in queryset.select_related("client"):
            api_token_revoke(token=token, user=request.user, request=request)
        self.message_user(request, f"{queryset.count()} token(s) revoked.")


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("pk", "client", "event", "status", "attempts", "last_status_code", "created_at")
    list_filter = ("status", "event")


@admin.register(models.Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("user", "message", "read_at", "created_at")


class RefusalFilter(admin.SimpleListFilter):
    """Refused accesses: every denied row (refused requests, blocked sign-ins, refused review
    actions), or only the aggregated bursts and floods of refused requests."""

    title = "refusals"
    parameter_name = "refusals"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("all", "All refusals"), ("bursts", "Bursts (10 or more)"), ("floods", "Floods")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        denied = queryset.filter(outcome=models.AuditEvent.Outcome.DENIED)
        if self.value() == "all":
            return denied
        if self.value() == "bursts":
            return denied.filter(action="access.denied", extra__count__gte=10)
        if self.value() == "floods":
            return denied.filter(action="access.denied_flood")
        return queryset


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
        "refusal",
    )
    list_filter = (RefusalFilter, "action", "outcome")
    search_fields = ("actor_username", "object_id", "action", "ip")

    @admin.display(description="Refusal (route, reason, count)")
    def refusal(self, obj: models.AuditEvent) -> str:
        extra = obj.extra or {}
        if "route" not in extra:
            return ""
        token = extra.get("token_id") or extra.get("token_prefix")
        parts = [extra["route"], extra.get("reason", ""), f"x{extra.get('count', 1)}"]
        if token:
            parts.append(f"token {token}")
        return " ".join(str(part) for part in parts)


# --- Users: roles shown and filterable; superuser flags and raw permissions stay with superusers ---
admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(PortalModelAdmin, UserAdmin):
    list_display = (
        "username", "email", "roles", "is_active", "is_staff", "last_login", "signin_locked"
    )  # fmt: skip
    list_filter = ("groups", "is_active", "is_staff", "is_superuser")
    # Plain labelled multi-selects: the two-pane widget's script adds ARIA that is not allowed.
    filter_horizontal = ()
    actions = ["unlock_signin"]

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """Mark the page's accounts locked or not with one cache lookup for the whole page (on
        the row objects: this admin instance is shared by every request)."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # evaluates (and caches) the page's queryset
        locked = login_locked_usernames(usernames=[user.get_username() for user in rows])
        for user in rows:
            user.signin_locked_now = user.get_username() in locked
        return changelist

    @admin.display(description="Sign-in locked", boolean=True)
    def signin_locked(self, obj: Any) -> bool:
        if not hasattr(obj, "signin_locked_now"):
            obj.signin_locked_now = bool(login_locked_usernames(usernames=[obj.get_username()]))
        return obj.signin_locked_now

    @admin.action(permissions=["change"], description="Unlock sign-in (clear failed-login lockout)")
    def unlock_signin(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        users = list(queryset)
        locked = login_lock_clear(users=users, actor=request.user, request=request)
        self.message_user(
            request,
            f"Cleared the sign-in lockout of {len(users)} account(s); {locked} were locked.",
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Roles")
    def roles(self, obj: Any) -> str:
        return ", ".join(sorted(g.name for g in obj.groups.all())) or "-"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # no password resets of superusers by lesser accounts
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            # An admin-role user manages accounts and roles but cannot mint superusers.
            readonly += ("is_superuser", "user_permissions")
        return readonly
