"""A web process SIGKILLed mid-upload leaves no radiograph without its row (issue 12, point 3).

gunicorn serves the portal against the test database; a 4-image API upload pauses after its files
are written and before its transaction commits (UPLOAD_TEST_BARRIER), and the test SIGKILLs the
gunicorn worker there. The files were only staged: nothing under `images/`, no row, and
`media_reconcile` removes the four staged files, after which a second run finds zero orphans. An
upload that completes is published under `images/` and leaves nothing for the reconcile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from django.conf import settings

from diagnosis.models import Case, XrayImage
from diagnosis.services.media import media_reconcile
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories
from tests.integration.conftest import PROJECT_DIR, _test_database_url, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAMPLES = sorted((PROJECT_DIR / "samples").glob("*.jpg"))


def _files(root: Path, area: str) -> list[Path]:
    folder = root / area
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _upload(url: str, token: str, results: list) -> None:
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in SAMPLES[:4]]
    try:
        response = requests.post(
            f"{url}/api/v1/cases/",
            headers={"Authorization": f"Bearer {token}"},
            data={"patient_ref": "CRASH-1", "body_part": "hand", "clinical_question": ""},
            files=files,
            timeout=120,
        )
        results.append(response.status_code)
    except requests.RequestException as exc:
        results.append(type(exc).__name__)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_sigkill_mid_upload_leaves_no_orphan_after_reconcile(tmp_path: Path):
    assert len(SAMPLES) >= 4
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True, exist_ok=True)
    barrier = tmp_path / "barrier"
    user = factories.ClinicianFactory()
    client = api_client_create(user=user, name="crash")
    _, token = api_token_create(client=client, user=user, scopes=["read", "write"], expires_at=None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DJANGO_SETTINGS_MODULE": "fracture_portal.settings",
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": "",
        "REDIS_CACHE_URL": "",
        "EMBEDDED_SWEEPER": "0",
        "MEDIA_ROOT": str(media),
        "UPLOAD_TEST_BARRIER": str(barrier),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (tmp_path / "gunicorn.log").open("ab")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "fracture_portal.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "120",
        ],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: _healthy(url), timeout=60), (tmp_path / "gunicorn.log").read_text()
        results: list = []
        upload = threading.Thread(target=_upload, args=(url, token, results))
        upload.start()
        reached = Path(f"{barrier}.reached")
        assert wait_for(reached.exists, timeout=60, interval=0.05), (
            tmp_path / "gunicorn.log"
        ).read_text()
        worker_pid = int(reached.read_text().split()[0])
        # Mid-upload: the four canonical PNGs exist, staged; nothing is under images/ yet.
        assert len(_files(media, "staging")) == 4
        assert _files(media, "images") == []
        os.kill(worker_pid, signal.SIGKILL)
        upload.join(timeout=60)
        assert len(results) == 1, results
        assert results[0] != 202, results  # the connection died with the worker

        assert wait_for(lambda: not Case.objects.exists(), timeout=10)  # rolled back
        assert XrayImage.objects.count() == 0
        assert _files(media, "images") == []
        report = media_reconcile(fix=True, grace_seconds=0).as_counts()
        assert report["orphans_staging"] == 4
        assert report["removed"] == 4
        again = media_reconcile(fix=True, grace_seconds=0).as_counts()
        assert (again["orphans"], again["rows_without_files"]) == (0, 0)
        assert [p for p in media.rglob("*") if p.is_file()] == []

        # The restarted worker completes the same upload: published, nothing to reconcile.
        barrier.touch()
        reached.unlink()
        assert wait_for(lambda: _healthy(url), timeout=60)
        results.clear()
        _upload(url, token, results)
        assert results == [202], results
        image_files = _files(media, "images")
        assert len(image_files) == 4
        assert _files(media, "staging") == []
        final = media_reconcile(fix=True, grace_seconds=0).as_counts()
        assert (final["orphans"], final["rows_without_files"]) == (0, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
