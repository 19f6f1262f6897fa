"""Signed webhook notifications to API clients.

`webhook_notify` records one WebhookDelivery per (client, case, event) and dispatches the delivery
task after commit. `webhook_deliver` makes one attempt: it POSTs the JSON payload with
`X-Fracture-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">,v2=<... of
"<t>.<delivery id>.<event>.<body>">` (v2 also covers the X-Fracture-Delivery and X-Fracture-Event
headers) and records the outcome.
Network errors and 5xx answers are retried by the task with exponential backoff; 4xx are final.
Only http(s) URLs are accepted, and outside DEBUG/tests private, loopback and link-local targets
are refused (WEBHOOK_ALLOW_PRIVATE_TARGETS) so a webhook cannot reach the internal network.
The POST goes to exactly an address that was vetted (never to a second DNS answer, which a hostile
DNS server could point inside: DNS rebinding), with the URL's hostname kept for the Host header,
TLS SNI and certificate verification.
With WEBHOOK_PROXY_URL set, every attempt goes through that egress proxy instead (https targets by
CONNECT, so TLS stays end-to-end and the certificate is still checked against the hostname). The
URL is still checked and resolved here first, so obviously internal names are refused, but the
proxy resolves the host itself and pinning cannot apply: the proxy's egress policy must refuse
internal destinations. The environment's HTTP(S)_PROXY variables are never used.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from diagnosis.exceptions import DomainError
from diagnosis.models import AuditEvent, BoxOrigin, Case, Prediction, WebhookDelivery
from diagnosis.selectors.models import model_version_localises
from diagnosis.selectors.predictions import prediction_candidates
from diagnosis.selectors.reads import case_final_reading
from diagnosis.selectors.reviews import ImageWithReads, case_image_reads
from diagnosis.services.audit import audit_record

logger = logging.getLogger(__name__)

EVENTS = ("case.predicted", "case.reviewed")
SIGNATURE_HEADER = "X-Fracture-Signature"
EVENT_HEADER = "X-Fracture-Event"
DELIVERY_HEADER = "X-Fracture-Delivery"
# Addresses tried per attempt when connecting fails (each may take the whole connect timeout; the
# task's soft time limit is 60 s).
MAX_ADDRESSES_TRIED = 3


class InvalidWebhookUrlError(DomainError):
    code, status_code = "invalid_webhook_url", 400


class WebhookHostUnresolvedError(InvalidWebhookUrlError):
    """The host has no address (same code and message as any other refused URL)."""


class WebhookRetryableError(Exception):
    """A network error or a 5xx answer: the task tries again later."""


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def webhook_sign(*, secret: str, body: bytes, timestamp: int, delivery_id: str, event: str) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds) as delivery
    `delivery_id` of `event`: `v2` covers "<t>.<delivery id>.<event>.<body>", so neither header
    can be changed without breaking it; `v1` ("<t>.<body>") stays for receivers written before."""
    v1 = _mac(secret, f"{timestamp}.".encode() + body)
    v2 = _mac(secret, f"{timestamp}.{delivery_id}.{event}.".encode() + body)
    return f"t={timestamp},v1={v1},v2={v2}"


