"""Case list, case detail and case cancel (thin: selectors read, services write)."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST, require_safe

from diagnosis.exceptions import (
    ConflictError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
)
from diagnosis.models import BodyPart, Case, Prediction
from diagnosis.selectors.cases import case_get, case_list
from diagnosis.selectors.predictions import case_results
from diagnosis.selectors.reviews import claim_is_active, review_queue_rows
from diagnosis.services.audit import audit_record
from diagnosis.services.case_progress import CANCELLABLE
from diagnosis.services.cases import case_cancel
from diagnosis.templatetags.prediction_tags import model_marks, reader_boxes
from diagnosis.templatetags.review_tags import review_summary
from diagnosis.views.review import full_depth

PAGE_SIZE = 25
_PATIENT_REF_MAX = 64


@login_required
@require_safe
def case_list_view(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    if status not in Case.Status.values:
        status = None
    body_part = request.GET.get("body_part") or None
    if body_part not in BodyPart.values:
        body_part = None
    # NUL cannot be searched for (PostgreSQL refuses it in a string) and is in no reference.
    patient_ref = (request.GET.get("q") or "").replace("\x00", "").strip()[:_PATIENT_REF_MAX]
    cases = case_list(
        user=request.user, status=status, body_part=body_part, patient_ref=patient_ref
    )
    page = Paginator(cases, PAGE_SIZE).get_page(request.GET.get("page"))
    # Image counts and the model's top suggestion: one query for the page's cases, after the LIMIT.
    page.object_list = review_queue_rows(page.object_list)
    filters = {
        k: v for k, v in {"status": status, "body_part": body_part, "q": patient_ref}.items() if v
    }
    # The list shows patient references: every page view is audited (the search text is not kept).
    audit_record(
        action="case.list",
        request=request,
        object_type="case",
        status=status or "",
        body_part=body_part or "",
        search=bool(patient_ref),
        page=page.number,
        results=len(page),
    )
    return render(
        request,
        "diagnosis/case_list.html",
        {
            "page": page,
            "status": status,
            "body_part": body_part,
            "q": patient_ref,
            "statuses": Case.Status.choices,
            "body_parts": BodyPart.choices,
            "filter_query": urlencode(filters),
            "filtered": bool(filters),
        },
    )


@login_required
@require_safe
def case_detail_view(request: HttpRequest, case_uuid: str) -> HttpResponse:
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    audit_record(action="case.view", request=request, obj=case)
    can_cancel = (
        case.status in CANCELLABLE
        and (case.created_by_id == request.user.pk or request.user.is_staff)
        and not claim_is_active(case)
    )
    return render(request, "diagnosis/case_detail.html", {"case": case, "can_cancel": can_cancel})


@login_required
@require_safe
def case_image_viewer_view(request: HttpRequest, case_uuid: str, pk: int) -> HttpResponse:
    """One radiograph of a case in the large read-only viewer (the review screen's viewer.js):
    windowing (on the full-depth values where the image has them), zoom and pan, the heat-map,
    the model's marks and, once the case's reading is final, the radiologists' final boxes.
    Who may open it is who may see the case page (404 otherwise); the overlays are the ones the
    case page shows, from the same selectors (so nothing the blind-read rule hides)."""
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    results = case_results(case=case)
    number, item = next(
        ((n, it) for n, it in enumerate(results.items, start=1) if it.image.pk == pk),
        (0, None),
    )
    if item is None:
        raise Http404("Image not found")
    image = item.image
    prediction = item.prediction
    audit_record(action="case.view", request=request, obj=case, image=image.pk, page="viewer")
    done = prediction is not None and prediction.status == Prediction.Status.DONE
    heatmap = ""
    if done and prediction.heatmap:
        path = reverse("diagnosis:heatmap_file", kwargs={"case_uuid": case.uuid, "pk": image.pk})
        heatmap = f"{path}?{urlencode({'p': prediction.pk})}"
    marks = model_marks(prediction, image)
    finals = reader_boxes(review_summary(case), image)
    depth = full_depth(case, image)
    data = {
        "image": reverse("diagnosis:image_file", kwargs={"case_uuid": case.uuid, "pk": image.pk}),
        "heatmap": heatmap,
        "depth": {"url": depth["url"], "params": json.loads(depth["params"])} if depth else None,
        "width": image.width,
        "height": image.height,
        "marks": marks["candidates"] if marks else [],
        "final": [
            {"x0": b["x"], "y0": b["y"], "x1": b["x"] + b["w"], "y1": b["y"] + b["h"]}
            for b in finals
        ],
    }
    return render(
        request,
        "diagnosis/image_viewer.html",
        {
            "case": case,
            "image": image,
            "number": number,
            "total": len(results.items),
            "prediction": prediction if done else None,
            "data": data,
            "back_url": reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid})
            + f"#open-viewer-{image.pk}",
        },
    )


@login_required
@require_POST
def case_cancel_view(request: HttpRequest, case_uuid: str) -> HttpResponse:
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
        case_cancel(case=case, user=request.user, request=request)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    except (InvalidStateError, ConflictError) as exc:  # reviewed, cancelled, or being read
        messages.error(request, exc.message)
    else:
        messages.success(request, "The case was cancelled.")
    return redirect("diagnosis:case_detail", case_uuid=case.uuid)
