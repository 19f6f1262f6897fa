"""Clinician-facing pages: cases (list, intake, detail, image files)."""

from django.urls import path

from diagnosis.views import cases

app_name = "diagnosis"

urlpatterns = [
    path("", cases.case_list_view, name="case_list"),
    path("cases/<uuid:case_uuid>/", cases.case_detail_view, name="case_detail"),
    path("cases/<uuid:case_uuid>/cancel/", cases.case_cancel_view, name="case_cancel"),
]