def webhook_verify(
    *,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """What a receiver does: check the `v2` HMAC (timestamp, delivery id, event and body) in
    constant time and reject stale timestamps. `headers` are the request's headers."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        parts = dict(item.split("=", 1) for item in lowered[SIGNATURE_HEADER.lower()].split(","))
        timestamp = int(parts["t"])
        delivery_id = lowered[DELIVERY_HEADER.lower()]
        event = lowered[EVENT_HEADER.lower()]
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, f"{timestamp}.{delivery_id}.{event}.".encode() + body)
    return hmac.compare_digest(expected, parts.get("v2", ""))


@dataclass(frozen=True)
class WebhookTarget:
    """Where one delivery attempt connects: vetted `addresses` (IPv4 first), never re-resolved."""

    hostname: str
    port: int
    addresses: tuple[str, ...]


def _url_check(url: str) -> tuple[SplitResult, int]:
    """The URL's parts and port, or InvalidWebhookUrlError for anything but a plain http(s) URL."""
    if len(url) > 500 or "\x00" in url:
        raise InvalidWebhookUrlError("The webhook URL is too long or malformed.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrlError("The webhook URL must be an http(s) URL with a host.")
    if parts.username or parts.password:
        raise InvalidWebhookUrlError("The webhook URL must not carry credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidWebhookUrlError("The webhook URL has an invalid port.") from exc
    return parts, port


_NAT64_PREFIXES = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # well-known NAT64 prefix (RFC 6052)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and that a network may route to: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::)
    and Teredo (server and client)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    value = int(address)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d (not :: or ::1, checked as IPv6)
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address. IPv6 forms that embed an IPv4 address are
    judged by that address too (`::127.0.0.1`, `64:ff9b::a9fe:a9fe`, `2002:7f00:1::1` are
    loopback and link-local in disguise)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return all(v4.is_global and not v4.is_multicast for v4 in embedded_ipv4(address))
    return True


def webhook_target_resolve(*, url: str) -> WebhookTarget:
    """Check `url`, resolve its host once and (unless WEBHOOK_ALLOW_PRIVATE_TARGETS) refuse it if
    any address is private, loopback, link-local, reserved or multicast. The delivery connects only
    to the returned addresses."""
    parts, port = _url_check(url)
    hostname = parts.hostname or ""  # never empty: _url_check requires a host
    try:
        infos = socket.getaddrinfo(hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookHostUnresolvedError("The webhook host does not resolve.") from exc
    addresses: list[str] = []
    for family, *_, sockaddr in sorted(infos, key=lambda info: info[0] != socket.AF_INET):
        if family not in (socket.AF_INET, socket.AF_INET6) or sockaddr[0] in addresses:
            continue
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS and not address_is_public(address):
            raise InvalidWebhookUrlError(
                "The webhook host resolves to a private or reserved address."
            )
        addresses.append(sockaddr[0])  # as given, scope id included (link-local, development only)
    if not addresses:
        raise WebhookHostUnresolvedError("The webhook host does not resolve.")
    return WebhookTarget(hostname=hostname, port=port, addresses=tuple(addresses))


def webhook_url_validate(*, url: str, resolve: bool = True) -> tuple[str, ...]:
    """Refuse anything but http(s) URLs, and (unless WEBHOOK_ALLOW_PRIVATE_TARGETS) hosts that
    resolve to private, loopback, link-local, reserved or multicast addresses. Returns the vetted
    addresses, or () when nothing was resolved (`resolve=False` or private targets allowed)."""
    _url_check(url)
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS or not resolve:
        return ()
    return webhook_target_resolve(url=url).addresses


class _FixedProxiesAdapter(HTTPAdapter):
    """An adapter that sends with its own `proxies` (None: direct), never those requests derives
    from HTTP(S)_PROXY / NO_PROXY in the environment."""

    proxies: dict[str, str] | None = None

    def __init__(self) -> None:
        super().__init__(max_retries=0)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        return super().send(
            request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=self.proxies
        )


class PinnedAddressAdapter(_FixedProxiesAdapter):
    """Connects to `address` instead of resolving the URL's host again.

    The URL keeps its hostname: only the connection pool is opened on the address, with
    `server_hostname` (TLS SNI) and `assert_hostname` (certificate check) set to the hostname,
    and the Host header is the URL's host[:port]. Proxies are ignored: a proxy would resolve the
    hostname itself (WEBHOOK_PROXY_URL goes through EgressProxyAdapter instead).
    """

    def __init__(self, *, address: str) -> None:
        self.address = address
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = host_params["host"]  # the prepared URL's (IDNA-encoded) hostname
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # Otherwise http.client would send the address as Host. The URL carries no credentials
        # (_url_check), so its netloc is exactly host[:port].
        request.headers["Host"] = urlsplit(request.url or "").netloc


class EgressProxyAdapter(_FixedProxiesAdapter):
    """Sends every request through `proxy_url` (WEBHOOK_PROXY_URL), whatever the environment says.

    http targets as an absolute-URI request to the proxy, https targets through a CONNECT tunnel
    (TLS to the target inside it: SNI and certificate check on the URL's hostname). The proxies
    requests would take from HTTP(S)_PROXY / NO_PROXY are replaced, never merged.
    """

    def __init__(self, *, proxy_url: str) -> None:
        self.proxies = {"http": proxy_url, "https": proxy_url}
        super().__init__()


def _connect_failed(exc: requests.RequestException) -> bool:
    """True when no connection was made (so nothing was sent and another address may be tried)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _post(
    adapter: HTTPAdapter, *, url: str, body: bytes, headers: dict[str, str]
) -> requests.Response:
    """One POST through `adapter` (for both schemes), without redirects."""
    with requests.Session() as session:
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session.post(
            url,
            data=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,  # a redirect could point anywhere, including inside
        )


def _post_pinned(
    *, target: WebhookTarget, url: str, body: bytes, headers: dict[str, str]
) -> requests.Response:
    """POST to the first vetted address that accepts a connection; the last error otherwise."""
    addresses = target.addresses[:MAX_ADDRESSES_TRIED]
    for index, address in enumerate(addresses):
        try:
            return _post(PinnedAddressAdapter(address=address), url=url, body=body, headers=headers)
        except requests.RequestException as exc:
            if index + 1 == len(addresses) or not _connect_failed(exc):
                raise
    raise AssertionError("unreachable: a WebhookTarget has at least one address")


def _post_via_proxy(*, url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    """POST through WEBHOOK_PROXY_URL, which resolves the host and connects to it itself."""
    adapter = EgressProxyAdapter(proxy_url=settings.WEBHOOK_PROXY_URL)
    return _post(adapter, url=url, body=body, headers=headers)


def _image_reading(item: ImageWithReads) -> dict[str, Any]:
    """One image's final reading as a webhook carries it: the deciding read's label and boxes."""
    read = item.final_read()
    return {
        "final_label": read.final_label if read is not None else None,
        "boxes": [
            {
                "x": box["x"],
                "y": box["y"],
                "w": box["w"],
                "h": box["h"],
                "origin": box.get("origin") or BoxOrigin.READER.value,
            }
            for box in item.final_boxes()
        ],
    }


def webhook_payload(*, case: Case, event: str) -> dict[str, Any]:
    """The event body: ids, status and the result summary (with the model's candidate boxes in
    pixels of the canonical image, whose size each image carries) and, once the case is final,
    each image's final reading with the radiologists' fracture boxes (fractions of the canonical
    image); the client fetches details by API. Reader names never leave in a webhook."""
    final = case_final_reading(case=case)
    readings = (
        {item.image.pk: _image_reading(item) for item in case_image_reads(case=case)}
        if final is not None
        else {}
    )
    images = []
    for image in case.images.all().order_by("position"):
        prediction = (
            image.predictions.select_related("model_version").order_by("-created_at").first()
        )
        images.append(
            {
                "id": image.pk,
                "position": image.position,
                # The frame of the candidates' pixel boxes (the canonical image's size).
                "width": image.width,
                "height": image.height,
                "prediction": None
                if prediction is None
                else {
                    "status": prediction.status,
                    "probability": prediction.probability,
                    "label": prediction.label or None,
                    "model_version": prediction.model_version.version,
                    "localises": model_version_localises(prediction.model_version),
                    "candidates": prediction_candidates(
                        prediction.candidates
                        if prediction.status == Prediction.Status.DONE
                        else [],
                        width=image.width,
                        height=image.height,
                    ),
                },
                # null until the case is final (blind reads: selectors.reads)
                "reading": readings.get(image.pk),
            }
        )
    return {
        "event": event,
        "case": {
            "id": str(case.uuid),
            "status": case.status,
            # The final reading only once the case is final (blind reads: selectors.reads).
            "final_label": final["final_label"] if final is not None else None,
            "status_url": f"/api/v1/cases/{case.uuid}/",
            "images": images,
        },
        "occurred_at": timezone.now().isoformat(),
    }


def webhook_notify(*, case: Case, event: str) -> WebhookDelivery | None:
    """Queue a signed POST of `event` ("case.predicted", "case.reviewed") to the case's API client,
    if it has one. Safe to call inside a transaction: delivery is dispatched on commit. Idempotent:
    one delivery per (client, case, event)."""
    from diagnosis.tasks.webhooks import webhook_deliver as webhook_deliver_task

    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    client = case.api_client
    if client is None or not client.is_active or not client.webhook_url:
        return None
    with transaction.atomic():
        delivery, created = WebhookDelivery.objects.get_or_create(
            client=client,
            case=case,
            event=event,
            defaults={"payload": webhook_payload(case=case, event=event)},
        )
        if created:
            webhook_deliver_task.delay_on_commit(delivery.pk)
    logger.info(
        "webhook queued" if created else "webhook already queued",
        extra={"delivery_id": delivery.pk, "case_id": case.pk, "api_client_id": client.pk},
    )
    return delivery


def webhook_deliver(*, delivery_id: int, final_attempt: bool) -> WebhookDelivery:
    """One delivery attempt (no transaction is held open during the HTTP call).

    Raises WebhookRetryableError on a network error or a 5xx unless `final_attempt`; the delivery
    then stays `pending`. A 2xx marks it `delivered`, anything else (or the final failure) `failed`.
    """
    delivery = WebhookDelivery.objects.select_related("client", "case").get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING:
        return delivery  # a redelivered task: nothing to do
    client = delivery.client
    extra = {"delivery_id": delivery.pk, "case_id": delivery.case_id, "api_client_id": client.pk}
    if not client.is_active or not client.webhook_url:
        return _record(delivery, status=WebhookDelivery.Status.FAILED, error="client disabled")
    try:
        # Resolved once here; the POST connects only to these addresses (no DNS rebinding), or,
        # through WEBHOOK_PROXY_URL, to the proxy (which resolves the host again itself).
        target = webhook_target_resolve(url=client.webhook_url)
    except WebhookHostUnresolvedError as exc:
        if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
            logger.warning("webhook target refused", extra=extra)
            return _record(delivery, status=WebhookDelivery.Status.FAILED, error=exc.message)
        # Development and tests, as before pinning: an unresolvable host is a network error.
        return _network_error(
            delivery,
            error=f"ConnectionError: {exc.message}",
            final_attempt=final_attempt,
            extra=extra,
        )
    except InvalidWebhookUrlError as exc:
        logger.warning("webhook target refused", extra=extra)
        return _record(delivery, status=WebhookDelivery.Status.FAILED, error=exc.message)

    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "FracturePortal-Webhook/1",
        SIGNATURE_HEADER: webhook_sign(
            secret=client.webhook_secret,
            body=body,
            timestamp=int(time.time()),
            delivery_id=str(delivery.pk),
            event=delivery.event,
        ),
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
    }
    try:
        if settings.WEBHOOK_PROXY_URL:
            response = _post_via_proxy(url=client.webhook_url, body=body, headers=headers)
        else:
            response = _post_pinned(
                target=target, url=client.webhook_url, body=body, headers=headers
            )
    except requests.RequestException as exc:
        return _network_error(
            delivery, error=f"{type(exc).__name__}: {exc}", final_attempt=final_attempt, extra=extra
        )

    code = response.status_code
    if 200 <= code < 300:
        logger.info("webhook delivered", extra={**extra, "status_code": code})
        return _record(delivery, status=WebhookDelivery.Status.DELIVERED, status_code=code)
    error = f"HTTP {code}"
    logger.warning("webhook attempt answered %s", code, extra=extra)
    if code >= 500 and not final_attempt:
        _record(delivery, status=WebhookDelivery.Status.PENDING, status_code=code, error=error)
        raise WebhookRetryableError(error)
    return _record(delivery, status=WebhookDelivery.Status.FAILED, status_code=code, error=error)


def _network_error(
    delivery: WebhookDelivery, *, error: str, final_attempt: bool, extra: dict[str, Any]
) -> WebhookDelivery:
    """Record a failed connection: final on the last attempt, else pending and retried."""
    error = error[:500]
    logger.warning("webhook attempt failed: network error", extra=extra)
    if final_attempt:
        return _record(delivery, status=WebhookDelivery.Status.FAILED, error=error)
    _record(delivery, status=WebhookDelivery.Status.PENDING, error=error)
    raise WebhookRetryableError(error)


def _record(
    delivery: WebhookDelivery, *, status: str, status_code: int | None = None, error: str = ""
) -> WebhookDelivery:
    delivery.attempts += 1
    delivery.status = status
    delivery.last_status_code = status_code
    delivery.last_error = error
    fields = ["attempts", "status", "last_status_code", "last_error"]
    if status == WebhookDelivery.Status.DELIVERED:
        delivery.delivered_at = timezone.now()
        fields.append("delivered_at")
    delivery.save(update_fields=fields)
    if status != WebhookDelivery.Status.PENDING:
        # Case results left (or finally failed to leave) for a client's server: audited once.
        audit_record(
            action="webhook.deliver",
            object_type="case",
            object_id=str(delivery.case.uuid),
            outcome=AuditEvent.Outcome.SUCCESS
            if status == WebhookDelivery.Status.DELIVERED
            else AuditEvent.Outcome.FAILURE,
            delivery_id=delivery.pk,
            api_client_id=delivery.client_id,
            event=delivery.event,
            attempts=delivery.attempts,
            status_code=status_code,
        )
    return delivery
