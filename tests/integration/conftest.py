"""Fault-test harness: a private Redis (append-only on) on a free loopback port, real `celery worker`
processes with the project settings, and the test database that pytest-django created.

Each test owns its Redis and its workers, so killing them hurts nobody else. Tests using these
fixtures must be `transaction=True`: the worker processes only see committed rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from fracture_portal.celery import app as celery_app

PROJECT_DIR = Path(__file__).resolve().parents[2]
REDIS_SERVER = "/usr/bin/redis-server"

# Short bounds so recovery happens within seconds: visibility 20 s requires every time limit below
# 10 s (settings refuse anything else); the sweeper runs every 2 s and acts after 3 s.
WORKER_ENV = {
    "DJANGO_SETTINGS_MODULE": "fracture_portal.settings",
    "DJANGO_DEBUG": "1",
    "CELERY_VISIBILITY_TIMEOUT": "20",
    "CELERY_UNACKED_RESTORE_INTERVAL": "2",
    "CELERY_INFERENCE_TIME_LIMIT": "9",
    "CELERY_TASK_TIME_LIMIT": "9",
    "CELERY_TRAINING_TIME_LIMIT": "9",
    "STUCK_CASE_SECONDS": "3",
    "SWEEP_INTERVAL_SECONDS": "2",
    "RETRAIN_CHECK_INTERVAL_SECONDS": "3600",
    "INFERENCE_MAX_ATTEMPTS": "3",
    "LOG_LEVEL": "INFO",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy; return its value, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RedisServer:
    """redis-server with `appendonly yes` + `appendfsync everysec` in its own directory."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        if not wait_for(lambda: _port_open(self.port), timeout=10, interval=0.05):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        wait_for(lambda: not _port_open(self.port), timeout=5, interval=0.05)

    def queue_length(self, queue: str = "inference") -> int:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            return int(client.llen(queue))
        finally:
            client.close()


@dataclass
class Worker:
    """One `celery worker` process (prefork, concurrency 1) in its own process group."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_all(self) -> None:
        """SIGKILL the main process and its children at once (a host or container dying)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_all()
        else:  # its children may outlive a dead main process
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def ready(self) -> bool:
        return "ready." in self.log_path.read_text(errors="replace")


@dataclass
class Harness:
    tmp: Path
    redis: RedisServer
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, *, beat: bool = False, **extra_env: str) -> Worker:
        name = f"fault{len(self.workers) + 1}"
        log_path = self.tmp / f"{name}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "fracture_portal", "worker",
            "-Q", "inference,default", "-c", "1", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        ]  # fmt: skip
        if beat:
            cmd += ["-B", "-s", str(self.tmp / f"{name}-beat-schedule")]
        process = subprocess.Popen(
            cmd,
            cwd=PROJECT_DIR,
            env={**self.env, **extra_env},
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(name=name, log_path=log_path, process=process)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.log()}" for w in self.workers)


def _test_database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Point this test process's Celery app (what `case_create` dispatches through) at `url`."""
    keys = ("broker_write_url", "broker_read_url")
    old = {key: celery_app.conf.get(key) for key in keys}
    celery_app.conf.update(dict.fromkeys(keys, url))
    celery_app._after_fork()  # drop the cached connection and producer pools
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            celery_app.pool.force_close_all()
        celery_app.conf.update(old)
        celery_app._after_fork()


@pytest.fixture(scope="session")
def fault_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("fault-model") / "tiny", size=64, seed=0)


@pytest.fixture
def harness(transactional_db: None, tmp_path: Path, fault_artifact: Path) -> Iterator[Harness]:
    """A private Redis, the active tiny model, the test process publishing to that Redis, and a
    way to start workers that see the test database and media folder. Everything is killed after."""
    from diagnosis.services.models import model_version_register

    model_version_register(artifact_dir=fault_artifact, activate=True)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = RedisServer(directory=redis_dir)
    redis.start()
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        **WORKER_ENV,
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": redis.url,
        "REDIS_CACHE_URL": "",
        "MEDIA_ROOT": str(media),
    }
    h = Harness(tmp=tmp_path, redis=redis, env=env)
    try:
        with publishing_to(redis.url):
            assert celery_app.connection_for_write().as_uri().endswith(f":{redis.port}/0")
            yield h
    finally:
        for worker in h.workers:
            worker.stop()
        redis.kill()
