from typing import Any

from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, Any]:
    """Role flags for navigation (the views enforce access; this only decides what to show)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"is_radiologist": False, "is_model_admin": False}
    return {
        "is_radiologist": user.has_perm("diagnosis.review_case"),
        "is_model_admin": user.has_perm("diagnosis.manage_models"),
    }
