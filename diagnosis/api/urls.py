"""REST API v1 for telemedicine apps."""

app_name = "api"

urlpatterns: list = []
