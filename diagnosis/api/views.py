"""REST API v1 viewsets: thin interfaces over selectors (reads) and services (writes).

Every action names its scope (read / write / review / admin); a token request needs the scope on
the token and the matching permission on its user. Querysets come from permission-scoped
selectors, so a foreign object answers 404. Every PHI read or write is audited.
"""

from __future__ import annotations

import logging
import uuid as uuid_lib
from typing import Any

from django.http import FileResponse, HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from diagnosis.api import serializers as s
from diagnosis.api.permissions import HasScope, request_token
from diagnosis.api.schema import PortalAutoSchema
from diagnosis.api.throttling import TokenScopeRateThrottle
from diagnosis.exceptions import NotFoundError
from diagnosis.imaging import names
from diagnosis.models import Case
from diagnosis.selectors import api as api_selectors
from diagnosis.selectors.models import model_version_list
from diagnosis.selectors.reviews import (
    QueueFilters,
    review_case_get,
    review_queue,
    review_queue_rows,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.cases import IDEMPOTENCY_KEY_MAX, case_cancel, case_create
from diagnosis.services.models import model_version_activate, model_version_rollback
from diagnosis.services.reviews import ImageRead, review_claim, review_release, review_submit

logger = logging.getLogger(__name__)

UUID_REGEX = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class CappedPageNumberPagination(PageNumberPagination):
    """`page_size` is honoured up to 100; anything larger is capped, never an error."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


class PngRenderer(BaseRenderer):
    """Lets clients ask for a file with `Accept: image/png` (files bypass rendering; errors are
    switched back to JSON by `ApiViewSet.finalize_response`)."""

    media_type = "image/png"
    format = "png"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return JSONRenderer().render(data)


class _NoFormatOverride:
    """DRF's settings without the `?format=` query override."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name: str) -> Any:
        return getattr(api_settings, name)


class AcceptHeaderNegotiation(DefaultContentNegotiation):
    """The representation follows the Accept header alone: a `?format=` query parameter is
    ignored (it could not change a download, and generated clients would offer it)."""

    settings = _NoFormatOverride()


class UploadMultiPartParser(MultiPartParser):
    """DRF's multipart parser, with the true reason when Django refuses the body (e.g. a file name
    too long for a part header) instead of "Multipart form parse error - ..."."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except ParseError as exc:
            cause = exc.__context__
            if isinstance(cause, MultiPartParserError):
                raise names.multipart_error(cause) from cause
            raise


class ApiViewSet(viewsets.GenericViewSet):
    """Base: authentication from settings (token, then session with CSRF), scope checks,
    per-scope throttling and the error-aware schema."""

    permission_classes = [IsAuthenticated, HasScope]
    parser_classes = [JSONParser]  # bodies are JSON; uploads (CaseViewSet) are multipart
    throttle_classes = [TokenScopeRateThrottle]
    content_negotiation_class = AcceptHeaderNegotiation
    schema = PortalAutoSchema()
    #: action -> scope; actions not listed need "read".
    scopes: dict[str, str] = {}
    #: action -> throttle scope, when it differs from the action's scope.
    throttle_scopes: dict[str, str] = {}
    #: action -> the serializer of its request body (OPTIONS describes it; default: no fields).
    input_serializers: dict[str, type[serializers.Serializer]] = {}

    def get_serializer_class(self) -> type[serializers.Serializer]:
        """For OPTIONS: DRF's metadata asks for the serializer of each write method the route
        allows (the views build their own serializers and never call this otherwise)."""
        action = getattr(self, "action", None)
        request = getattr(self, "request", None)
        if action is None and request is not None:  # OPTIONS: which action would POST run?
            action = (getattr(self, "action_map", None) or {}).get(request.method.lower())
        return self.input_serializers.get(action or "", serializers.Serializer)

    def required_scope(self) -> str:
        return self.scopes.get(self.action or "", "read")

    def throttle_scope_for_action(self) -> str:
        return self.throttle_scopes.get(self.action or "", self.required_scope())

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and isinstance(
            getattr(response, "accepted_renderer", None), PngRenderer
        ):
            # An error answered to `Accept: image/png` is still the JSON error document.
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    def audit(self, action: str, obj: Any, **extra: Any) -> None:
        token = request_token(self.request)
        if token is not None:
            extra["api_token"] = token.prefix
        audit_record(action=action, request=self.request, obj=obj, via="api", **extra)


def _file_response(field_file: Any, *, filename: str, content_type: str) -> FileResponse:
    try:
        handle = field_file.open("rb")
    except OSError as exc:  # the row exists but storage lost the file
        logger.error("stored file missing", extra={"storage_name": field_file.name})
        raise NotFoundError("The file is not available.") from exc
    response = FileResponse(
        handle, as_attachment=True, filename=filename, content_type=content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


_FILE_RESPONSES = {
    (200, "image/png"): OpenApiResponse(
        response=OpenApiTypes.BINARY, description="The PNG file, sent as an attachment."
    )
}
_CASE_ID = OpenApiParameter(
    "uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The case's `id`."
)
_IMAGE_ID = OpenApiParameter(
    "image_id",
    {"type": "integer", "minimum": 1},
    OpenApiParameter.PATH,
    description="The image's `id` (`images[].id` of the case).",
)
_CONTENT_DISPOSITION = OpenApiParameter(
    "Content-Disposition",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200],
    description='`attachment; filename="case-<id>-image-<image_id>[-heatmap].png"`',
)


@extend_schema(tags=["cases"])
class CaseViewSet(ApiViewSet):
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX
    pagination_class = CappedPageNumberPagination
    scopes = {"create": "write", "cancel": "write"}
    throttle_scopes = {"create": "uploads"}
    input_serializers = {"create": s.CaseCreateInputSerializer}

    def _current_action(self) -> str | None:
        # Parsers and renderers are chosen before DRF sets `self.action`.
        if getattr(self, "action", None):
            return self.action
        request = getattr(self, "request", None)
        actions = getattr(self, "action_map", None) or {}
        return actions.get(request.method.lower()) if request is not None else None

    def get_parsers(self):
        if self._current_action() == "create":
            return [
                UploadMultiPartParser()
            ]  # files are sent as parts: urlencoded cannot carry them
        return [JSONParser()]

    def get_renderers(self):
        if self._current_action() in ("image_file", "image_heatmap"):
            return [JSONRenderer(), PngRenderer()]
        return [JSONRenderer()]

    @extend_schema(
        operation_id="cases_list",
        parameters=[s.CaseListFilterSerializer],
        responses=s.CaseListOutputSerializer(many=True),
        summary="List cases visible to the caller",
        description="Cases the caller may see (a clinician their own, a reviewer all), newest "
        "first, one page at a time; filter by status, body part and creation time.",
    )
    def list(self, request: Request) -> Response:
        filters: dict[str, Any] = {}
        # Most list requests only page; building the filter serializer costs 0.2 ms of CPU.
        if not request.query_params.keys().isdisjoint(s.CaseListFilterSerializer._declared_fields):
            serializer = s.CaseListFilterSerializer(data=request.query_params)
            serializer.is_valid(raise_exception=True)
            filters = serializer.validated_data
        qs = api_selectors.api_case_list(user=request.user, **filters)
        page = self.paginate_queryset(qs)
        data = s.CaseListOutputSerializer(page, many=True, context={"request": request}).data
        self.audit("case.list", None, count=len(page or []), page=request.query_params.get("page"))
        return self.get_paginated_response(data)

    @extend_schema(
        operation_id="cases_create",
        request={"multipart/form-data": s.CaseCreateInputSerializer},
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX}}}$",
                },
                OpenApiParameter.HEADER,
                required=False,
                description=f"1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters without spaces "
                "(e.g. a UUID), scoped to the account. A retry with the same key answers 200 "
                "with the case the first request made; the same key with another patient or "
                "body part is refused (`idempotency_key_reused`).",
            )
        ],
        responses={
            202: s.CaseCreatedOutputSerializer,
            200: OpenApiResponse(
                s.CaseCreatedOutputSerializer,
                description="A case with this Idempotency-Key already exists (it is returned).",
            ),
        },
        summary="Create a case from one or more radiographs (multipart)",
        description="Uploads one or more radiographs (PNG, JPEG or DICOM, one `images` part "
        "each) as a new case and queues its prediction. Every file is decoded and re-encoded "
        "before anything is stored; one bad file refuses the whole request. Answers 202 with "
        "the case's `id` and `status_url` to poll.",
    )
    def create(self, request: Request) -> Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        data = s.CaseCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token = request_token(request)
        # The service answers a reused key with the first case (was_created False), also when a
        # concurrent request won the race, and refuses a key reused for a different request (422).
        case = case_create(
            user=request.user,
            patient_ref=data.validated_data["patient_ref"],
            body_part=data.validated_data["body_part"],
            clinical_question=data.validated_data.get("clinical_question", ""),
            files=data.validated_data["images"],
            source=Case.Source.API,
            api_client=token.client if token is not None else None,
            idempotency_key=key,
            urgent=data.validated_data.get("urgent", False),
            request=request,  # the audit row's client address and token
        )
        replayed = not getattr(case, "was_created", True)
        if replayed:
            self.audit("case.replay", case)  # case_create audits the creation itself
        logger.info("api case created", extra={"case_id": case.pk, "replayed": replayed})
        body = s.CaseCreatedOutputSerializer(
            case, context={"request": request, "replayed": replayed}
        ).data
        return Response(body, status=status.HTTP_200_OK if replayed else status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="cases_retrieve",
        parameters=[_CASE_ID],
        responses=s.CaseDetailOutputSerializer,
        summary="A case and its results",
        description="The case with, per image, the model's prediction (probability, label at the "
        "operating point, heat-map URL) and the radiologists' reads. Poll it until `status` "
        "is `predicted` (or `failed`, `cancelled`), or use a webhook.",
    )
    def retrieve(self, request: Request, uuid: str) -> Response:
        detail = api_selectors.api_case_detail(user=request.user, case_uuid=uuid)
        self.audit("case.view", detail.case)
        return Response(s.CaseDetailOutputSerializer(detail, context={"request": request}).data)

    @extend_schema(
        operation_id="cases_cancel",
        parameters=[_CASE_ID],
        request=None,
        responses=s.CaseDetailOutputSerializer,
        summary="Cancel a pending case",
        description="Cancels a case that is not reviewed yet (a reviewed case answers 409 "
        "`invalid_state`) and answers the case.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, uuid: str) -> Response:
        case = api_selectors.api_case_get(user=request.user, case_uuid=uuid)
        case_cancel(case=case, user=request.user, request=request)
        detail = api_selectors.api_case_detail(user=request.user, case_uuid=uuid)
        return Response(s.CaseDetailOutputSerializer(detail, context={"request": request}).data)

    @extend_schema(
        operation_id="cases_image_download",
        parameters=[_CASE_ID, _IMAGE_ID, _CONTENT_DISPOSITION],
        responses=_FILE_RESPONSES,
        summary="Download an image (canonical PNG)",
        description="The image as stored after upload: a grayscale PNG (DICOM and JPEG "
        "uploads are converted), as an attachment. Errors are JSON.",
    )
    @action(detail=True, methods=["get"], url_path=r"images/(?P<image_id>[0-9]{1,18})/file")
    def image_file(self, request: Request, uuid: str, image_id: str) -> FileResponse:
        image = api_selectors.api_image_get(
            user=request.user, case_uuid=uuid, image_id=int(image_id)
        )
        self.audit("image.download", image.case, image_id=image.pk)
        return _file_response(
            image.file, filename=f"case-{uuid}-image-{image.pk}.png", content_type="image/png"
        )

    @extend_schema(
        operation_id="cases_heatmap_download",
        parameters=[_CASE_ID, _IMAGE_ID, _CONTENT_DISPOSITION],
        responses=_FILE_RESPONSES,
        summary="Download an image's Grad-CAM heat-map (RGBA PNG; localisation is approximate)",
        description="The Grad-CAM heat-map of the image's prediction, an RGBA PNG overlay of "
        "the image's size, as an attachment; 404 until the prediction is done. Errors are JSON.",
    )
    @action(detail=True, methods=["get"], url_path=r"images/(?P<image_id>[0-9]{1,18})/heatmap")
    def image_heatmap(self, request: Request, uuid: str, image_id: str) -> FileResponse:
        prediction = api_selectors.api_heatmap_prediction_get(
            user=request.user, case_uuid=uuid, image_id=int(image_id)
        )
        self.audit("heatmap.download", prediction.image.case, image_id=prediction.image_id)
        return _file_response(
            prediction.heatmap,
            filename=f"case-{uuid}-image-{prediction.image_id}-heatmap.png",
            content_type="image/png",
        )


@extend_schema(tags=["models"])
class ModelVersionViewSet(ApiViewSet):
    lookup_field = "version"
    lookup_value_regex = r"[A-Za-z0-9._-]{1,64}"
    pagination_class = CappedPageNumberPagination
    scopes = {"list": "admin", "retrieve": "admin", "activate": "admin", "rollback": "admin"}

    @extend_schema(
        operation_id="models_list",
        responses=s.ModelVersionOutputSerializer(many=True),
        summary="Model versions",
        description="Every registered model version with its status, thresholds and metrics.",
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(model_version_list())
        return self.get_paginated_response(s.ModelVersionOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="models_retrieve",
        responses=s.ModelVersionOutputSerializer,
        summary="A model version",
        description="One model version with its thresholds, input specification and metrics.",
    )
    def retrieve(self, request: Request, version: str) -> Response:
        version_obj = api_selectors.api_model_version_get(version=version)
        return Response(s.ModelVersionOutputSerializer(version_obj).data)

    @extend_schema(
        operation_id="models_activate",
        request=None,
        responses=s.ModelVersionOutputSerializer,
        summary="Activate a model version (the active one is retired)",
        description="Makes this version the one new predictions use; the active one is retired.",
    )
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, version: str) -> Response:
        version_obj = api_selectors.api_model_version_get(version=version)
        activated = model_version_activate(
            version=version_obj, user=request.user, reason="manual", request=request
        )
        return Response(s.ModelVersionOutputSerializer(activated).data)

    @extend_schema(
        operation_id="models_rollback",
        request=None,
        responses=s.ModelVersionOutputSerializer,
        summary="Roll back to the previously active model version",
        description="Re-activates the version that was active before the current one (409 "
        "`no_previous_version` when there is none).",
    )
    @action(detail=False, methods=["post"])
    def rollback(self, request: Request) -> Response:
        activated = model_version_rollback(user=request.user, request=request)
        return Response(s.ModelVersionOutputSerializer(activated).data)


@extend_schema(tags=["review"])
class ReviewQueueViewSet(ApiViewSet):
    pagination_class = CappedPageNumberPagination
    scopes = {"list": "review"}

    @extend_schema(
        operation_id="review_queue_list",
        parameters=[s.ReviewQueueFilterSerializer],
        responses=s.ReviewQueueItemOutputSerializer(many=True),
        summary="Cases waiting for a read this account may do, most urgent first",
        description="The review queue: cases waiting for a first read, a second read or an "
        "adjudication that this account may do, most urgent first, with who holds a claim.",
    )
    def list(self, request: Request) -> Response:
        filters = s.ReviewQueueFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queue = review_queue(user=request.user, filters=QueueFilters(**filters.validated_data))
        page = review_queue_rows(self.paginate_queryset(queue) or [])
        data = s.ReviewQueueItemOutputSerializer(page, many=True, context={"request": request}).data
        self.audit("review.queue", None, count=len(page or []))
        return self.get_paginated_response(data)


@extend_schema(tags=["review"])
class ReviewCaseViewSet(ApiViewSet):
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX
    scopes = {"claim": "review", "release": "review", "reads": "review"}
    input_serializers = {"reads": s.ReviewSubmitInputSerializer}

    def _case(self, uuid: str) -> Case:
        try:
            case_uuid = uuid_lib.UUID(uuid)
        except ValueError as exc:
            raise NotFoundError("Case not found.") from exc
        return review_case_get(user=self.request.user, case_uuid=case_uuid)

    @extend_schema(
        operation_id="review_claim",
        parameters=[_CASE_ID],
        request=None,
        responses=s.ClaimOutputSerializer,
        summary="Claim a case for the read it waits for (or renew your claim)",
        description="Claims the case for the read it waits for, until `claim_expires_at`; "
        "claiming again renews it. A claim held by someone else answers 409 "
        "`claimed_by_other`.",
    )
    @action(detail=True, methods=["post"])
    def claim(self, request: Request, uuid: str) -> Response:
        case = review_claim(case=self._case(uuid), user=request.user, request=request)
        return Response(s.ClaimOutputSerializer(case, context={"request": request}).data)

    @extend_schema(
        operation_id="review_release",
        parameters=[_CASE_ID],
        request=None,
        responses=s.ClaimOutputSerializer,
        summary="Give a claim back",
        description="Releases your claim so that another reviewer can take the case.",
    )
    @action(detail=True, methods=["post"])
    def release(self, request: Request, uuid: str) -> Response:
        case = review_release(case=self._case(uuid), user=request.user, request=request)
        return Response(s.ClaimOutputSerializer(case, context={"request": request}).data)

    @extend_schema(
        operation_id="review_reads_submit",
        parameters=[_CASE_ID],
        request=s.ReviewSubmitInputSerializer,
        responses=s.CaseDetailOutputSerializer,
        summary="Submit your read of every image of a claimed case",
        description="One decision per image (`confirm` the model's label or `correct` it, with "
        "an optional region and comment) for the case you claimed; answers the case, "
        "`reviewed` or waiting for its next read. Without a claim: 409 `claim_required`.",
    )
    @action(detail=True, methods=["post"])
    def reads(self, request: Request, uuid: str) -> Response:
        data = s.ReviewSubmitInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reads = [ImageRead(**read) for read in data.validated_data["reads"]]
        review_submit(case=self._case(uuid), user=request.user, reads=reads, request=request)
        detail = api_selectors.api_case_detail(user=request.user, case_uuid=uuid)
        return Response(s.CaseDetailOutputSerializer(detail, context={"request": request}).data)


def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/v1/ answer 404 in the API's error format, not an HTML page."""
    response = JsonResponse(
        {"code": "not_found", "message": "No such API endpoint.", "extra": {}}, status=404
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
