"""Webhooks: recorded once per event, dispatched after commit, signed, retried on 5xx and network
errors (not 4xx), SSRF-guarded. A real HTTP server on 127.0.0.1 receives the deliveries."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from diagnosis.models import AuditEvent, WebhookDelivery
from diagnosis.services.tokens import api_client_create
from diagnosis.services.webhooks import (
    InvalidWebhookUrlError,
    webhook_notify,
    webhook_sign,
    webhook_url_validate,
    webhook_verify,
)
from diagnosis.tasks.webhooks import webhook_backoff_seconds, webhook_deliver
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db


class Receiver:
    """A loopback HTTP server answering with the queued status codes (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"headers": dict(self.headers), "body": body, "at": time.monotonic()}
                )
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _api_case(user, url: str):
    client = api_client_create(user=user, name="tele", webhook_url=url)
    case = factories.CaseFactory(created_by=user, api_client=client, status="predicted")
    factories.PredictionFactory(image=factories.XrayImageFactory(case=case))
    return client, case


def test_notify_records_once_and_dispatches_after_commit(
    clinician, django_capture_on_commit_callbacks
):
    _, case = _api_case(clinician, "http://127.0.0.1:9/hook")
    with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay") as delay:
        with django_capture_on_commit_callbacks() as callbacks:
            first = webhook_notify(case=case, event="case.predicted")
            again = webhook_notify(case=case, event="case.predicted")
        delay.assert_not_called()
        for callback in callbacks:
            callback()
    delay.assert_called_once_with(first.pk)
    assert again.pk == first.pk
    assert WebhookDelivery.objects.count() == 1
    payload = first.payload
    assert payload["event"] == "case.predicted"
    assert payload["case"]["id"] == str(case.uuid)
    assert payload["case"]["images"][0]["prediction"]["probability"] == 0.8


def test_notify_without_client_or_url_does_nothing(clinician):
    case = factories.CaseFactory(created_by=clinician)
    assert webhook_notify(case=case, event="case.predicted") is None
    client = api_client_create(user=clinician, name="no-hook")
    case = factories.CaseFactory(created_by=clinician, api_client=client)
    assert webhook_notify(case=case, event="case.reviewed") is None
    assert not WebhookDelivery.objects.exists()


def test_delivery_is_signed_and_retried_after_a_500(clinician):
    with Receiver([500]) as receiver:
        client, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        result = webhook_deliver.apply(args=[delivery.pk])  # in-process, retries run eagerly
    assert result.successful()
    assert len(receiver.requests) == 2
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempts == 2
    assert delivery.last_status_code == 200
    assert delivery.delivered_at is not None
    event = AuditEvent.objects.get(action="webhook.deliver")  # one row, for the final outcome
    assert (event.object_id, event.outcome) == (str(case.uuid), "success")
    assert event.extra["attempts"] == 2
    for request in receiver.requests:
        headers, body = request["headers"], request["body"]
        assert headers["X-Fracture-Event"] == "case.predicted"
        assert headers["Content-Type"] == "application/json"
        assert webhook_verify(
            secret=client.webhook_secret, body=body, header=headers["X-Fracture-Signature"]
        )
        assert not webhook_verify(secret="wrong", body=body, header=headers["X-Fracture-Signature"])
        assert not webhook_verify(
            secret=client.webhook_secret, body=body + b" ", header=headers["X-Fracture-Signature"]
        )
        assert json.loads(body)["case"]["id"] == str(case.uuid)


def test_signature_format_and_staleness():
    header = webhook_sign(secret="s3cret", body=b"{}", timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert webhook_verify(secret="s3cret", body=b"{}", header=header, now=1_700_000_100)
    assert not webhook_verify(secret="s3cret", body=b"{}", header=header, now=1_700_001_000)
    assert not webhook_verify(secret="s3cret", body=b"{}", header="garbage")


def test_4xx_is_final_and_not_retried(clinician):
    with Receiver([410]) as receiver:
        _, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.reviewed")
        webhook_deliver.apply(args=[delivery.pk])
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_status_code == 410
    assert delivery.attempts == 1
    assert AuditEvent.objects.get(action="webhook.deliver").outcome == "failure"


def test_gives_up_after_max_attempts(clinician, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with Receiver([503, 503, 503, 503]) as receiver:
        _, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        webhook_deliver.apply(args=[delivery.pk])
    assert len(receiver.requests) == 3
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 3
    assert delivery.last_error == "HTTP 503"


def test_network_error_is_retried(clinician, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    _, case = _api_case(clinician, "http://127.0.0.1:9/closed")  # discard port: refused
    with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
        delivery = webhook_notify(case=case, event="case.predicted")
    webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 2
    assert "ConnectionError" in delivery.last_error


def test_redelivered_task_does_not_post_twice(clinician):
    with Receiver([]) as receiver:
        _, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        webhook_deliver.apply(args=[delivery.pk])
        webhook_deliver.apply(args=[delivery.pk])
    assert len(receiver.requests) == 1


def test_backoff_grows_exponentially_and_is_capped(settings):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 10
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 600
    delays = [webhook_backoff_seconds(n) for n in range(8)]
    assert 8 <= delays[0] <= 12
    assert 32 <= delays[2] <= 48
    assert all(d <= 720 for d in delays)
    assert delays[7] >= 480


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://user:pw@example.org/",
        "http:///nohost",
        "http://example.org:99999/",
        "http://x\x00y/",
    ],
)
def test_only_http_urls_are_accepted(url):
    with pytest.raises(InvalidWebhookUrlError):
        webhook_url_validate(url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0.0.0.0/",
    ],
)
def test_private_targets_are_refused_in_production(settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(InvalidWebhookUrlError):
        webhook_url_validate(url=url)


def test_delivery_to_a_private_target_fails_without_a_request_in_production(clinician, settings):
    with Receiver([]) as receiver:
        _, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
        webhook_deliver.apply(args=[delivery.pk])
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "private" in delivery.last_error
