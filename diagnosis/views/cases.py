from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from diagnosis.exceptions import NotFoundError
from diagnosis.models import Case
from diagnosis.selectors.cases import case_get, case_list
from diagnosis.services.audit import audit_record


@login_required
def case_list_view(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    if status not in Case.Status.values:
        status = None
    page = Paginator(case_list(user=request.user, status=status), 25).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "diagnosis/case_list.html",
        {"page": page, "status": status, "statuses": Case.Status.choices},
    )


@login_required
def case_detail_view(request: HttpRequest, case_uuid: str) -> HttpResponse:
    try:
        case = case_get(user=request.user, case_uuid=case_uuid)
    except NotFoundError as exc:
        raise Http404("Case not found") from exc
    audit_record(action="case.view", request=request, obj=case)
    return render(request, "diagnosis/case_detail.html", {"case": case})
