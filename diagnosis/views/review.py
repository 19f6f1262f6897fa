"""Radiologist pages: the review queue (page and JSON), claims, the review screen, reader statistics.

Thin: permissions and input parsing here, everything else in selectors/services. Who may read what
is decided by the services (claims, second-reader and adjudicator rules); the views turn their
errors into pages with the right status (403, 404, 409).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST, require_safe

from diagnosis.exceptions import (
    DomainError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
)
from diagnosis.models import AuditEvent, BodyPart, Case, Label, Review, XrayImage
from diagnosis.selectors.models import model_version_list
from diagnosis.selectors.reviews import (
    QUEUE_STATUSES,
    STAGE_ADJUDICATION,
    STAGE_NAMES,
    QueueFilters,
    candidate_fractions,
    case_image_reads,
    case_review_stage,
    claim_is_active,
    review_case_get,
    review_claims_held,
    review_draft_data,
    review_queue,
    review_queue_counts,
    review_queue_rows,
    review_statistics,
    user_can_use_queue,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.case_progress import (
    PRIORITY_SUSPECTED,
    PRIORITY_UNCERTAIN,
    PRIORITY_URGENT,
)
from diagnosis.services.review_drafts import review_draft_save
from diagnosis.services.reviews import (
    ClaimedByOtherError,
    ImageRead,
    InvalidReadError,
    check_may_read,
    review_claim,
    review_claim_next,
    review_release,
    review_submit,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
STAGE_COUNT_KEYS = {1: "first", 2: "second", 3: "adjudication"}


def _require_queue_user(request: HttpRequest) -> None:
    if not user_can_use_queue(request.user):
        audit_record(
            action="review.access",
            request=request,
            outcome=AuditEvent.Outcome.DENIED,
            path=request.path[:200],
        )
        raise PermissionDenied("Reviewing needs the radiologist role.")


def _get_case(request: HttpRequest, case_uuid: Any) -> Case:
    try:
        return review_case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc


def _error_page(
    request: HttpRequest, error: DomainError, *, case: Case | None = None
) -> HttpResponse:
    """A readable page for a refused review action, with the error's status (403/409/400)."""
    audit_record(
        action="review.denied",
        request=request,
        obj=case,
        outcome=AuditEvent.Outcome.DENIED,
        code=error.code,
    )
    return render(
        request,
        "review/refused.html",
        {"error": error, "case": case},
        status=error.status_code,
    )


def image_urls(case: Case, image_id: int, prediction_id: int | None) -> dict[str, str]:
    """Permission-checked, audited file views of the case pages: the radiograph and the RGBA
    heat-map of the image's newest prediction (its id in the query, so a new result is a new URL)."""
    image = reverse("diagnosis:image_file", kwargs={"case_uuid": case.uuid, "pk": image_id})
    heatmap = ""
    if prediction_id is not None:
        path = reverse("diagnosis:heatmap_file", kwargs={"case_uuid": case.uuid, "pk": image_id})
        heatmap = f"{path}?{urlencode({'p': prediction_id})}"
    return {"image": image, "heatmap": heatmap}


def full_depth(case: Case, image: XrayImage) -> dict[str, str] | None:
    """The full-depth PNG's URL and its reading params (JSON) for the viewer, or None when the
    image has none (JPEG, 8-bit PNG, colour DICOM, images stored before full depth was kept)."""
    params = image.depth_params or {}
    if not image.depth_file or not all(key in params for key in ("slope", "intercept")):
        return None
    try:
        encoded = json.dumps(params, allow_nan=False)
    except ValueError:  # a non-finite number: the viewer windows the 8-bit canonical instead
        return None
    url = reverse("diagnosis:image_depth", kwargs={"case_uuid": case.uuid, "pk": image.pk})
    return {"url": url, "params": encoded}


# --- Queue --------------------------------------------------------------------------------------------------


def _queue_page(request: HttpRequest) -> tuple[QueueFilters, Any, dict[str, int]]:
    filters = QueueFilters.from_params(request.GET)
    now = timezone.now()
    counts = review_queue_counts(user=request.user, filters=filters, now=now)
    paginator = Paginator(review_queue(user=request.user, filters=filters, now=now), PAGE_SIZE)
    # The counts query already knows the total: spare the paginator its COUNT(*).
    paginator.__dict__["count"] = (
        counts[STAGE_COUNT_KEYS[filters.stage]] if filters.stage else counts["total"]
    )
    page = paginator.get_page(request.GET.get("page"))
    return filters, page, counts


_SENTINEL = "00000000-0000-4000-8000-000000000000"


