"""Clinician-facing pages: cases (list, intake, detail, image files)."""

from django.urls import path

from diagnosis.views import cases, intake, results

app_name = "diagnosis"

urlpatterns = [
    path("", cases.case_list_view, name="case_list"),
    path("cases/new/", intake.case_new_view, name="case_new"),
    path("cases/<uuid:case_uuid>/", cases.case_detail_view, name="case_detail"),
    path(
        "cases/<uuid:case_uuid>/images/<int:pk>/file",
        intake.image_file_view,
        name="image_file",
    ),
    path(
        "cases/<uuid:case_uuid>/images/<int:pk>/depth",
        intake.image_depth_view,
        name="image_depth",
    ),
    path(
        "cases/<uuid:case_uuid>/images/<int:pk>/view",
        cases.case_image_viewer_view,
        name="image_viewer",
    ),
    path("cases/<uuid:case_uuid>/cancel/", cases.case_cancel_view, name="case_cancel"),
    path("cases/<uuid:case_uuid>/status", results.case_status_view, name="case_status"),
    path(
        "cases/<uuid:case_uuid>/images/<int:pk>/heatmap",
        results.heatmap_file_view,
        name="heatmap_file",
    ),
    path("cases/<uuid:case_uuid>/retry", results.case_retry_view, name="case_retry"),
]
