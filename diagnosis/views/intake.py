"""Intake page (new case with images) and the permission-checked image files (canonical and
full-depth PNG)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
    ValidationError,
)
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    UnreadablePostError,
)
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from diagnosis.exceptions import InvalidUploadError, NotFoundError
from diagnosis.forms import CaseIntakeForm
from diagnosis.imaging import names
from diagnosis.models import AuditEvent, XrayImage
from diagnosis.selectors.cases import case_get
from diagnosis.services.audit import audit_record
from diagnosis.services.cases import case_create

logger = logging.getLogger(__name__)

_csrf = CsrfViewMiddleware(lambda request: HttpResponse())


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or (
        "application/json" in request.headers.get("Accept", "")
    )


def _error(
    request: HttpRequest,
    *,
    code: str,
    message: str,
    status: int,
    form: CaseIntakeForm | None = None,
    **extra: Any,
) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"code": code, "message": message, **extra}, status=status)
    per_file = [f"{item['name']}: {item['message']}" for item in extra.get("files", [])]
    upload_errors = per_file or [message]
    context = {"form": form or CaseIntakeForm(), "upload_errors": upload_errors, "error_code": code}
    return render(request, "diagnosis/case_new.html", context, status=status)


def _parse_body(request: HttpRequest) -> HttpResponse | None:
    """Parse the multipart body under our own limits; an error response, or None if parsed.
    (A body over the request-size limit never gets here: RequestSizeLimitMiddleware refuses it.)"""
    try:
        request.POST  # noqa: B018  (parses the body, files included)
        request.FILES  # noqa: B018
    except TooManyFilesSent:
        return _error(
            request,
            code="too_many_files",
            message=f"Too many files (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} per case).",
            status=400,
        )
    except TooManyFieldsSent:
        return _error(request, code="too_many_fields", message="Too many form fields.", status=400)
    except RequestDataTooBig:
        return _error(
            request, code="request_too_large", message="The form data is too large.", status=413
        )
    except (MultiPartParserError, UnreadablePostError) as exc:
        error = names.multipart_error(exc)
        return _error(request, code=error.code, message=error.message, status=error.status_code)
    return None


@csrf_exempt  # CSRF is enforced below, once the body has been parsed under our own error handling
@login_required
def case_new_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("diagnosis.add_case"):
        raise PermissionDenied
    if request.method == "GET":
        return _case_new_page(request)
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    failure = _parse_body(request)
    if failure is not None:
        return failure
    rejected = _csrf.process_view(request, None, (), {})
    if rejected is not None:
        return rejected

    form = CaseIntakeForm(request.POST, request.FILES)
    if not form.is_valid():
        return _error(
            request,
            code="invalid_form",
            message="Please correct the highlighted fields.",
            status=400,
            form=form,
            fields=form.errors.get_json_data(),
        )
    data = form.cleaned_data
    try:
        case = case_create(
            user=request.user,
            patient_ref=data["patient_ref"],
            body_part=data["body_part"],
            clinical_question=data["clinical_question"],
            files=data["images"],
            idempotency_key=data.get("idempotency_key") or "",
            urgent=data.get("urgent", False),
            request=request,
        )
    except InvalidUploadError as exc:
        audit_record(
            action="case.create",
            request=request,
            object_type="case",
            outcome=AuditEvent.Outcome.FAILURE,
            code=exc.code,
        )
        return _error(
            request,
            code=exc.code,
            message=exc.message,
            status=exc.status_code,
            form=form,
            files=exc.extra.get("files", []),
        )
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _error(
            request,
            code="invalid_form",
            message="Please correct the highlighted fields.",
            status=400,
            form=form,
            fields=form.errors.get_json_data(),
        )
    url = reverse("diagnosis:case_detail", args=[case.uuid])
    if _wants_json(request):
        return JsonResponse({"uuid": str(case.uuid), "status": case.status, "url": url}, status=201)
    messages.success(request, "Case submitted; the images are queued for analysis.")
    return redirect(url)


def _case_new_page(request: HttpRequest) -> HttpResponse:
    """Never cached: going back to the page must fetch a fresh form (a new idempotency key)."""
    response = render(request, "diagnosis/case_new.html", {"form": CaseIntakeForm()})
    add_never_cache_headers(response)
    return response


def _case_image(request: HttpRequest, case_uuid: str, pk: int) -> tuple[Any, XrayImage]:
    """The case and one of its images, if the user may see the case (404 otherwise)."""
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Image not found") from exc
    image = next((item for item in case.images.all() if item.pk == pk), None)
    if image is None:
        raise Http404("Image not found")
    return case, image


def _png_response(
    request: HttpRequest, case: Any, image: XrayImage, field_file: Any, *, kind: str
) -> FileResponse:
    try:
        handle = field_file.open("rb")
    except OSError as exc:
        logger.warning("image file missing", extra={"image_id": image.pk, "kind": kind})
        raise Http404("Image not found") from exc
    extra = {"kind": kind} if kind != "canonical" else {}
    audit_record(action="image.view", request=request, obj=image, case=str(case.uuid), **extra)
    response = FileResponse(handle, content_type="image/png")
    suffix = "" if kind == "canonical" else f"-{kind}"
    response["Content-Disposition"] = f'inline; filename="image-{image.pk}{suffix}.png"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def image_file_view(request: HttpRequest, case_uuid: str, pk: int) -> FileResponse:
    """The canonical PNG of one image, for users who may see its case (404 otherwise).
    Originals are never served."""
    case, image = _case_image(request, case_uuid, pk)
    if not image.file:
        raise Http404("Image not found")
    response = _png_response(request, case, image, image.file, kind="canonical")
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def image_depth_view(request: HttpRequest, case_uuid: str, pk: int) -> FileResponse:
    """The full-depth 16-bit grayscale PNG of a DICOM or 16-bit PNG image (see
    `XrayImage.depth_params` for reading it), with the canonical PNG's access rules: 404 to users
    who may not see the case, and to images without one. Audited as `image.view` (kind `depth`).

    Cacheable by the browser only (`private`): the file of an image never changes, and the viewer
    fetches it each time the image is shown."""
    case, image = _case_image(request, case_uuid, pk)
    if not image.depth_file:
        raise Http404("This image has no full-depth version")
    response = _png_response(request, case, image, image.depth_file, kind="depth")
    response["Cache-Control"] = "private, max-age=3600"
    return response