def _case_url_maker(name: str) -> Any:
    """A fast `reverse(name, case_uuid=...)` for list rows: reverse once, substitute the uuid."""
    template = reverse(name, kwargs={"case_uuid": _SENTINEL})
    return lambda case_uuid: template.replace(_SENTINEL, str(case_uuid))


def _waiting(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def priority_reasons(priority: float, *, has_result: bool = True) -> list[str]:
    """Why a case sits where it does in the queue: the priority buckets that add up to its value
    (see `case_priority`), most important first; empty for a routine case."""
    reasons = []
    rest = priority
    for value, reason in (
        (PRIORITY_URGENT, "urgent"),
        (PRIORITY_SUSPECTED, "suspected fracture"),
        (PRIORITY_UNCERTAIN, "near the threshold" if has_result else "no model result"),
    ):
        if rest >= value - 1e-9:
            reasons.append(reason)
            rest -= value
    return reasons


def _queue_rows(cases: list[Case], user_pk: int) -> list[dict[str, Any]]:
    review_url = _case_url_maker("review:case")
    claim_url = _case_url_maker("review:claim")
    now = timezone.now()
    rows = []
    for case in review_queue_rows(cases):
        stage = case_review_stage(case)
        rows.append(
            {
                "uuid": str(case.uuid),
                "patient_ref": case.patient_ref,
                "body_part": case.body_part,
                "body_part_display": case.get_body_part_display(),
                "status": case.status,
                "stage": stage,
                "stage_name": STAGE_NAMES.get(stage, "") if stage else "",
                "priority": case.priority,
                "urgent": case.urgent,
                "priority_reasons": priority_reasons(
                    case.priority, has_result=case.top_probability is not None
                ),
                "top_probability": case.top_probability,
                "top_threshold": case.top_threshold,
                "top_flagged": case.top_flagged,
                "model_version": case.top_model_version,
                "images": case.image_count or 0,
                "created_at": case.created_at.isoformat(),
                "created": timezone.localtime(case.created_at).strftime("%Y-%m-%d %H:%M"),
                "waiting": _waiting((now - case.created_at).total_seconds()),
                "claimed_by_me": case.claimed_by_id == user_pk,
                "review_url": review_url(case.uuid),
                "claim_url": claim_url(case.uuid),
            }
        )
    return rows


@login_required
@require_safe
def queue_view(request: HttpRequest) -> HttpResponse:
    _require_queue_user(request)
    filters, page, counts = _queue_page(request)
    audit_record(
        action="review.queue_view",
        request=request,
        object_type="review_queue",
        page=page.number,
        **filters.as_params(),
    )
    rows = _queue_rows(page.object_list, request.user.pk)
    return render(
        request,
        "review/queue.html",
        {
            "page": page,
            "rows": rows,
            "counts": counts,
            "filters": filters,
            "filter_query": urlencode(filters.as_params()),
            "held": list(review_claims_held(user=request.user)[:10]),
            "body_parts": BodyPart.choices,
            "statuses": [(s, Case.Status(s).label) for s in QUEUE_STATUSES],
            "stages": sorted(STAGE_NAMES.items()),
            "model_versions": list(model_version_list().values("pk", "version")),
        },
    )


@login_required
@require_safe
def queue_data_view(request: HttpRequest) -> JsonResponse:
    _require_queue_user(request)
    filters, page, counts = _queue_page(request)
    audit_record(
        action="review.queue_view",
        request=request,
        object_type="review_queue",
        page=page.number,
        format="json",
        **filters.as_params(),
    )
    return JsonResponse(
        {
            "counts": counts,
            "page": page.number,
            "num_pages": page.paginator.num_pages,
            "results": _queue_rows(page.object_list, request.user.pk),
        }
    )


# --- Claims ----------------------------------------------------------------------------------------------------


@login_required
@require_POST
def claim_view(request: HttpRequest, case_uuid: Any) -> HttpResponse:
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    try:
        review_claim(case=case, user=request.user, request=request)
    except DomainError as exc:  # claimed by another (409), not this user's read (403), no read due
        return _error_page(request, exc, case=case)
    return redirect("review:case", case_uuid=case.uuid)


@login_required
@require_POST
def claim_renew_view(request: HttpRequest, case_uuid: Any) -> JsonResponse:
    """Extend the reader's own claim while the review screen is open and in use (called by
    review.js); a claim that someone else holds meanwhile answers 409."""
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    if case.claimed_by_id != request.user.pk:
        error: DomainError = ClaimedByOtherError(
            "Your claim on this case has lapsed"
            + (f" and {case.claimed_by.get_username()} is reading it." if case.claimed_by else ".")
        )
        return JsonResponse({"code": error.code, "message": error.message}, status=409)
    try:
        case = review_claim(case=case, user=request.user, request=request)
    except DomainError as exc:
        return JsonResponse({"code": exc.code, "message": exc.message}, status=exc.status_code)
    return JsonResponse({"claim_expires_at": case.claim_expires_at.isoformat()})


@login_required
@require_POST
def claim_next_view(request: HttpRequest) -> HttpResponse:
    _require_queue_user(request)
    filters = QueueFilters.from_params(request.POST)
    case = review_claim_next(user=request.user, filters=filters, request=request)
    if case is None:
        messages.info(request, "Nothing left in your queue.")
        return redirect("review:queue")
    return redirect("review:case", case_uuid=case.uuid)


@login_required
@require_POST
def release_view(request: HttpRequest, case_uuid: Any) -> HttpResponse:
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    try:
        review_release(case=case, user=request.user, request=request)
    except DomainError as exc:
        return _error_page(request, exc, case=case)
    messages.info(request, "Case released back to the queue.")
    return redirect("review:queue")


# --- The review screen ---------------------------------------------------------------------------------------


def pixel_spacing(metadata: dict[str, Any] | None) -> tuple[list[float], str] | None:
    """(row, column) spacing in mm of a DICOM image and the attribute it came from: PixelSpacing,
    else ImagerPixelSpacing (at the detector); None when neither is a pair of positive numbers."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = (metadata or {}).get(key)
        try:
            pair = [float(v) for v in value] if isinstance(value, list | tuple) else []
        except (TypeError, ValueError):
            continue
        if len(pair) == 2 and all(0 < v < 10 for v in pair):
            return pair, key
    return None


def _screen_context(request: HttpRequest, case: Case, stage: int | None) -> dict[str, Any]:
    # Blind second reads: one rule for every page, the API and webhooks (selectors.reads).
    images = case_image_reads(case=case, viewer=request.user)
    holds_claim = case.claimed_by_id == request.user.pk and stage is not None
    items = []
    for item in images:
        prediction = item.prediction
        version = prediction.model_version if prediction else None
        operating_point = version.default_operating_point if version else ""
        threshold = (version.thresholds or {}).get(operating_point) if version else None
        items.append(
            {
                "item": item,
                "image": item.image,
                "prediction": prediction,
                "version": version,
                "operating_point": operating_point,
                "threshold": threshold,
                "urls": image_urls(
                    case,
                    item.image.pk,
                    prediction.pk if prediction and prediction.heatmap else None,
                ),
                "spacing": pixel_spacing(item.image.dicom_metadata),
                "depth": full_depth(case, item.image),
                "reads": [item.reads[n] for n in sorted(item.reads)],
                "choices": [item.reads[n] for n in (1, 2) if n in item.reads]
                if stage == STAGE_ADJUDICATION
                else [],
                "final_read": item.final_read(),
                "boxes_json": json.dumps(item.final_boxes()) if stage is None else "",
                # the model's marks offered as boxes to accept, in the frame of the reader's boxes
                "suggestions": candidate_fractions(prediction, item.image) if holds_claim else [],
            }
        )
    return {
        "case": case,
        "stage": stage,
        "stage_name": STAGE_NAMES.get(stage, "") if stage else "",
        "adjudication": stage == STAGE_ADJUDICATION,
        "draft": review_draft_data(case=case, user=request.user, read_number=stage)
        if holds_claim
        else {},
        "holds_claim": holds_claim,
        "claim_ttl": settings.REVIEW_CLAIM_TTL_SECONDS,
        "claim_active": claim_is_active(case),
        "items": items,
        "labels": Label.choices,
        "decisions": Review.Decision.choices,
    }


@login_required
@require_safe
def case_view(request: HttpRequest, case_uuid: Any) -> HttpResponse:
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    stage = case_review_stage(case)
    if stage is not None:
        if claim_is_active(case) and case.claimed_by_id != request.user.pk:
            return _error_page(
                request,
                ClaimedByOtherError(
                    f"{case.claimed_by.get_username()} is reading this case. "
                    "Pick another case from the queue."
                ),
                case=case,
            )
        refusal = _may_read_refusal(request, case, stage)
        if refusal is not None:
            return _error_page(request, refusal, case=case)
    audit_record(action="review.view", request=request, obj=case, read_number=stage)
    return render(request, "review/case.html", _screen_context(request, case, stage))


def _may_read_refusal(request: HttpRequest, case: Case, stage: int) -> DomainError | None:
    """The service's own check, asked without taking the claim."""
    try:
        check_may_read(case=case, user=request.user, stage=stage)
    except (PermissionDeniedError, InvalidStateError) as exc:
        return exc
    return None


def _posted_json(request: HttpRequest, name: str) -> Any:
    raw = request.POST.get(name, "").strip()
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise InvalidReadError("The drawn boxes could not be read.") from exc


def _reads_from_post(request: HttpRequest, case: Case) -> list[ImageRead]:
    reads = []
    adjudication = case_review_stage(case) == STAGE_ADJUDICATION
    earlier = {item.image.pk: item for item in case_image_reads(case=case)} if adjudication else {}
    for image_id in case.images.values_list("pk", flat=True):
        # `boxes_<id>`: the list the review screen keeps; `region_<id>`: one box (older form).
        boxes = _posted_json(request, f"boxes_{image_id}")
        region = _posted_json(request, f"region_{image_id}")
        decision = request.POST.get(f"decision_{image_id}", "")
        final_label = request.POST.get(f"final_label_{image_id}", "")
        if adjudication:
            decision, final_label, boxes, region = _adjudication_choice(
                earlier[image_id], request.POST.get(f"choice_{image_id}", ""), boxes, region
            )
        reads.append(
            ImageRead(
                image_id=image_id,
                decision=decision,
                final_label=final_label,
                boxes=boxes,
                region=region,
                comment=request.POST.get(f"comment_{image_id}", ""),
            )
        )
    return reads


def _adjudication_choice(
    item: Any, choice: str, boxes: Any, region: Any
) -> tuple[str, str, Any, Any]:
    """The adjudicator picks read 1 or read 2 of an image: its label becomes the final one, with
    its boxes unless the adjudicator drew their own. -> (decision against the model, label,
    boxes, region)."""
    chosen = item.reads.get(int(choice)) if choice in ("1", "2") else None
    if chosen is None:
        raise InvalidReadError("Choose one of the two reads for every image.")
    label = chosen.final_label
    if not boxes and not region and label == Label.FRACTURED:
        boxes = list(chosen.boxes)
    model_label = item.model_label
    if not model_label:
        decision = Review.Decision.CORRECT
    else:
        decision = Review.Decision.CONFIRM if label == model_label else Review.Decision.CORRECT
    return decision, label, boxes, region


@login_required
@require_POST
def draft_view(request: HttpRequest, case_uuid: Any) -> JsonResponse:
    """Keep the reader's work in progress (review.js posts the form's state as JSON)."""
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse(
            {"code": "invalid_draft", "message": "The draft could not be read."}, status=400
        )
    try:
        draft = review_draft_save(case=case, user=request.user, data=data)
    except DomainError as exc:
        return JsonResponse({"code": exc.code, "message": exc.message}, status=exc.status_code)
    return JsonResponse({"saved_at": draft.updated_at.isoformat()})


@login_required
@require_POST
def submit_view(request: HttpRequest, case_uuid: Any) -> HttpResponse:
    _require_queue_user(request)
    case = _get_case(request, case_uuid)
    try:
        reads = _reads_from_post(request, case)
        done = review_submit(case=case, user=request.user, reads=reads, request=request)
    except InvalidReadError as exc:
        messages.error(request, exc.message)
        context = _screen_context(request, case, case_review_stage(case))
        context["posted"] = request.POST
        return render(request, "review/case.html", context, status=400)
    except DomainError as exc:
        # Claimed by another reader, not this user's read, or the case left the workflow (e.g.
        # cancelled after the claim lapsed): the refusal page says which, with its status.
        return _error_page(request, exc, case=case)
    outcome = {
        Case.Status.REVIEWED: "Read saved: the case is reviewed.",
    }.get(done.status, "Read saved: the case goes on to another reader.")
    messages.success(request, outcome)
    if request.POST.get("next"):
        nxt = review_claim_next(user=request.user, request=request)
        if nxt is not None:
            return redirect("review:case", case_uuid=nxt.uuid)
        messages.info(request, "Nothing left in your queue.")
    return redirect("review:queue")


# --- Statistics ---------------------------------------------------------------------------------------------


@login_required
@require_safe
def statistics_view(request: HttpRequest) -> HttpResponse:
    if not (user_can_use_queue(request.user) or request.user.has_perm("diagnosis.manage_models")):
        raise PermissionDenied("Reader statistics are for radiologists and admins.")
    body_part = request.GET.get("body_part") or None
    if body_part not in BodyPart.values:
        body_part = None
    stats = review_statistics(body_part=body_part)
    return render(
        request,
        "review/statistics.html",
        {"stats": stats, "body_part": body_part, "body_parts": BodyPart.choices},
    )
