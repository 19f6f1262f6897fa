"""Admin pages: model registry, dataset snapshots, training runs, API clients and tokens."""

app_name = "registry"

urlpatterns: list = []
