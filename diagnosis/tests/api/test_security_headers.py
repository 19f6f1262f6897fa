"""Issue #13, point 6: no-store on patient data, X-Forwarded-Proto only from the trusted proxy, a CSP
on the API docs, and JSON errors everywhere under /api/."""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.test import Client
from django.urls import reverse

from diagnosis.api import views as api_views
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(clinician):
    case = factories.CaseFactory(created_by=clinician, status="predicted")
    factories.XrayImageFactory(case=case, position=0)
    return case


def _no_store(response) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_patient_data_pages_and_api_answers_are_no_store(
    clinician, client_for, case, issue_token, bearer
):
    web = client_for(clinician)
    for url in (
        reverse("diagnosis:case_list"),
        reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid}),
    ):
        response = web.get(url)
        assert response.status_code == 200
        assert _no_store(response), url
    raw, _ = issue_token(clinician, ["read"])
    api = bearer(raw)
    for url in ("/api/v1/cases/", f"/api/v1/cases/{case.uuid}/"):
        response = api.get(url)
        assert response.status_code == 200
        assert _no_store(response), url
        assert "private" in response["Cache-Control"]


def test_forwarded_proto_counts_only_from_the_trusted_proxy(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.TRUSTED_PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)
    https = {"HTTP_X_FORWARDED_PROTO": "https"}
    # A client claiming HTTPS is redirected to HTTPS: its header was dropped.
    spoofed = Client(REMOTE_ADDR="203.0.113.5").get("/healthz", **https)
    assert spoofed.status_code == 301
    assert spoofed["Location"].startswith("https://")
    # The proxy's word counts.
    assert Client(REMOTE_ADDR="10.1.2.3").get("/healthz", **https).status_code == 200
    assert Client(REMOTE_ADDR="::ffff:10.1.2.3").get("/healthz", **https).status_code == 200


def test_api_docs_have_a_csp_without_inline_script(clinician, client_for):
    client = client_for(clinician)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]*)", policy).group(1)
    assert script_src.strip() == "'self'"
    assert "frame-ancestors 'none'" in policy
    html = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts
    assert all("src=" in attributes for attributes in scripts)  # nothing inline for CSP to refuse
    start = re.search(r'<script src="([^"]*script=[^"]*)"', html).group(1).replace("&amp;", "&")
    boot = client.get(start)
    assert boot.status_code == 200
    assert "SwaggerUIBundle" in boot.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nothing-here/",
        "/api/v1/cases/not-a-uuid/",
        "/api/v1/cases/123/images/x/file/",
        "/api/v2/cases/",  # outside v1: the site's 404 handler
        "/api/nothing",
    ],
)
def test_unknown_api_urls_answer_json(clinician, client_for, path):
    for client in (Client(), client_for(clinician)):
        response = client.get(path)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {
            "code": "not_found",
            "message": "No such API endpoint.",
            "extra": {},
        }
    assert "text/html" in client_for(clinician).get("/nothing-here/")["Content-Type"]


def test_server_errors_under_the_api_answer_json(
    clinician, issue_token, bearer, settings, monkeypatch
):
    settings.DEBUG = False

    def broken(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api_views.CaseViewSet, "list", broken)
    raw, _ = issue_token(clinician, ["read"])
    api = bearer(raw)
    api.raise_request_exception = False
    response = api.get("/api/v1/cases/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "server_error"
    assert "boom" not in response.content.decode()


def test_csrf_failures_under_the_api_answer_json(clinician):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    response = client.post("/api/v1/cases/", {"patient_ref": "PSN-1"})
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] in ("permission_denied", "csrf_failed")
