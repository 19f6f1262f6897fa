"""The model registry pages (admins: `diagnosis.manage_models`): versions side by side, training
runs with live progress, dataset snapshots, promotion, rollback and re-prediction.

Thin: forms validate input, selectors read, services write; domain errors become messages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from diagnosis.exceptions import DomainError, NotFoundError
from diagnosis.models import TrainingRun
from diagnosis.selectors.models import model_version_get_active, model_version_test_metrics
from diagnosis.selectors.training import (
    cases_predicted_by_version,
    model_version_get,
    model_version_get_previous_active,
    model_version_list_with_usage,
    new_reviews_since_last_run,
    snapshot_get,
    snapshot_list,
    training_run_get,
    training_run_get_in_flight,
    training_run_list,
    unreviewed_cases_without_version,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.datasets import snapshot_create, snapshot_export, snapshot_read_manifest
from diagnosis.services.models import (
    model_version_activate,
    model_version_reject,
    model_version_repredict_unreviewed,
    model_version_rollback,
)
from diagnosis.services.training import training_run_cancel, training_run_start

PLOT_NAMES = ("roc", "calibration")


def manage_models_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Logged in (else the login page) and holding `diagnosis.manage_models` (else 403)."""

    @login_required
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm("diagnosis.manage_models"):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


class RetrainForm(forms.Form):
    epochs = forms.IntegerField(min_value=1, max_value=200, required=False)
    fine_tune = forms.BooleanField(required=False, initial=True)
    snapshot = forms.IntegerField(min_value=1, required=False)

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {"fine_tune": bool(data["fine_tune"])}
        if data.get("epochs"):
            config["epochs"] = data["epochs"]
        if data.get("snapshot"):
            config["snapshot_id"] = data["snapshot"]
        return config


def _run_json(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "trigger": run.trigger,
        "progress": run.progress,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "log_tail": run.log[-3000:],
        "decision": run.decision,
        "result_version": run.result_version.version if run.result_version else None,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "in_flight": run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING),
    }


@manage_models_required
@require_GET
def registry_index(request: HttpRequest) -> HttpResponse:
    versions = list(model_version_list_with_usage()[:30])
    active = model_version_get_active()
    context = {
        "versions": versions,
        "active": active,
        "previous_active": model_version_get_previous_active(),
        "runs": training_run_list()[:15],
        "in_flight": training_run_get_in_flight(),
        "snapshots": snapshot_list()[:10],
        "new_reviews": new_reviews_since_last_run(),
        "unreviewed_waiting": (
            unreviewed_cases_without_version(version=active).count() if active else 0
        ),
        "form": RetrainForm(initial={"fine_tune": True}),
        "metric_rows": _metric_rows(versions),
    }
    return render(request, "registry/index.html", context)


def _metric_rows(versions: list[Any]) -> list[dict[str, Any]]:
    """One row per metric, one column per version (the side-by-side table)."""

    def m(v: Any) -> dict[str, Any]:
        return model_version_test_metrics(v)

    def op(v: Any, point: str, key: str) -> Any:
        return (m(v).get("operating_points") or {}).get(point, {}).get(key)

    def ci(v: Any) -> str:
        bounds = m(v).get("auroc_ci95") or m(v).get("auroc_ci")
        if not bounds or None in bounds:
            return ""
        return f"{bounds[0]:.3f}–{bounds[1]:.3f}"

    specs: list[tuple[str, Callable[[Any], Any]]] = [
        ("AUROC (frozen test)", lambda v: m(v).get("auroc")),
        ("AUROC 95% CI", ci),
        ("Sensitivity, high-sensitivity point", lambda v: op(v, "high_sensitivity", "sensitivity")),
        ("Specificity, high-sensitivity point", lambda v: op(v, "high_sensitivity", "specificity")),
        (
            "PPV / NPV, high-sensitivity point",
            lambda v: _pair(op(v, "high_sensitivity", "ppv"), op(v, "high_sensitivity", "npv")),
        ),
        ("Sensitivity, balanced point", lambda v: op(v, "balanced", "sensitivity")),
        ("Specificity, balanced point", lambda v: op(v, "balanced", "specificity")),
        (
            "PPV / NPV, balanced point",
            lambda v: _pair(op(v, "balanced", "ppv"), op(v, "balanced", "npv")),
        ),
        ("ECE", lambda v: m(v).get("ece")),
        ("Test images (fractured)", lambda v: _n(m(v))),
        (
            "Evaluated on snapshot",
            lambda v: (
                m(v).get("snapshot", "") or ("model card" if "test" in (v.metrics or {}) else "")
            ),
        ),
    ]
    rows = []
    for label, getter in specs:
        values = []
        for version in versions:
            value = getter(version)
            values.append(f"{value:.3f}" if isinstance(value, float) else (value or "–"))
        rows.append({"label": label, "values": values})
    return rows


