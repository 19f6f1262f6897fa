"""Admin pages: model registry, dataset snapshots and training runs."""

from django.urls import path

from diagnosis.views import registry

app_name = "registry"

urlpatterns = [
    path("", registry.registry_index, name="index"),
    path("runs/start/", registry.run_start, name="run_start"),
    path("runs/<int:run_id>/", registry.run_detail, name="run_detail"),
    path("runs/<int:run_id>/status.json", registry.run_status, name="run_status"),
    path("runs/<int:run_id>/cancel/", registry.run_cancel, name="run_cancel"),
    path("versions/<int:version_id>/", registry.version_detail, name="version_detail"),
    path("versions/<int:version_id>/activate/", registry.version_activate, name="version_activate"),
    path("versions/<int:version_id>/reject/", registry.version_reject, name="version_reject"),
    path(
        "versions/<int:version_id>/plots/<slug:name>.png",
        registry.version_plot,
        name="version_plot",
    ),
    path("rollback/", registry.rollback, name="rollback"),
    path("repredict/", registry.repredict, name="repredict"),
    path("snapshots/new/", registry.snapshot_new, name="snapshot_new"),
    path("snapshots/<int:snapshot_id>/", registry.snapshot_detail, name="snapshot_detail"),
    path(
        "snapshots/<int:snapshot_id>/export.zip",
        registry.snapshot_download,
        name="snapshot_export",
    ),
]
