"""Case results: the status JSON polled by the case page, heat-map files, the staff retry action.

The status JSON carries workflow state only (status, reason, progress counts), no clinical
content, so polling it is not audited; the case page itself (`case.view`) and every heat-map file
read (`heatmap.view`) are.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from diagnosis.exceptions import DomainError, NotFoundError
from diagnosis.models import Case
from diagnosis.selectors.cases import case_get
from diagnosis.selectors.params import query_id
from diagnosis.selectors.predictions import case_results, prediction_get_for_image
from diagnosis.services.audit import audit_record
from diagnosis.services.prediction_files import prediction_overlay_name
from diagnosis.services.predictions import case_retry_predictions

POLL_MS = 1500
RETRY_PERMISSIONS = ("diagnosis.review_case", "diagnosis.manage_models")


def user_may_retry(user: object) -> bool:
    return any(user.has_perm(perm) for perm in RETRY_PERMISSIONS)  # type: ignore[attr-defined]


@login_required
@require_GET
def case_status_view(request: HttpRequest, case_uuid: str) -> JsonResponse:
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    results = case_results(case=case)
    response = JsonResponse(
        {
            "case": str(case.uuid),
            "status": case.status,
            "status_display": case.get_status_display(),
            "reason": case.status_reason,
            "in_flight": results.in_flight,
            "progress": {
                "done": results.done,
                "failed": results.failed,
                "total": results.total,
                "percent": results.percent,
            },
            "images": [
                {
                    "id": item.image.pk,
                    "position": item.image.position,
                    "prediction": item.prediction.status if item.prediction else None,
                }
                for item in results.items
            ],
            # A case waiting for a model to be activated changes rarely: poll it slowly.
            "poll_ms": POLL_MS if case.status != Case.Status.RECEIVED else 10 * POLL_MS,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def heatmap_file_view(request: HttpRequest, case_uuid: str, pk: int) -> FileResponse:
    """The RGBA heat-map PNG (client-side overlay) or, with ?kind=overlay, the captioned overlay,
    of the image's current prediction, or of the prediction `?p=<id>` (pages put it in the URL so
    a cached file always matches the result shown next to it)."""
    kind = request.GET.get("kind", "heatmap")
    if kind not in ("heatmap", "overlay"):
        raise Http404("Unknown heat-map kind")
    requested = request.GET.get("p", "")
    prediction_id = query_id(requested)
    if requested and prediction_id is None:
        raise Http404("Unknown prediction")
    try:
        case, prediction = prediction_get_for_image(
            user=request.user, case_uuid=case_uuid, image_pk=pk, prediction_id=prediction_id
        )
    except NotFoundError as exc:
        raise Http404("Heat-map not found") from exc
    try:
        if kind == "heatmap":
            name = prediction.heatmap.name
        else:
            name = prediction_overlay_name(prediction=prediction)
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, NotFoundError) as exc:
        raise Http404("Heat-map not found") from exc
    audit_record(
        action="heatmap.view",
        request=request,
        obj=case,
        image_id=pk,
        prediction_id=prediction.pk,
        kind=kind,
    )
    response = FileResponse(handle, content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{kind}-{pk}.png"'
    response["X-Content-Type-Options"] = "nosniff"
    # Private: never kept by shared caches. URLs carry the prediction id, so a new result is a
    # new URL and the browser may keep this one.
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_POST
def case_retry_view(request: HttpRequest, case_uuid: str) -> HttpResponse:
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    if not user_may_retry(request.user):
        audit_record(action="case.retry", request=request, obj=case, outcome="denied")
        raise PermissionDenied("Only readers and admins may retry predictions.")
    try:
        case = case_retry_predictions(case=case, user=request.user)
    except DomainError as exc:
        audit_record(
            action="case.retry", request=request, obj=case, outcome="failure", code=exc.code
        )
        messages.error(request, exc.message)
    else:
        audit_record(action="case.retry", request=request, obj=case)
        messages.success(request, "Predictions were requested again.")
    return redirect("diagnosis:case_detail", case_uuid=case.uuid)
