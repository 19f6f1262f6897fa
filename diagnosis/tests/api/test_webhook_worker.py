"""A real Celery worker (subprocess, Redis broker) delivers a webhook: the first answer is a 500,
the retry comes after the backoff and succeeds; both requests carry a valid signature."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction

from diagnosis.models import WebhookDelivery
from diagnosis.services.tokens import api_client_create
from diagnosis.services.webhooks import webhook_notify, webhook_verify
from diagnosis.tests import factories
from diagnosis.tests.api.test_webhooks import Receiver

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def worker(transactional_db, tmp_path):
    """A celery worker on the default queue, using this test's database and broker."""
    broker = settings.CELERY_BROKER_URL
    redis.Redis.from_url(broker).flushdb()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fracture_portal.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "WEBHOOK_BACKOFF_BASE_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fracture_portal",
            "worker",
            "-Q",
            "default",
            "--pool",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    proc.log = tmp_path / "worker.log"
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_worker_retries_after_a_500_with_backoff(worker, clinician):
    with Receiver([500]) as receiver:
        client = api_client_create(user=clinician, name="tele", webhook_url=receiver.url)
        case = factories.CaseFactory(created_by=clinician, api_client=client, status="predicted")
        with transaction.atomic():
            delivery = webhook_notify(case=case, event="case.predicted")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            delivery.refresh_from_db()
            if delivery.status != WebhookDelivery.Status.PENDING:
                break
            assert worker.poll() is None, worker.log.read_text()[-3000:]
            time.sleep(0.5)
        stamps = [r["at"] for r in receiver.requests]
        requests = list(receiver.requests)
    assert delivery.status == WebhookDelivery.Status.DELIVERED, (
        delivery.last_error,
        delivery.attempts,
    )
    assert delivery.attempts == 2
    assert len(requests) == 2
    assert stamps[1] - stamps[0] >= 0.7  # countdown of ~1 s (+-20 % jitter)
    for request in requests:
        assert webhook_verify(
            secret=client.webhook_secret,
            body=request["body"],
            headers=request["headers"],
        )
