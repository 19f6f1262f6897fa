"""`make run` under concurrent uploads (issue 12, point 1): the embedded configuration (SQLite, local
media, in-process tasks, local-memory cache) served by `manage.py runserver --noreload`, exactly as
`make run` starts it, takes 10 API uploads and 10 browser uploads at once. Every case must end
`predicted` with exactly one prediction per image, no reason shown, and no heat-map file without
its row. A second test leaves a case stuck (as a lost in-process task would) and checks that the
embedded sweeper picks it up.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import PROJECT_DIR, free_port, wait_for

pytestmark = pytest.mark.slow

SAMPLES = sorted((PROJECT_DIR / "samples").glob("*.jpg"))
UPLOADS_PER_PATH = 10
# Services the test runner exports must not leak into the embedded mode (the Makefile's RUN_ENV).
_UNSET = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_CACHE_URL", "DJANGO_SETTINGS_MODULE")


@dataclass
class Portal:
    url: str
    db_path: Path
    media: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as db:
            return db.execute(sql, params).fetchall()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return result.stdout


def _embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(
        {
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "MEDIA_ROOT": str(tmp_path / "media"),
            "STATIC_ROOT": str(tmp_path / "static"),
            "TRAINING_WORK_DIR": str(tmp_path / "training"),
            "MODEL_STORE_DIR": str(tmp_path / "models"),
            "THROTTLE_UPLOADS": "1000/min",
            "LOG_LEVEL": "INFO",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def embedded_portal(tmp_path: Path, **extra: str) -> Iterator[Portal]:
    env = _embedded_env(tmp_path, **extra)
    port = free_port()
    log_path = tmp_path / "runserver.log"
    portal = Portal(
        url=f"http://127.0.0.1:{port}",
        db_path=tmp_path / "db.sqlite3",
        media=tmp_path / "media",
        env=env,
        process=None,  # type: ignore[arg-type]
        log_path=log_path,
    )
    portal.manage("migrate", "--noinput")
    demo = portal.manage("demo_setup")
    with log_path.open("ab") as log:
        portal.process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        up = wait_for(lambda: _healthy(portal.url), timeout=60, interval=0.2)
        assert up, portal.log()
        portal.demo_output = demo  # type: ignore[attr-defined]
        yield portal
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(portal.process.pid, signal.SIGTERM)
        try:
            portal.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(portal.process.pid, signal.SIGKILL)
            portal.process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _password(demo_output: str, username: str) -> str:
    match = re.search(rf"^\s*{re.escape(username)}\s+(\S+)\s", demo_output, re.MULTILINE)
    assert match, demo_output
    return match.group(1)


def _token(portal: Portal) -> str:
    code = (
        "from django.contrib.auth import get_user_model;"
        "from diagnosis.services.tokens import api_client_create, api_token_create;"
        "u = get_user_model().objects.get(username='demo-clinician');"
        "c = api_client_create(user=u, name='concurrency-test');"
        "t, raw = api_token_create(client=c, user=u, scopes=['read', 'write'], expires_at=None);"
        "print(raw)"
    )
    return portal.manage("shell", "-c", code).strip().splitlines()[-1]


def _browser_session(portal: Portal) -> requests.Session:
    session = requests.Session()
    login = f"{portal.url}/accounts/login/"
    page = session.get(login, timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = session.post(
        login,
        data={
            "csrfmiddlewaretoken": csrf,
            "username": "demo-clinician",
            "password": _password(portal.demo_output, "demo-clinician"),  # type: ignore[attr-defined]
        },
        headers={"Referer": login},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert "/accounts/login/" not in response.url, response.text
    return session


def _api_upload(portal: Portal, token: str, n: int, results: list) -> None:
    sample = SAMPLES[n % len(SAMPLES)]
    response = requests.post(
        f"{portal.url}/api/v1/cases/",
        headers={"Authorization": f"Bearer {token}"},
        data={"patient_ref": f"API-{n:03d}", "body_part": "hand", "clinical_question": "x"},
        files={"images": (sample.name, sample.read_bytes(), "image/jpeg")},
        timeout=180,
    )
    results.append(("api", n, response.status_code, response.text[:300]))


def _browser_upload(portal: Portal, session: requests.Session, n: int, results: list) -> None:
    sample = SAMPLES[n % len(SAMPLES)]
    new = f"{portal.url}/cases/new/"
    form = session.get(new, timeout=30).text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form).group(1)
    response = session.post(
        new,
        data={
            "csrfmiddlewaretoken": csrf,
            "idempotency_key": key,
            "patient_ref": f"WEB-{n:03d}",
            "body_part": "hand",
            "clinical_question": "x",
        },
        files={"images": (sample.name, sample.read_bytes(), "image/jpeg")},
        headers={"Referer": new, "X-Requested-With": "XMLHttpRequest"},
        timeout=180,
    )
    results.append(("web", n, response.status_code, response.text[:300]))


def _settled(portal: Portal, expected: int) -> bool:
    rows = portal.query("SELECT status FROM diagnosis_case")
    return len(rows) == expected and all(s in ("predicted", "failed") for (s,) in rows)


def _assert_exactly_once(portal: Portal, expected_cases: int) -> None:
    cases = portal.query("SELECT patient_ref, status, status_reason FROM diagnosis_case")
    assert len(cases) == expected_cases
    bad = [c for c in cases if c[1] != "predicted" or c[2]]
    assert not bad, f"{bad}\n{portal.log()}"
    per_image = portal.query(
        "SELECT i.id, count(p.id), sum(p.status = 'done') FROM diagnosis_xrayimage i "
        "LEFT JOIN diagnosis_prediction p ON p.image_id = i.id GROUP BY i.id"
    )
    assert len(per_image) == expected_cases
    assert all(count == 1 and done == 1 for _, count, done in per_image), per_image
    # Every heat-map file on disk belongs to a finished prediction row, and the other way round.
    on_disk = {p.name for p in (portal.media / "heatmaps").glob("*.png")}
    in_rows = {
        Path(name).name for (name,) in portal.query("SELECT heatmap FROM diagnosis_prediction")
    }
    assert on_disk == in_rows


def test_make_run_holds_concurrent_uploads(tmp_path):
    with embedded_portal(tmp_path) as portal:
        token = _token(portal)
        sessions = [_browser_session(portal) for _ in range(2)]
        results: list = []
        threads = [
            threading.Thread(target=_api_upload, args=(portal, token, n, results))
            for n in range(UPLOADS_PER_PATH)
        ] + [
            threading.Thread(target=_browser_upload, args=(portal, sessions[n % 2], n, results))
            for n in range(UPLOADS_PER_PATH)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        assert len(results) == 2 * UPLOADS_PER_PATH, portal.log()
        refused = [r for r in results if r[2] not in (201, 202)]
        assert not refused, f"{refused}\n{portal.log()}"
        settled = wait_for(lambda: _settled(portal, 2 * UPLOADS_PER_PATH), timeout=180)
        statuses = portal.query("SELECT status, status_reason FROM diagnosis_case")
        assert settled, statuses
        _assert_exactly_once(portal, 2 * UPLOADS_PER_PATH)
        assert "database is locked" not in portal.log()


def test_embedded_sweeper_recovers_a_stuck_case(tmp_path):
    """A case left `queued` with a pending prediction (its in-process task lost, e.g. the server
    stopped mid-request) is predicted by the embedded sweeper, with no broker and no beat."""
    with embedded_portal(tmp_path, STUCK_CASE_SECONDS="2", SWEEP_INTERVAL_SECONDS="1") as portal:
        token = _token(portal)
        results: list = []
        _api_upload(portal, token, 0, results)
        assert results[0][2] == 202, results
        assert wait_for(lambda: _settled(portal, 1), timeout=120), portal.log()
        # Make it look like the task never ran: prediction pending, case back to `queued`.
        heatmaps = [name for (name,) in portal.query("SELECT heatmap FROM diagnosis_prediction")]
        with contextlib.closing(sqlite3.connect(portal.db_path, timeout=30)) as db:
            db.execute(
                "UPDATE diagnosis_prediction SET status = 'pending', heatmap = '', "
                "finished_at = NULL, started_at = NULL"
            )
            db.execute(
                "UPDATE diagnosis_case SET status = 'queued', updated_at = '2000-01-01 00:00:00'"
            )
            db.commit()
        for name in heatmaps:
            (portal.media / name).unlink()
        assert wait_for(lambda: _settled(portal, 1), timeout=60), portal.log()
        _assert_exactly_once(portal, 1)
