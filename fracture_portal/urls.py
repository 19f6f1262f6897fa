from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from diagnosis.views import accounts as account_views
from diagnosis.views import health


class FaviconView(RedirectView):
    """/favicon.ico -> the static icon, resolved per request (hashed name once collected)."""

    permanent = True

    def get_redirect_url(self, *args: object, **kwargs: object) -> str:
        return static("img/favicon.svg")


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    # Browsers and bookmark tools probe /favicon.ico on pages that name no icon (Swagger UI).
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("accounts/login/", account_views.PortalLoginView.as_view(), name="login"),
    path("accounts/logout/", account_views.PortalLogoutView.as_view(), name="logout"),
    # Before admin.site.urls: the admin signs in through the throttled, audited portal login.
    path("admin/login/", account_views.admin_login_redirect, name="admin-login-redirect"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    # No OPTIONS metadata: the page renders through an HTML template that has none (405).
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", metadata_class=None),
        name="api-docs",
    ),
    path("api/v1/", include("diagnosis.api.urls")),
    path("tokens/", include("diagnosis.urls_tokens")),
    path("review/", include("diagnosis.urls_review")),
    path("registry/", include("diagnosis.urls_registry")),
    path("", include("diagnosis.urls")),
]

# Under /api/ these answer JSON in the API's error format (diagnosis.views.errors).
handler400 = "diagnosis.views.errors.bad_request"
handler403 = "diagnosis.views.errors.permission_denied"
handler404 = "diagnosis.views.errors.page_not_found"
handler500 = "diagnosis.views.errors.server_error"
