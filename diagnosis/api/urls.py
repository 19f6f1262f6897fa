"""REST API v1 for telemedicine apps."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from diagnosis.api import training, views

app_name = "api"

router = SimpleRouter()
router.register("cases", views.CaseViewSet, basename="case")
router.register("models", views.ModelVersionViewSet, basename="model-version")
router.register("training/runs", training.TrainingRunViewSet, basename="training-run")
router.register("review/queue", views.ReviewQueueViewSet, basename="review-queue")
router.register("review/cases", views.ReviewCaseViewSet, basename="review-case")

urlpatterns = [
    *router.urls,
    # Last: anything else under /api/v1/ is a 404 in the API's error format.
    re_path(r"^.*$", views.api_not_found, name="not-found"),
]