def _n(metrics: dict[str, Any]) -> str:
    if "n" not in metrics:
        return ""
    positives = metrics.get("positives")
    if positives is None:
        confusion = ((metrics.get("operating_points") or {}).get("balanced") or {}).get("confusion")
        positives = confusion["tp"] + confusion["fn"] if confusion else "?"
    return f"{metrics['n']} ({positives})"


def _pair(a: float | None, b: float | None) -> str:
    return f"{a:.3f} / {b:.3f}" if a is not None and b is not None else ""


@manage_models_required
@require_POST
def run_start(request: HttpRequest) -> HttpResponse:
    form = RetrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the retraining settings.")
        return redirect("registry:index")
    try:
        run = training_run_start(
            trigger=TrainingRun.Trigger.MANUAL,
            user=request.user,
            config=form.config(),
            request=request,
        )
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("registry:index")
    messages.success(request, f"Training run {run.pk} queued.")
    return redirect("registry:run_detail", run_id=run.pk)


@manage_models_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get(training_run_get, run_id=run_id)
    return render(request, "registry/run_detail.html", {"run": run, "run_json": _run_json(run)})


@manage_models_required
@require_GET
@never_cache
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    return JsonResponse(_run_json(_get(training_run_get, run_id=run_id)))


@manage_models_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get(training_run_get, run_id=run_id)
    try:
        training_run_cancel(run=run, user=request.user, request=request)
        messages.success(request, f"Cancellation of run {run.pk} requested.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("registry:run_detail", run_id=run.pk)


@manage_models_required
@require_GET
def version_detail(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _get(model_version_get, version_id=version_id)
    page = Paginator(cases_predicted_by_version(version=version), 25).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "registry/version_detail.html",
        {
            "version": version,
            "page": page,
            "plot_names": [n for n in PLOT_NAMES if n in version.plots],
        },
    )


@manage_models_required
@require_POST
def version_activate(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _get(model_version_get, version_id=version_id)
    try:
        model_version_activate(version=version, user=request.user, reason="manual", request=request)
        messages.success(request, f"{version.version} is now the active model.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("registry:index")


@manage_models_required
@require_POST
def version_reject(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _get(model_version_get, version_id=version_id)
    try:
        model_version_reject(version=version, user=request.user, request=request)
        messages.success(request, f"{version.version} was rejected.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("registry:index")


@manage_models_required
@require_POST
def rollback(request: HttpRequest) -> HttpResponse:
    try:
        version = model_version_rollback(user=request.user, request=request)
        messages.success(request, f"Rolled back: {version.version} is active again.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("registry:index")


@manage_models_required
@require_POST
def repredict(request: HttpRequest) -> HttpResponse:
    try:
        count = model_version_repredict_unreviewed(user=request.user, request=request)
        messages.success(request, f"Predictions requested for {count} unreviewed case(s).")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("registry:index")


@manage_models_required
@require_GET
def version_plot(request: HttpRequest, version_id: int, name: str) -> FileResponse:
    version = _get(model_version_get, version_id=version_id)
    path = version.plots.get(name) if name in PLOT_NAMES else None
    if not path or not default_storage.exists(path):
        raise Http404("No such plot.")
    response = FileResponse(default_storage.open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


@manage_models_required
@require_POST
def snapshot_new(request: HttpRequest) -> HttpResponse:
    try:
        snapshot = snapshot_create(user=request.user, request=request)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("registry:index")
    messages.success(request, f"Snapshot {snapshot.version} created.")
    return redirect("registry:snapshot_detail", snapshot_id=snapshot.pk)


@manage_models_required
@require_GET
def snapshot_detail(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = _get(snapshot_get, snapshot_id=snapshot_id)
    manifest = snapshot_read_manifest(snapshot=snapshot)
    audit_record(action="snapshot.view", request=request, obj=snapshot, object_id=str(snapshot.pk))
    splits = []
    for split in ("train", "val", "test"):
        counts = snapshot.counts.get(split, {})
        total = counts.get("total", 0)
        fractured = counts.get("fractured", 0)
        splits.append(
            {
                "name": split,
                "fractured": fractured,
                "not_fractured": counts.get("not_fractured", 0),
                "total": total,
                "share": round(100 * fractured / total, 1) if total else 0,
            }
        )
    return render(
        request,
        "registry/snapshot_detail.html",
        {
            "snapshot": snapshot,
            "splits": splits,
            "excluded": manifest.get("excluded", [])[:200],
            "excluded_counts": snapshot.counts.get("excluded", {}),
            "sources": snapshot.counts.get("sources", {}),
            "runs": snapshot.runs.order_by("-created_at")[:20],
        },
    )


@manage_models_required
@require_GET
def snapshot_download(request: HttpRequest, snapshot_id: int) -> FileResponse:
    snapshot = _get(snapshot_get, snapshot_id=snapshot_id)
    archive = snapshot_export(snapshot=snapshot, user=request.user, request=request)
    response = FileResponse(
        archive,
        as_attachment=True,
        filename=f"{snapshot.version}.zip",
        content_type="application/zip",
    )
    response["Cache-Control"] = "no-store"
    return response


def _get(selector: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return selector(**kwargs)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
