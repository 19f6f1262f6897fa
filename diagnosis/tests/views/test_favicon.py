"""The portal names its icon, so browsers' /favicon.ico probe never ends in a 404."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_favicon_probe_redirects_to_the_static_icon_without_signing_in(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/img/favicon.svg")
    assert finders.find("img/favicon.svg")


def test_pages_name_the_icon(client):
    page = client.get(reverse("login")).content.decode()
    assert 'rel="icon"' in page
    assert "img/favicon.svg" in page
