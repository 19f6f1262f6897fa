"""REST API for retraining (scope `admin`): start a training run, follow it, cancel it.

POST /api/v1/training/runs/ {"config": {...}} -> 202 with the queued run; a second trigger while a
run is queued or running answers 409 `training_in_progress`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis.api.views import ApiViewSet, CappedPageNumberPagination
from diagnosis.models import TrainingRun
from diagnosis.selectors.training import training_run_get, training_run_list
from diagnosis.services.training import training_run_cancel, training_run_start


class TrainingRunInputSerializer(serializers.Serializer):
    config = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)


_RUN_ID = OpenApiParameter(
    "id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH, description="The run's `id`."
)


class TrainingRunOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices)
    trigger = serializers.ChoiceField(choices=TrainingRun.Trigger.choices)
    config = serializers.DictField(child=serializers.JSONField())
    progress = serializers.DictField(child=serializers.JSONField())
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()
    snapshot = serializers.CharField(source="snapshot.version", allow_null=True, default=None)
    result_version = serializers.CharField(
        source="result_version.version", allow_null=True, default=None
    )
    decision = serializers.DictField(child=serializers.JSONField())
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)


@extend_schema(tags=["models"])
class TrainingRunViewSet(ApiViewSet):
    pagination_class = CappedPageNumberPagination
    lookup_value_regex = r"[0-9]{1,12}"
    scopes = {"list": "admin", "retrieve": "admin", "create": "admin", "cancel": "admin"}
    input_serializers = {"create": TrainingRunInputSerializer}

    def _run(self, pk: Any) -> TrainingRun:
        return training_run_get(run_id=int(pk))  # NotFoundError -> 404

    @extend_schema(
        operation_id="training_runs_list",
        responses=TrainingRunOutputSerializer(many=True),
        summary="Training runs",
        description="Training runs, newest first, with their status and progress.",
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(training_run_list())
        return self.get_paginated_response(TrainingRunOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="training_runs_retrieve",
        parameters=[_RUN_ID],
        responses=TrainingRunOutputSerializer,
        summary="A training run and its progress",
        description="One training run: status, progress, the resulting model version and the "
        "promotion decision.",
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(TrainingRunOutputSerializer(self._run(pk)).data)

    @extend_schema(
        request=TrainingRunInputSerializer,
        responses={202: TrainingRunOutputSerializer},
        summary="Start a training run (one at a time)",
        operation_id="training_runs_create",
        description="Queues a retraining run on the reviewed cases; while another run is queued "
        "or running: 409 `training_in_progress`.",
    )
    def create(self, request: Request) -> Response:
        data = TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = training_run_start(
            trigger=TrainingRun.Trigger.API,
            user=request.user,
            config=data.validated_data["config"],
            request=request,
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="training_runs_cancel",
        parameters=[_RUN_ID],
        request=None,
        responses=TrainingRunOutputSerializer,
        summary="Cancel a run",
        description="Asks a queued or running training run to stop.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = training_run_cancel(run=self._run(pk), user=request.user, request=request)
        return Response(TrainingRunOutputSerializer(run).data)
