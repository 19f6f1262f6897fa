"""Retraining killed mid-run (RELIABILITY.md §3): a real `celery worker -Q training` process is
SIGKILLed while it trains on a tiny generated dataset. The active model must stay untouched (same
version, same checksummed artifact), nothing half-written may be registered, the run must be
marked failed by the heartbeat check, and a new trigger must be possible and run to the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnosis.inference import artifact_path
from diagnosis.models import ModelVersion, TrainingRun
from diagnosis.selectors.models import model_version_get_active
from diagnosis.services.training import retrain_schedule_check, training_run_start
from diagnosis.tests.retrain_helpers import make_base_dataset
from tests.integration.conftest import PROJECT_DIR, Harness, Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRAINING_ENV = {
    # the harness's short inference limits would cut training off; keep limits below visibility/2
    "CELERY_VISIBILITY_TIMEOUT": "3600",
    "CELERY_TRAINING_TIME_LIMIT": "900",
    "CELERY_TASK_TIME_LIMIT": "120",
    "CELERY_INFERENCE_TIME_LIMIT": "120",
    "TRAINING_HEARTBEAT_SECONDS": "1",
}
CONFIG = {
    "arch": "plain",
    "pretrained": False,
    "size": 48,
    "width": 8,
    "depth": 2,
    "head_epochs": 0,
    "batch_size": 8,
    "lr": 0.01,
    "patience": 100,
    "augment": False,
    "fine_tune": False,
}


def start_training_worker(harness: Harness, **env: str) -> Worker:
    name = f"trainer{len(harness.workers) + 1}"
    log_path = harness.tmp / f"{name}.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "fracture_portal", "worker",
            "-Q", "training", "-c", "1", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        ],
        cwd=PROJECT_DIR,
        env={**harness.env, **TRAINING_ENV, **env},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    worker = Worker(name=name, log_path=log_path, process=process)
    harness.workers.append(worker)
    return worker


def _artifact_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_killing_the_training_worker_leaves_the_active_model_and_allows_a_new_run(
    harness: Harness, tmp_path: Path, settings
) -> None:
    store, work = tmp_path / "models", tmp_path / "training"
    env = {"MODEL_STORE_DIR": str(store), "TRAINING_WORK_DIR": str(work)}
    settings.MODEL_STORE_DIR, settings.TRAINING_WORK_DIR = store, work
    base = make_base_dataset(tmp_path / "base", per_class={"train": 40, "val": 8, "test": 8})
    active = model_version_get_active()
    assert active is not None
    active_dir = artifact_path(active.artifact_dir)
    before = _artifact_files(active_dir)

    worker = start_training_worker(harness, **env)
    run = training_run_start(
        trigger="manual", config={**CONFIG, "epochs": 60, "base_dir": str(base)}
    )  # committed: the task is sent to the private Redis at once

    def mid_training() -> bool:
        run.refresh_from_db()
        return run.status == "running" and (run.progress.get("epoch") or 0) >= 2

    if not wait_for(mid_training, timeout=240, interval=0.5):
        pytest.fail(f"the run never got going: {run.status} {run.progress}\n{harness.logs()}")
    worker.kill_all()  # SIGKILL the worker and its child mid-epoch
    assert not worker.alive()

    # nothing finishes the run now; the periodic check notices the missing heartbeat
    settings.TRAINING_STALE_SECONDS = 3
    time.sleep(4)
    assert retrain_schedule_check()["stale_failed"] == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "no heartbeat" in run.error
    assert run.result_version is None
    # the killed run's scratch (snapshot images, checkpoints) went with the failure
    assert list(work.glob(f"run-{run.pk}-*")) == []
    assert list(store.glob(".*.tmp-*")) == [] if store.exists() else True

    # the active model is untouched and nothing half-written was registered or published
    assert model_version_get_active() == active
    assert ModelVersion.objects.count() == 1
    assert _artifact_files(active_dir) == before
    published = [p for p in store.glob("*") if (p / "card.json").exists()] if store.exists() else []
    assert published == []

    # a new trigger is accepted and runs to the end on a fresh worker
    start_training_worker(harness, **env)
    retry = training_run_start(trigger="manual", config={**CONFIG, "epochs": 2})

    def finished() -> bool:
        retry.refresh_from_db()
        return retry.status not in ("queued", "running")

    if not wait_for(finished, timeout=300, interval=0.5):
        pytest.fail(f"the new run did not finish: {retry.status}\n{harness.logs()}")
    assert retry.status == TrainingRun.Status.SUCCEEDED, retry.error + retry.log
    assert retry.snapshot.base_dataset == str(base)
    assert retry.result_version is not None
    assert (store / retry.result_version.version / "card.json").is_file()
