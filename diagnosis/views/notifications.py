"""In-app notifications: the list (with the cases they point at) and marking them read."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

from diagnosis.exceptions import NotFoundError
from diagnosis.selectors.notifications import notification_list
from diagnosis.services.notifications import notification_mark_all_read, notification_mark_read


@login_required
@require_safe
def notification_list_view(request: HttpRequest) -> HttpResponse:
    page = Paginator(notification_list(user=request.user), 25).get_page(request.GET.get("page"))
    return render(request, "review/notifications.html", {"page": page})


@login_required
@require_POST
def notification_read_view(request: HttpRequest, notification_id: int) -> HttpResponse:
    try:
        notification = notification_mark_read(user=request.user, notification_id=notification_id)
    except NotFoundError as exc:
        raise Http404("Notification not found") from exc
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    if notification.case_id is not None and request.POST.get("open"):
        return redirect("diagnosis:case_detail", case_uuid=notification.case.uuid)
    return redirect("review:notifications")


@login_required
@require_POST
def notification_read_all_view(request: HttpRequest) -> HttpResponse:
    notification_mark_all_read(user=request.user)
    return redirect("review:notifications")
