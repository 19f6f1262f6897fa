"""The API token page: a user's API clients, their tokens and webhook, and the delivery log.

Secrets (a new token, a new webhook signing secret) appear once, in the answer to the POST that
made them (never stored in the session, never sent again, `Cache-Control: no-store`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from diagnosis.exceptions import DomainError, NotFoundError
from diagnosis.models import ApiToken
from diagnosis.selectors.api import (
    api_client_get,
    api_client_list,
    api_token_get,
    webhook_delivery_list,
)
from diagnosis.services.tokens import (
    MAX_TOKEN_DAYS,
    api_client_create,
    api_client_rotate_webhook_secret,
    api_client_set_webhook,
    api_token_create,
    api_token_revoke,
    scopes_allowed_for,
)


class ClientForm(forms.Form):
    name = forms.CharField(max_length=100)
    webhook_url = forms.URLField(max_length=500, required=False, assume_scheme="https")


class WebhookForm(forms.Form):
    client = forms.IntegerField(min_value=1)
    webhook_url = forms.URLField(max_length=500, required=False, assume_scheme="https")


class TokenForm(forms.Form):
    client = forms.IntegerField(min_value=1)
    name = forms.CharField(max_length=100, required=False)
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple
    )
    expires_in_days = forms.IntegerField(min_value=1, max_value=MAX_TOKEN_DAYS, initial=90)


class IdForm(forms.Form):
    id = forms.IntegerField(min_value=1)


def _page(request: HttpRequest, *, status: int = 200, **extra: Any) -> HttpResponse:
    allowed = scopes_allowed_for(user=request.user)
    token_form = extra.pop("token_form", None) or TokenForm(initial={"scopes": ["read"]})
    token_form.fields["scopes"].choices = [
        (value, label) for value, label in ApiToken.Scope.choices if value in allowed
    ]
    context = {
        "clients": api_client_list(user=request.user),
        "deliveries": webhook_delivery_list(user=request.user),
        "client_form": extra.pop("client_form", None) or ClientForm(),
        "token_form": token_form,
        "now": timezone.now(),
        **extra,
    }
    return render(request, "tokens/token_list.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list_view(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    action = request.POST.get("action", "")
    handler = _ACTIONS.get(action)
    if handler is None:
        messages.error(request, "Unknown action.")
        return redirect("tokens:token_list")
    try:
        return handler(request)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    except DomainError as exc:
        messages.error(request, exc.message)
        return _page(request, status=400)


def _create_client(request: HttpRequest) -> HttpResponse:
    form = ClientForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, client_form=form)
    client = api_client_create(
        user=request.user,
        name=form.cleaned_data["name"],
        webhook_url=form.cleaned_data["webhook_url"],
        request=request,
    )
    return _page(request, new_secret={"client": client, "secret": client.webhook_secret})


def _set_webhook(request: HttpRequest) -> HttpResponse:
    form = WebhookForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter a valid http(s) URL.")
        return _page(request, status=400)
    client = api_client_get(user=request.user, client_id=form.cleaned_data["client"])
    api_client_set_webhook(
        client=client,
        user=request.user,
        webhook_url=form.cleaned_data["webhook_url"],
        request=request,
    )
    messages.success(request, f"Webhook of {client.name} saved.")
    return redirect("tokens:token_list")


def _rotate_secret(request: HttpRequest) -> HttpResponse:
    form = IdForm(request.POST)
    if not form.is_valid():
        return redirect("tokens:token_list")
    client = api_client_get(user=request.user, client_id=form.cleaned_data["id"])
    secret = api_client_rotate_webhook_secret(client=client, user=request.user, request=request)
    return _page(request, new_secret={"client": client, "secret": secret})


def _create_token(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    form.fields["scopes"].choices = [
        (v, label)
        for v, label in ApiToken.Scope.choices
        if v in scopes_allowed_for(user=request.user)
    ]
    if not form.is_valid():
        return _page(request, status=400, token_form=form)
    client = api_client_get(user=request.user, client_id=form.cleaned_data["client"])
    token, raw = api_token_create(
        client=client,
        user=request.user,
        scopes=form.cleaned_data["scopes"],
        expires_at=timezone.now() + timedelta(days=form.cleaned_data["expires_in_days"]),
        name=form.cleaned_data["name"],
        request=request,
    )
    return _page(request, new_token={"token": token, "raw": raw})


def _revoke_token(request: HttpRequest) -> HttpResponse:
    form = IdForm(request.POST)
    if not form.is_valid():
        return redirect("tokens:token_list")
    token = api_token_get(user=request.user, token_id=form.cleaned_data["id"])
    api_token_revoke(token=token, user=request.user, request=request)
    messages.success(request, f"Token {token.prefix}… revoked.")
    return redirect("tokens:token_list")


_ACTIONS = {
    "create_client": _create_client,
    "set_webhook": _set_webhook,
    "rotate_secret": _rotate_secret,
    "create_token": _create_token,
    "revoke_token": _revoke_token,
}
