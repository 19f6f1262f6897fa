"""Shared set-up of the inference benchmarks: Django against PostgreSQL + Redis, a registered model,
one real `celery worker -Q inference --concurrency 1` process.

Environment: DATABASE_URL (PostgreSQL; migrated here) and CELERY_BROKER_URL (Redis) are required.
The model is `--model DIR` (an artifact folder), else the shipped ml/weights/locate-256-v1 if present,
else a random-weight EfficientNet-Lite0 256 px artifact built once under var/bench/ (the shipped
architecture: same compute, meaningless predictions).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
sys.path.insert(0, str(ROOT))


def setup_django(*, batch_size: int = 32) -> None:
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} must be set (PostgreSQL and Redis); see docs/benchmarks.md")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")
    # Production settings, as a deployed worker runs them (DEBUG off: no per-query logging).
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_hex(24))
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    os.environ.setdefault("MEDIA_ROOT", str(BENCH_DIR / "media"))
    os.environ["INFERENCE_BATCH_SIZE"] = str(batch_size)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def model_dir(arg: str | None) -> tuple[Path, str]:
    """(artifact folder, description)."""
    if arg:
        return Path(arg), f"artifact {arg}"
    shipped = ROOT / "ml" / "weights" / "locate-256-v1"
    if (shipped / "card.json").exists():
        return shipped, "the shipped model (ml/weights/locate-256-v1)"
    out = BENCH_DIR / "model-efficientnet_lite0-256"
    if not (out / "card.json").exists():
        code = (
            "import sys; from pathlib import Path;"
            "from ml.config import ImageSpec; from ml.model import build_model, LAST_CONV;"
            "from ml.registry import ModelCard, save;"
            "spec = ImageSpec(size=256);"
            "m = build_model(spec, 'efficientnet_lite0', seed=0);"
            "save(m, ModelCard(version='bench-lite0-random', architecture='efficientnet_lite0',"
            " spec=spec, gradcam_layer=LAST_CONV), Path(sys.argv[1]))"
        )
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT)
    return out, "a random-weight EfficientNet-Lite0 at 256 px (the shipped architecture)"


def register(path: Path) -> Any:
    from diagnosis.services.models import model_version_register

    version, _ = model_version_register(artifact_dir=path, activate=True)
    return version


def start_worker(
    log_name: str, *, concurrency: int = 1, intra_op: int = 0
) -> subprocess.Popen[bytes]:
    """One inference worker with `concurrency` children; `intra_op` > 0 sets TensorFlow's threads
    per operation in each child (TF_NUM_INTRAOP_THREADS; 0: TensorFlow's default, every core)."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    log = (BENCH_DIR / log_name).open("wb")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if intra_op > 0:
        env["TF_NUM_INTRAOP_THREADS"] = str(intra_op)
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "fracture_portal", "worker", "-Q", "inference",
            "-c", str(concurrency), "-n", f"bench-{os.getpid()}@%h", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-l", "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


def samples() -> list[Path]:
    return sorted((ROOT / "samples").glob("*.jpg"))


def bench_user() -> Any:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-clinician")
    return user


def upload(user: Any, path: Path, ref: str) -> Any:
    """What the intake page does (validate, store, commit, then request predictions)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from diagnosis.services.cases import case_create

    return case_create(
        user=user,
        patient_ref=ref,
        body_part="hand",
        clinical_question="",
        files=[SimpleUploadedFile(path.name, path.read_bytes(), "image/jpeg")],
    )


def wait_predicted(case_id: int, *, timeout: float = 120.0, interval: float = 0.01) -> float:
    """Seconds until the case is `predicted` (or failed) in the database, polling every 10 ms."""
    from diagnosis.models import Case

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = Case.objects.filter(pk=case_id).values_list("status", flat=True).first()
        if status in (Case.Status.PREDICTED, Case.Status.FAILED):
            if status == Case.Status.FAILED:
                raise RuntimeError(f"case {case_id} failed")
            return time.perf_counter() - started
        time.sleep(interval)
    raise TimeoutError(f"case {case_id} not predicted in {timeout} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]
