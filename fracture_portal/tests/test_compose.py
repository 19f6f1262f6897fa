"""docker-compose.yml and the Dockerfile refer only to modules, queues and variables that exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (BASE_DIR / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ["web", "worker-inference", "worker-training", "worker", "beat"]
CELERY_SERVICES = ["worker-inference", "worker-training", "worker", "beat"]


def _defaults(value: str) -> str:
    """What compose makes of `${NAME:-default}` when .env leaves NAME unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    args = shlex.split(command) if isinstance(command, str) else list(command)
    return [_defaults(arg) for arg in args]


def _subcommand(args: list[str]) -> str:
    """celery -A fracture_portal <subcommand> ..."""
    return args[args.index("-A") + 2]


def _flag(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def _env_example_names() -> set[str]:
    """Names in .env.example, set or commented out (`# NAME=...`)."""
    text = (BASE_DIR / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))


def test_services_are_the_designed_set():
    assert set(SERVICES) == {"postgres", "redis", *APP_SERVICES}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_restarts_and_has_a_healthcheck(service):
    spec = SERVICES[service]
    assert spec["restart"] == "unless-stopped"
    assert spec["healthcheck"]["test"]


def test_app_services_share_one_anchor():
    assert re.search(r"^x-app: &app$", COMPOSE_TEXT, re.M)
    assert len(re.findall(r"^    <<: \*app$", COMPOSE_TEXT, re.M)) == len(APP_SERVICES)
    env = SERVICES["web"]["environment"]
    for service in APP_SERVICES:
        environment = dict(SERVICES[service]["environment"])
        if service == "worker-inference":  # the shared config plus its thread count
            environment.pop("TF_NUM_INTRAOP_THREADS")
        assert environment == env
    for service in ("web", "worker-inference", "worker-training", "worker"):
        assert "media:/app/var/media" in SERVICES[service]["volumes"]


def test_postgres_and_redis_are_durable():
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    redis = SERVICES["redis"]["command"]
    assert redis[:1] == ["redis-server"]
    assert _flag(redis, "--appendonly") == "yes"
    assert _flag(redis, "--appendfsync") == "everysec"
    assert "redisdata:/data" in SERVICES["redis"]["volumes"]


def test_web_migrates_collects_static_and_serves_the_wsgi_app():
    script = _command("web")[-1]
    assert "manage.py migrate --noinput" in script
    assert "manage.py collectstatic --noinput" in script
    match = re.search(r"gunicorn ([\w.]+):(\w+)", script)
    assert match
    module = importlib.import_module(match.group(1))
    assert callable(getattr(module, match.group(2)))
    # The health check hits a URL that exists and answers without a session.
    assert "/healthz" in str(SERVICES["web"]["healthcheck"]["test"])


@pytest.mark.parametrize("service", CELERY_SERVICES)
def test_celery_commands_point_at_the_real_app(service):
    args = _command(service)
    assert args[0] == "celery"
    app_module = importlib.import_module(_flag(args, "-A", "--app"))
    assert app_module.celery_app.main == "fracture_portal"


def test_every_routed_queue_has_a_worker_and_no_worker_listens_to_nothing():
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    routed.add(settings.CELERY_TASK_DEFAULT_QUEUE)
    consumed = {}
    for service in ("worker-inference", "worker-training", "worker"):
        args = _command(service)
        assert _subcommand(args) == "worker"
        consumed[service] = set(_flag(args, "-Q", "--queues").split(","))
    assert set().union(*consumed.values()) == routed
    assert consumed["worker-inference"] == {"inference"}
    assert consumed["worker-training"] == {"training"}


def test_inference_worker_has_one_process_and_a_gpu():
    args = _command("worker-inference")
    assert _flag(args, "--concurrency", "-c") == "1"
    # TensorFlow's own default thread count unless a CPU host sets one child per core.
    environment = SERVICES["worker-inference"]["environment"]
    assert _defaults(environment["TF_NUM_INTRAOP_THREADS"]) == "0"
    devices = SERVICES["worker-inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert SERVICES["worker-inference"]["build"]["args"]["TF_PACKAGE"].endswith(
        "tensorflow[and-cuda]}"
    )


def test_beat_runs_the_schedule_that_settings_define():
    args = _command("beat")
    assert _subcommand(args) == "beat"
    assert settings.CELERY_BEAT_SCHEDULE
    from fracture_portal.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, f"beat schedules unknown task {entry['task']}"


def test_every_environment_variable_is_documented_and_read():
    settings_source = (BASE_DIR / "fracture_portal" / "settings.py").read_text()
    documented = _env_example_names()
    env = SERVICES["web"]["environment"]
    for name in env:
        if name == "DJANGO_SETTINGS_MODULE":  # Django's own, checked below
            continue
        assert name in documented, f"{name} is not in .env.example"
        assert f'"{name}"' in settings_source, f"settings.py does not read {name}"
    interpolated = set(re.findall(r"\$\{(\w+)", COMPOSE_TEXT))
    assert not interpolated - documented, interpolated - documented
    assert importlib.import_module(env["DJANGO_SETTINGS_MODULE"].rsplit(".", 1)[0])


def test_dockerfile_builds_cpu_by_default_and_gpu_by_build_arg():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "ARG TF_PACKAGE=tensorflow-cpu" in dockerfile
    pinned = re.search(
        r"^tensorflow-cpu==([\d.]+)$", (BASE_DIR / "requirements.txt").read_text(), re.M
    )
    assert pinned
    assert f"ARG TF_VERSION={pinned.group(1)}" in dockerfile
    assert "USER portal" in dockerfile
    ignored = (BASE_DIR / ".dockerignore").read_text().split()
    assert {".venv", "var", "data", ".env", ".git"} <= set(ignored)
