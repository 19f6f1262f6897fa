"""Webhooks: recorded once per event, dispatched after commit, signed, retried on 5xx and network
errors (not 4xx), SSRF-guarded, pinned to the vetted address (no DNS rebinding), or sent through
WEBHOOK_PROXY_URL (never the environment's proxy). A real HTTP server on 127.0.0.1 receives the
deliveries, through a real forward proxy on 127.0.0.1 where one is configured."""

from __future__ import annotations

import datetime
import errno
import http.client
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from urllib.parse import urlsplit

import pytest
import requests
import urllib3.util.connection
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

from diagnosis.models import AuditEvent, WebhookDelivery
from diagnosis.services import webhooks
from diagnosis.services.tokens import api_client_create
from diagnosis.services.webhooks import (
    InvalidWebhookUrlError,
    PinnedAddressAdapter,
    WebhookRetryableError,
    address_is_public,
    webhook_notify,
    webhook_sign,
    webhook_url_validate,
    webhook_verify,
)
from diagnosis.tasks.webhooks import webhook_backoff_seconds, webhook_deliver
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db

# serve_forever checks for shutdown() this often (socketserver's default, 0.5 s, was paid by every
# test on leaving its server).
SHUTDOWN_POLL = 0.01


class Receiver:
    """A loopback HTTP server answering with the queued status codes (then 200)."""

    def __init__(self, statuses: list[int], tls: ssl.SSLContext | None = None) -> None:
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
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, daemon=True
        )

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
        assert webhook_verify(secret=client.webhook_secret, body=body, headers=headers)
        assert not webhook_verify(secret="wrong", body=body, headers=headers)
        assert not webhook_verify(secret=client.webhook_secret, body=body + b" ", headers=headers)
        assert json.loads(body)["case"]["id"] == str(case.uuid)


def _signed() -> dict[str, str]:
    """The headers of delivery 17 of case.predicted with body {} at t=1700000000."""
    signature = webhook_sign(
        secret="s3cret",
        body=b"{}",
        timestamp=1_700_000_000,
        delivery_id="17",
        event="case.predicted",
    )
    return {
        "X-Fracture-Signature": signature,
        "X-Fracture-Delivery": "17",
        "X-Fracture-Event": "case.predicted",
    }


def test_signature_format_and_staleness():
    headers = _signed()
    assert headers["X-Fracture-Signature"].startswith("t=1700000000,v1=")
    assert [len(part.split("=")[1]) for part in headers["X-Fracture-Signature"].split(",")[1:]] == [
        64,
        64,
    ]
    assert webhook_verify(secret="s3cret", body=b"{}", headers=headers, now=1_700_000_100)
    assert not webhook_verify(secret="s3cret", body=b"{}", headers=headers, now=1_700_001_000)
    garbage = {**headers, "X-Fracture-Signature": "garbage"}
    assert not webhook_verify(secret="s3cret", body=b"{}", headers=garbage)


def test_the_signature_covers_the_delivery_id_and_the_event():
    """A replay with another delivery id (to slip past a receiver's de-duplication) or another
    event name fails verification (issue #13)."""
    now = 1_700_000_100
    assert webhook_verify(secret="s3cret", body=b"{}", headers=_signed(), now=now)
    replayed = {**_signed(), "X-Fracture-Delivery": "18"}
    assert not webhook_verify(secret="s3cret", body=b"{}", headers=replayed, now=now)
    relabelled = {**_signed(), "X-Fracture-Event": "case.reviewed"}
    assert not webhook_verify(secret="s3cret", body=b"{}", headers=relabelled, now=now)
    unsigned_id = {k: v for k, v in _signed().items() if k != "X-Fracture-Delivery"}
    assert not webhook_verify(secret="s3cret", body=b"{}", headers=unsigned_id, now=now)


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
        # IPv6 forms that embed a private IPv4 address (issue #13): IPv4-compatible, -mapped,
        # NAT64 (well-known and local-use), 6to4 and Teredo.
        "http://[::127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[2002:7f00:1::1]/",
        "http://[2002:c0a8:1::1]/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
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


PUBLIC_V4 = "1.1.1.1"  # global for ipaddress; never really contacted (see _unreachable)
PUBLIC_V6 = "2606:4700:4700::1111"


