"""Template helpers of the review workflow: the notification badge, the clinician's review result."""

from __future__ import annotations

import json
from typing import Any

from django import template

from diagnosis.models import Case
from diagnosis.selectors.notifications import notification_unread_count
from diagnosis.selectors.reads import reader_display_name
from diagnosis.selectors.reviews import case_review_summary

register = template.Library()


@register.simple_tag(takes_context=True)
def unread_notification_count(context: template.Context) -> int:
    """Unread notifications of the signed-in user (one indexed COUNT; 0 when signed out)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 0
    return notification_unread_count(user=user)


@register.simple_tag
def review_summary(case: Case) -> dict[str, Any] | None:
    """The finished review of a case, for the case page; None while it is not reviewed."""
    if not isinstance(case, Case):
        return None
    return case_review_summary(case=case)


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def to_json(value: Any) -> str:
    """JSON text for a data- attribute (autoescaping makes it attribute-safe)."""
    return json.dumps(value)


@register.filter
def reader_name(user: Any) -> str:
    """A reader as shown on cases: full name, else "Reader <id>" (never the sign-in name)."""
    if user is None:
        return ""
    return reader_display_name(
        first_name=getattr(user, "first_name", ""),
        last_name=getattr(user, "last_name", ""),
        user_id=getattr(user, "pk", None),
    )
