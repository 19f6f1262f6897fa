"""REST API v1 for telemedicine apps."""

from rest_framework.routers import SimpleRouter

from diagnosis.api import views

app_name = "api"

router = SimpleRouter()
router.register("cases", views.CaseViewSet, basename="case")
router.register("models", views.ModelVersionViewSet, basename="model-version")

urlpatterns = router.urls
