"""The two commands (`make run`, `make test`), the CI entry point and bin/ensure-services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def _dry_run(target: str) -> list[str]:
    result = subprocess.run(
        ["make", "-n", "--always-make", target],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def _index(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in:\n" + "\n".join(lines))


def test_make_test_runs_services_then_static_checks_then_pytest():
    lines = _dry_run("test")
    order = [
        _index(lines, "pip install -q -r requirements-dev.txt"),
        _index(lines, "bin/ensure-services"),
        _index(lines, "ruff check ."),
        _index(lines, "ruff format --check ."),
        _index(lines, "lint-imports"),
        _index(lines, "makemigrations --check --dry-run"),
        _index(lines, ".venv/bin/pytest"),
    ]
    assert order == sorted(order)


def test_make_run_is_the_embedded_default():
    lines = _dry_run("run")
    steps = [
        _index(lines, "pip install -q -r requirements.txt"),
        _index(lines, "manage.py migrate --noinput"),
        _index(lines, "manage.py demo_setup"),
        _index(lines, "manage.py runserver"),
    ]
    assert steps == sorted(steps)
    for line in lines[steps[1] :]:
        if "manage.py" in line:
            # No service from the shell leaks into the embedded mode.
            for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_CACHE_URL"):
                assert f"-u {name}" in line
            assert "DJANGO_DEBUG=1" in line
    assert "127.0.0.1:8000" in lines[steps[-1]]


def test_make_run_port_is_overridable():
    result = subprocess.run(
        ["make", "-n", "--always-make", "run", "PORT=8765"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "runserver --noreload 127.0.0.1:8765" in result.stdout


def test_ci_runs_make_test_with_ci_true():
    script = (BASE_DIR / ".ci" / "run").read_text()
    assert "export CI=true" in script
    assert script.strip().endswith("make test")
    assert os.access(BASE_DIR / ".ci" / "run", os.X_OK)


def test_ensure_services_is_valid_bash_and_executable():
    path = BASE_DIR / "bin" / "ensure-services"
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    text = path.read_text()
    for needle in ("PGPORT", "REDIS_PORT", "--appendonly", "chromium", "127.0.0.1"):
        assert needle in text


@pytest.mark.slow
@pytest.mark.parametrize(("ci", "returncode"), [("true", 1), ("", 0)])
def test_ci_turns_skips_into_failures(ci, returncode):
    env = {**os.environ, "CI": ci}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-header",
            "fracture_portal/tests/ci_probe_skip.py",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == returncode, result.stdout + result.stderr
    if ci:
        assert "must fail, not skip" in result.stdout
