"""Case reads, scoped to what the user may see (clinicians: their own; readers/admins: all)."""

from __future__ import annotations

import uuid as uuid_lib

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from diagnosis.exceptions import NotFoundError
from diagnosis.models import Case


def user_sees_all_cases(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.has_perm("diagnosis.view_all_cases"))


def case_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    status: str | None = None,
    body_part: str | None = None,
    patient_ref: str = "",
) -> QuerySet[Case]:
    """Newest first. `patient_ref` matches case-insensitively from the start of the reference."""
    if not user.is_authenticated:
        return Case.objects.none()
    qs = Case.objects.select_related("created_by").order_by("-created_at", "-pk")
    if not user_sees_all_cases(user):
        qs = qs.filter(created_by=user)
    if status:
        qs = qs.filter(status=status)
    if body_part:
        qs = qs.filter(body_part=body_part)
    if patient_ref:
        qs = qs.filter(patient_ref__istartswith=patient_ref)
    return qs


def case_get(*, user: AbstractBaseUser | AnonymousUser, case_uuid: uuid_lib.UUID | str) -> Case:
    """The case if the user may see it; NotFoundError otherwise (foreign objects answer 404)."""
    try:
        return case_list(user=user).prefetch_related("images").get(uuid=case_uuid)
    except (Case.DoesNotExist, ValueError) as exc:
        raise NotFoundError("Case not found.") from exc
