"""The API token page (for every signed-in user)."""

from django.urls import path

from diagnosis.views import tokens

app_name = "tokens"

urlpatterns = [
    path("", tokens.token_list_view, name="token_list"),
]