def _fake_dns(monkeypatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Replace socket.getaddrinfo (for everyone: the webhooks module and urllib3 alike) so that each
    host in `answers` gets the next list of addresses on each lookup (the last list repeats), as a
    hostile DNS server would answer. Other names and numeric addresses resolve as usual. Returns
    the hosts looked up, in order."""
    real = socket.getaddrinfo
    lookups: list[str] = []
    served: dict[str, int] = {}

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        lookups.append(host)
        if host not in answers:
            return real(host, port, family, type, proto, flags)
        index = served[host] = served.get(host, -1) + 1
        result = []
        for address in answers[host][min(index, len(answers[host]) - 1)]:
            if ":" in address:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return result

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)
    return lookups


def _unreachable(monkeypatch, *addresses: str) -> list[tuple[str, int]]:
    """Connections that urllib3 opens to `addresses` fail at once with "network unreachable", as
    from an offline machine (pytest-socket would refuse them anyway); anything else connects as
    usual, resolving names with the (possibly faked) getaddrinfo. Returns the (host, port) pairs
    urllib3 connected to, in order."""
    real = urllib3.util.connection.create_connection
    connects: list[tuple[str, int]] = []

    def create_connection(address, *args, **kwargs):
        connects.append(address)
        if address[0] in addresses:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return connects


def _queued(user, url: str) -> WebhookDelivery:
    _, case = _api_case(user, url)
    with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
        return webhook_notify(case=case, event="case.predicted")


@pytest.mark.parametrize("final_attempt", [False, True])
def test_dns_rebinding_cannot_redirect_the_post_to_loopback(
    clinician, settings, monkeypatch, final_attempt
):
    """The first lookup answers a public address, every later one 127.0.0.1 where a receiver
    listens: the POST goes to the vetted public address (a network error here), never to loopback."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with Receiver([]) as receiver:
        port = receiver.server.server_port
        delivery = _queued(clinician, f"http://rebind.test:{port}/hook")  # not resolved yet
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
        lookups = _fake_dns(monkeypatch, {"rebind.test": [[PUBLIC_V4], ["127.0.0.1"]]})
        connects = _unreachable(monkeypatch, PUBLIC_V4)
        if final_attempt:
            webhooks.webhook_deliver(delivery_id=delivery.pk, final_attempt=True)
        else:
            with pytest.raises(WebhookRetryableError):
                webhooks.webhook_deliver(delivery_id=delivery.pk, final_attempt=False)
        assert lookups.count("rebind.test") == 1  # urllib3 never looked the name up again
        assert connects == [(PUBLIC_V4, port)]  # only the vetted address was tried
        delivery.refresh_from_db()
        assert delivery.attempts == 1
        assert delivery.status == ("failed" if final_attempt else "pending")
        assert delivery.last_error.startswith("ConnectionError")
        assert PUBLIC_V4 in delivery.last_error
        if not final_attempt:
            # The next attempt resolves afresh, gets the loopback answer and is refused outright.
            webhooks.webhook_deliver(delivery_id=delivery.pk, final_attempt=False)
            delivery.refresh_from_db()
            assert delivery.status == "failed"
            assert "private" in delivery.last_error
    assert receiver.requests == []


def test_pinned_delivery_keeps_the_hostname_in_the_host_header(clinician, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    with Receiver([]) as receiver:
        port = receiver.server.server_port
        url = f"http://localhost:{port}/hook"
        assert webhook_url_validate(url=url) == ()  # private targets allowed: nothing resolved
        client, case = _api_case(clinician, url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"localhost:{port}"
    assert webhook_verify(
        secret=client.webhook_secret,
        body=request["body"],
        headers=request["headers"],
    )


def test_next_vetted_address_is_tried_when_one_refuses_the_connection(
    clinician, settings, monkeypatch
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    with Receiver([]) as receiver:
        port = receiver.server.server_port
        delivery = _queued(clinician, f"http://multi.test:{port}/hook")
        lookups = _fake_dns(monkeypatch, {"multi.test": [[PUBLIC_V4, "127.0.0.1"]]})
        connects = _unreachable(monkeypatch, PUBLIC_V4)
        webhook_deliver.apply(args=[delivery.pk])
    assert connects == [(PUBLIC_V4, port), ("127.0.0.1", port)]
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempts == 1
    assert lookups.count("multi.test") == 1
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"multi.test:{port}"


def test_unresolvable_host_is_a_network_error_in_development(clinician, settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    delivery = _queued(clinician, "http://nowhere.test/hook")
    _fake_dns(monkeypatch, {"nowhere.test": [[]]})
    with pytest.raises(WebhookRetryableError):
        webhooks.webhook_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.last_error.startswith("ConnectionError")


def test_validation_returns_the_vetted_addresses_ipv4_first(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    _fake_dns(
        monkeypatch,
        {
            "dual.test": [[PUBLIC_V6, PUBLIC_V4, PUBLIC_V4]],
            "mixed.test": [[PUBLIC_V4, "10.0.0.5"]],
            "gone.test": [[]],
        },
    )
    assert webhook_url_validate(url="https://dual.test/hook") == (PUBLIC_V4, PUBLIC_V6)
    assert webhook_url_validate(url="https://dual.test/hook", resolve=False) == ()
    with pytest.raises(InvalidWebhookUrlError, match="private or reserved"):
        webhook_url_validate(url="https://mixed.test/hook")
    with pytest.raises(InvalidWebhookUrlError, match="does not resolve"):
        webhook_url_validate(url="https://gone.test/hook")


def test_https_pool_connects_to_the_address_but_checks_the_hostname():
    adapter = PinnedAddressAdapter(address=PUBLIC_V4)
    request = requests.Request("POST", "https://hooks.example.org:8443/in", data=b"{}").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    assert isinstance(pool, HTTPSConnectionPool)
    assert (pool.host, pool.port) == (PUBLIC_V4, 8443)
    assert pool.assert_hostname == "hooks.example.org"  # certificate checked against the name
    assert pool.conn_kw["server_hostname"] == "hooks.example.org"  # SNI
    assert pool.cert_reqs == "CERT_REQUIRED"
    conn = pool._new_conn()  # not connected yet: only its parameters are inspected
    assert (conn.host, conn.server_hostname, conn.assert_hostname) == (
        PUBLIC_V4,
        "hooks.example.org",
        "hooks.example.org",
    )
    adapter.add_headers(request)
    assert request.headers["Host"] == "hooks.example.org:8443"


def test_http_pool_on_an_ipv6_address_ignores_proxies():
    adapter = PinnedAddressAdapter(address=PUBLIC_V6)
    request = requests.Request("POST", "http://hooks.example.org/in", data=b"{}").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    assert type(pool) is HTTPConnectionPool
    assert (pool.host, pool.port) == (PUBLIC_V6, 80)
    assert "server_hostname" not in pool.conn_kw
    adapter.add_headers(request)
    assert request.headers["Host"] == "hooks.example.org"
    with mock.patch.object(requests.adapters.HTTPAdapter, "send") as send:
        adapter.send(request, proxies={"http": "http://proxy.internal:3128"})
    assert send.call_args.kwargs["proxies"] is None


class ForwardProxy:
    """A loopback forward proxy. An absolute-URI request (`POST http://host:port/path`) is forwarded
    to the target and its answer relayed; `CONNECT host:port` opens a byte tunnel. `routes` stands
    for the proxy's own DNS (hostname -> (address, port)); other hosts are connected to as named.
    `seen` records each request line and its headers."""

    def __init__(self, routes: dict[str, tuple[str, int]] | None = None) -> None:
        self.routes = routes or {}
        self.seen: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _upstream(self, host: str, port: int) -> tuple[str, int]:
                return proxy.routes.get(host, (host, port))

            def do_POST(self) -> None:
                proxy.seen.append(
                    {"method": "POST", "target": self.path, "headers": dict(self.headers)}
                )
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parts = urlsplit(self.path)
                upstream = http.client.HTTPConnection(
                    *self._upstream(parts.hostname or "", parts.port or 80), timeout=5
                )
                hop_by_hop = {"proxy-authorization", "proxy-connection", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                upstream.request("POST", parts.path or "/", body=body, headers=headers)  # same Host
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self) -> None:
                proxy.seen.append(
                    {"method": "CONNECT", "target": self.path, "headers": dict(self.headers)}
                )
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection(self._upstream(host, int(port)), timeout=5)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                try:
                    while True:
                        readable, _, _ = select.select([self.connection, upstream], [], [], 5)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(data)
                finally:
                    upstream.close()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, daemon=True
        )

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _env_proxies(monkeypatch, url: str) -> None:
    """Proxy variables as a shell might export them; webhook deliveries must never use them."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_delivery_goes_through_the_configured_proxy(clinician, settings, monkeypatch):
    """Production-like: the portal vets a public answer for the name, then connects only to the
    proxy, which gets the absolute URI with the original hostname and reaches the receiver by
    its own resolution. The environment's proxies (and NO_PROXY) change nothing."""
    with Receiver([]) as receiver, ForwardProxy() as decoy:
        port = receiver.server.server_port
        routes = {"hooks.test": ("127.0.0.1", port)}
        with ForwardProxy(routes) as proxy:
            settings.WEBHOOK_PROXY_URL = (
                f"http://portal:s3cret@127.0.0.1:{proxy.server.server_port}"
            )
            _env_proxies(monkeypatch, decoy.url)
            monkeypatch.setenv("NO_PROXY", "*")
            client, case = _api_case(clinician, f"http://hooks.test:{port}/hook")
            with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
                delivery = webhook_notify(case=case, event="case.predicted")
            settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
            lookups = _fake_dns(monkeypatch, {"hooks.test": [[PUBLIC_V4]]})
            connects = _unreachable(monkeypatch, PUBLIC_V4)
            webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED, delivery.last_error
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)
    assert lookups.count("hooks.test") == 1  # the portal's own check, once
    assert connects == [("127.0.0.1", proxy.server.server_port)]  # the proxy, nothing else
    assert decoy.seen == []
    [seen] = proxy.seen
    assert (seen["method"], seen["target"]) == ("POST", f"http://hooks.test:{port}/hook")
    assert seen["headers"]["Proxy-Authorization"].startswith("Basic ")  # from the proxy URL
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"hooks.test:{port}"
    assert "Proxy-Authorization" not in request["headers"]
    assert webhook_verify(
        secret=client.webhook_secret,
        body=request["body"],
        headers=request["headers"],
    )
    assert AuditEvent.objects.get(action="webhook.deliver").outcome == "success"


def test_without_a_configured_proxy_the_environment_proxy_is_not_used(
    clinician, settings, monkeypatch
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_PROXY_URL = ""
    with Receiver([]) as receiver, ForwardProxy() as env_proxy:
        _env_proxies(monkeypatch, env_proxy.url)
        client, case = _api_case(clinician, receiver.url)
        with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
            delivery = webhook_notify(case=case, event="case.predicted")
        connects = _unreachable(monkeypatch)
        webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED, delivery.last_error
    assert env_proxy.seen == []
    assert connects == [("127.0.0.1", receiver.server.server_port)]  # direct, to the vetted address
    [request] = receiver.requests
    assert webhook_verify(
        secret=client.webhook_secret,
        body=request["body"],
        headers=request["headers"],
    )


@pytest.mark.parametrize(
    ("text", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("::127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("2002:7f00:1::1", False),
        ("2002:a00:1::1", False),
        ("::", False),
        ("::1", False),
    ],
)
def test_embedded_ipv4_is_judged_as_ipv4(text, public):
    assert address_is_public(ipaddress.ip_address(text)) is public


def test_private_targets_are_refused_before_the_proxy_is_contacted(clinician, settings):
    with Receiver([]) as receiver, ForwardProxy() as proxy:
        delivery = _queued(clinician, receiver.url)
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
        settings.WEBHOOK_PROXY_URL = proxy.url
        webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "private" in delivery.last_error
    assert proxy.seen == []
    assert receiver.requests == []


def test_an_unreachable_proxy_is_a_network_error_and_retried(clinician, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    settings.WEBHOOK_PROXY_URL = "http://portal:s3cret@127.0.0.1:9"  # discard port: refused
    with Receiver([]) as receiver:
        delivery = _queued(clinician, receiver.url)
        webhook_deliver.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 2
    assert delivery.last_error.startswith(("ProxyError", "ConnectionError"))
    assert "s3cret" not in delivery.last_error
    assert receiver.requests == []


def _self_signed(tmp_path, hostname: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for `hostname`, and the CA file path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


@pytest.mark.parametrize("hostname", ["hooks.test", "impostor.test"])
def test_https_goes_through_a_connect_tunnel_with_the_certificate_checked(
    clinician, settings, monkeypatch, tmp_path, hostname
):
    """TLS runs end to end inside the CONNECT tunnel: the receiver's certificate (for hooks.test)
    is checked against the URL's hostname, so a name it does not cover fails the handshake."""
    tls, ca_file = _self_signed(tmp_path, "hooks.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)  # the receiver's certificate is trusted
    with Receiver([], tls=tls) as receiver:
        port = receiver.server.server_port
        with ForwardProxy({hostname: ("127.0.0.1", port)}) as proxy:
            settings.WEBHOOK_PROXY_URL = proxy.url
            _env_proxies(monkeypatch, "http://127.0.0.1:9")
            client, case = _api_case(clinician, f"https://{hostname}:{port}/hook")
            with mock.patch("diagnosis.tasks.webhooks.webhook_deliver.delay"):
                delivery = webhook_notify(case=case, event="case.predicted")
            settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
            _fake_dns(monkeypatch, {hostname: [[PUBLIC_V4]]})
            webhooks.webhook_deliver(delivery_id=delivery.pk, final_attempt=True)
    [seen] = proxy.seen
    assert (seen["method"], seen["target"]) == ("CONNECT", f"{hostname}:{port}")
    delivery.refresh_from_db()
    if hostname == "impostor.test":
        assert delivery.status == WebhookDelivery.Status.FAILED
        assert delivery.last_error.startswith("SSLError")
        assert receiver.requests == []
        return
    assert delivery.status == WebhookDelivery.Status.DELIVERED, delivery.last_error
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"hooks.test:{port}"
    assert webhook_verify(
        secret=client.webhook_secret,
        body=request["body"],
        headers=request["headers"],
    )
