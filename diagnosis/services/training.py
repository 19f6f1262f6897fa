"""Training runs: start (button, API, command, schedule), execute on the `training` queue, cancel,
fail stale runs, and the gated promotion of the resulting candidate.

One run at a time: a partial unique constraint allows a single queued/running row, so a second
trigger gets `TrainingInProgressError` (409, `training_in_progress`). A running run beats a heartbeat
from a background thread; a worker killed mid-run stops beating and the periodic check marks the run
failed. The candidate is written by `ml.registry.save` (temp folder + atomic rename) and registered
only once complete, so nothing half-written can become active.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Right
from django.http import HttpRequest
from django.utils import timezone

from diagnosis import inference, training_bridge
from diagnosis.exceptions import ConflictError, DomainError, InvalidStateError
from diagnosis.models import DatasetSnapshot, ModelVersion, TrainingRun
from diagnosis.selectors.models import model_version_get_active
from diagnosis.selectors.training import (
    IN_FLIGHT,
    new_reviews_since_last_run,
    training_run_get_in_flight,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.datasets import snapshot_create, snapshot_materialize
from diagnosis.services.models import (
    HIGH_SENSITIVITY,
    model_version_activate,
    model_version_register,
    promotion_decide,
)
from diagnosis.tasks.training import training_run as training_run_task

logger = logging.getLogger(__name__)

LOG_LIMIT = 20_000  # characters of run log kept (the tail)
PROGRESS_SECONDS = 2.0  # per-batch progress is written at most this often
# Keys an admin may set; anything else in a request is refused. Values are checked by TrainConfig.
CONFIG_KEYS = {
    "arch": str,
    "pretrained": bool,
    "size": int,
    "epochs": int,
    "head_epochs": int,
    "batch_size": int,
    "lr": float,
    "finetune_lr": float,
    "seed": int,
    "patience": int,
    "width": int,
    "depth": int,
    "augment": bool,
    "max_train_images": int,
    "fine_tune": bool,  # start from the active model's weights (a short retrain)
    "snapshot_id": int,  # reuse a snapshot instead of freezing a new one
    "base_dir": str,  # base dataset folder for the new snapshot ("" for none)
}
LIMITS = {"epochs": (1, 200), "size": (32, 1024), "batch_size": (1, 512), "head_epochs": (0, 200)}


class TrainingInProgressError(ConflictError):
    code = "training_in_progress"


class InvalidTrainingConfigError(DomainError):
    code, status_code = "invalid_training_config", 400


def training_config_clean(config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a requested configuration; fill the defaults (a fine-tune of the active model)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidTrainingConfigError(f"Unknown settings: {', '.join(unknown)}.")
    clean: dict[str, Any] = {}
    for key, value in config.items():
        kind = CONFIG_KEYS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise InvalidTrainingConfigError(f"{key} must be true or false.")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidTrainingConfigError(f"{key} must be an integer.")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidTrainingConfigError(f"{key} must be a number.")
            value = float(value)
        elif not isinstance(value, str) or len(value) > 500 or "\x00" in value:
            raise InvalidTrainingConfigError(f"{key} must be a short text.")
        low, high = LIMITS.get(key, (None, None))
        if low is not None and not low <= value <= high:  # type: ignore[operator]
            raise InvalidTrainingConfigError(f"{key} must be between {low} and {high}.")
        clean[key] = value
    clean.setdefault("epochs", settings.RETRAIN_DEFAULT_EPOCHS)
    clean.setdefault("fine_tune", True)
    return clean


def training_run_start(
    *,
    trigger: str,
    user: AbstractBaseUser | None = None,
    config: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    dispatch: bool = True,
) -> TrainingRun:
    """Queue a training run on the `training` queue (after commit). One at a time.

    `dispatch=False` leaves the run queued for the caller to execute in-process (`retrain --now`).
    Without a broker (the embedded mode) the run executes in a background thread of this process,
    so the page that started it can show its progress."""
    if trigger not in TrainingRun.Trigger.values:
        raise InvalidTrainingConfigError(f"Unknown trigger {trigger!r}.")
    clean = training_config_clean(config)
    snapshot_id = clean.get("snapshot_id")
    if snapshot_id is not None and not DatasetSnapshot.objects.filter(pk=snapshot_id).exists():
        raise InvalidTrainingConfigError("That snapshot does not exist.")
    in_flight = training_run_get_in_flight()
    if in_flight is not None:
        raise TrainingInProgressError(
            "A training run is already queued or running.", run_id=in_flight.pk
        )
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                trigger=trigger,
                triggered_by=user if user is not None and user.is_authenticated else None,
                config=clean,
                snapshot_id=snapshot_id,
            )
            audit_record(
                action="training.start",
                actor=user,
                request=request,
                obj=run,
                trigger=trigger,
                config=clean,
            )
            if dispatch:
                transaction.on_commit(functools.partial(_dispatch, run.pk))
    except IntegrityError as exc:  # a concurrent trigger won the race for the one slot
        raise TrainingInProgressError("A training run is already queued or running.") from exc
    logger.info("training run queued", extra={"run_id": run.pk, "trigger": trigger})
    return run


def _dispatch(run_id: int) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        threading.Thread(
            target=_execute_in_thread, args=(run_id,), name=f"training-{run_id}", daemon=True
        ).start()
    else:
        training_run_task.delay(run_id)


def _execute_in_thread(run_id: int) -> None:
    try:
        training_run_execute(run_id=run_id)
    finally:
        connection.close()


@transaction.atomic
def training_run_cancel(
    *, run: TrainingRun, user: AbstractBaseUser | None, request: HttpRequest | None = None
) -> TrainingRun:
    """Ask a run to stop: a queued run is cancelled at once, a running one at its next check."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in IN_FLIGHT:
        raise InvalidStateError("Only a queued or running run can be cancelled.", run_id=run.pk)
    run.cancel_requested = True
    fields = ["cancel_requested"]
    if run.status == TrainingRun.Status.QUEUED:
        run.status = TrainingRun.Status.CANCELLED
        run.finished_at = timezone.now()
        fields += ["status", "finished_at"]
    run.save(update_fields=fields)
    audit_record(action="training.cancel", actor=user, request=request, obj=run)
    return run


def _append_log(run_id: int, line: str) -> None:
    stamped = f"{timezone.now():%H:%M:%S} {line}\n"
    TrainingRun.objects.filter(pk=run_id).update(
        log=Right(Concat(F("log"), Value(stamped)), LOG_LIMIT)
    )


def _finish(run_id: int, status: str, **fields: Any) -> None:
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
        status=status, finished_at=timezone.now(), **fields
    )


def training_run_fail(*, run_id: int, reason: str) -> None:
    """Mark an in-flight run failed (the task's failure hook, the stale check)."""
    updated = TrainingRun.objects.filter(pk=run_id, status__in=IN_FLIGHT).update(
        status=TrainingRun.Status.FAILED, error=reason[:1000], finished_at=timezone.now()
    )
    if updated:
        _append_log(run_id, f"failed: {reason[:500]}")
        audit_record(
            action="training.fail",
            object_type="trainingrun",
            object_id=str(run_id),
            outcome="failure",
            reason=reason[:200],
        )
        logger.warning("training run failed", extra={"run_id": run_id, "reason": reason[:200]})


def training_runs_fail_stale(*, now: Any = None) -> int:
    """Runs whose worker died: running without a heartbeat for TRAINING_STALE_SECONDS, or queued
    and never picked up for TRAINING_QUEUED_STALE_SECONDS. Frees the slot for a new trigger."""
    now = now or timezone.now()
    stale_running = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING,
        heartbeat_at__lt=now - timedelta(seconds=settings.TRAINING_STALE_SECONDS),
    ).values_list("pk", flat=True)
    stale_queued = TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED,
        created_at__lt=now - timedelta(seconds=settings.TRAINING_QUEUED_STALE_SECONDS),
    ).values_list("pk", flat=True)
    count = 0
    for run_id in list(stale_running):
        training_run_fail(
            run_id=run_id,
            reason="The training worker stopped (no heartbeat); the active model is unchanged.",
        )
        count += 1
    for run_id in list(stale_queued):
        training_run_fail(run_id=run_id, reason="No training worker picked the run up in time.")
        count += 1
    return count


def retrain_schedule_check() -> dict[str, Any]:
    """The beat check: fail stale runs, then start a scheduled run when enough new reviews exist."""
    failed = training_runs_fail_stale()
    new_reviews = new_reviews_since_last_run()
    threshold = settings.RETRAIN_MIN_NEW_REVIEWS
    started = None
    if threshold > 0 and new_reviews >= threshold and training_run_get_in_flight() is None:
        try:
            started = training_run_start(trigger=TrainingRun.Trigger.SCHEDULED).pk
        except TrainingInProgressError:
            started = None
    return {"stale_failed": failed, "new_reviews": new_reviews, "started_run": started}


class _Heartbeat:
    """Updates `heartbeat_at` every TRAINING_HEARTBEAT_SECONDS from a thread (its own connection),
    so a long epoch does not look like a dead worker; a killed process stops it with itself."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(settings.TRAINING_HEARTBEAT_SECONDS):
                TrainingRun.objects.filter(
                    pk=self.run_id, status=TrainingRun.Status.RUNNING
                ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _RunCallbacks:
    """`progress` and `should_stop` for ml.train: write the epoch and metrics, read cancellation."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.stopped = False
        self._last_check = 0.0
        self._last_write = 0.0
        self._cancel = False

    def progress(self, info: Any) -> None:
        """Called per batch: the row is written at most every PROGRESS_SECONDS, and at each epoch's
        end (which carries `val_auroc`, and goes to the log)."""
        data = {k: _jsonable(v) for k, v in dict(info).items()}
        epoch_end = "val_auroc" in data
        now = time.monotonic()
        if not epoch_end and now - self._last_write < PROGRESS_SECONDS:
            return
        self._last_write = now
        TrainingRun.objects.filter(pk=self.run_id).update(
            progress=data, heartbeat_at=timezone.now()
        )
        if epoch_end:
            shown = ", ".join(f"{k}={v}" for k, v in data.items() if k not in {"step", "steps"})
            _append_log(self.run_id, shown[:500])

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._cancel = bool(
                TrainingRun.objects.filter(pk=self.run_id)
                .values_list("cancel_requested", flat=True)
                .first()
            )
        if self._cancel:
            self.stopped = True
        return self._cancel


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    try:
        return round(float(value), 5)
    except (TypeError, ValueError):
        return str(value)[:200]


def _claim(run_id: int) -> TrainingRun | None:
    now = timezone.now()
    claimed = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRun.Status.QUEUED, cancel_requested=False
    ).update(status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now)
    if not claimed:
        return None
    return TrainingRun.objects.select_related("triggered_by", "snapshot").get(pk=run_id)


def _store_plots(version: ModelVersion, plots: dict[str, Path]) -> dict[str, str]:
    stored = {}
    for name, path in plots.items():
        target = f"models/{version.version}/{name}.png"
        if default_storage.exists(target):
            default_storage.delete(target)
        stored[name] = default_storage.save(target, ContentFile(path.read_bytes()))
    return stored


def training_run_execute(*, run_id: int) -> None:
    """The worker's job (idempotent: a run that is not queued is left alone)."""
    run = _claim(run_id)
    if run is None:
        logger.info("training run not claimable", extra={"run_id": run_id})
        return
    settings.TRAINING_WORK_DIR.mkdir(parents=True, exist_ok=True)
    callbacks = _RunCallbacks(run.pk)
    with (
        _Heartbeat(run.pk),
        tempfile.TemporaryDirectory(
            dir=settings.TRAINING_WORK_DIR, prefix=f"run-{run.pk}-"
        ) as work,
    ):
        try:
            _execute(run, Path(work), callbacks)
        except Exception as exc:
            if isinstance(exc, InvalidStateError):
                return
            logger.exception("training run failed", extra={"run_id": run.pk})
            training_run_fail(run_id=run.pk, reason=f"{type(exc).__name__}: {exc}")


def _execute(run: TrainingRun, work: Path, callbacks: _RunCallbacks) -> None:
    config = dict(run.config)
    snapshot = run.snapshot
    if snapshot is None:
        _append_log(run.pk, "freezing a dataset snapshot")
        base_dir = config.get("base_dir")
        snapshot = snapshot_create(user=run.triggered_by, base_dir=base_dir)
        TrainingRun.objects.filter(pk=run.pk).update(snapshot=snapshot)
    counts = snapshot.counts
    _append_log(
        run.pk,
        f"snapshot {snapshot.version}: "
        + ", ".join(f"{s} {counts.get(s, {}).get('total', 0)}" for s in ("train", "val", "test")),
    )
    data_dir = snapshot_materialize(snapshot=snapshot, dest=work / "data")
    active = model_version_get_active()
    init_from = None
    if config.get("fine_tune") and active is not None:
        init_from = inference.artifact_path(active.artifact_dir)
    version_name = f"retrain-{run.pk}-{timezone.now():%Y%m%d-%H%M%S}"
    out_dir = settings.MODEL_STORE_DIR / version_name
    train_config = {
        k: v for k, v in config.items() if k not in {"fine_tune", "snapshot_id", "base_dir"}
    }
    train_config["version"] = version_name
    _append_log(
        run.pk,
        f"training {version_name}"
        + (f" (fine-tuning {active.version})" if init_from else " (from the configuration)"),
    )
    outcome = training_bridge.train_model(
        config=train_config,
        data_dir=data_dir,
        out_dir=out_dir,
        work_dir=work / "train",
        init_from=init_from,
        progress=callbacks.progress,
        should_stop=callbacks.should_stop,
    )
    if outcome.cancelled or outcome.artifact_dir is None:
        shutil.rmtree(out_dir, ignore_errors=True)
        _append_log(run.pk, "cancelled; the candidate was discarded")
        _finish(run.pk, TrainingRun.Status.CANCELLED)
        audit_record(action="training.cancelled", object_type="trainingrun", object_id=str(run.pk))
        return
    with transaction.atomic():
        candidate, _ = model_version_register(
            artifact_dir=outcome.artifact_dir, version=version_name
        )
    _append_log(
        run.pk, f"evaluating {candidate.version} and the active model on the frozen test split"
    )
    evaluation = training_bridge.evaluate_candidate(
        candidate_dir=outcome.artifact_dir,
        active_dir=inference.artifact_path(active.artifact_dir) if active else None,
        data_dir=data_dir,
        split="test",
        plots_dir=work / "plots",
        n_boot=settings.PROMOTION_BOOTSTRAP_SAMPLES,
    )
    plots = _store_plots(candidate, evaluation.plots)
    if active is not None and evaluation.active is not None:
        # the active model's figures on the same frozen test split, for the side-by-side table
        # (its card's own metrics stay in ModelVersion.card)
        ModelVersion.objects.filter(pk=active.pk).update(
            metrics={**evaluation.active, "snapshot": snapshot.version, "split": "test"}
        )
    candidate_metrics = {**evaluation.candidate, "snapshot": snapshot.version, "split": "test"}
    ModelVersion.objects.filter(pk=candidate.pk).update(
        metrics=candidate_metrics, plots=plots, training_run=run
    )
    decision = promotion_decide(
        comparison=evaluation.comparison,
        candidate_sensitivity=evaluation.candidate["operating_points"][HIGH_SENSITIVITY][
            "sensitivity"
        ],
        active_sensitivity=(
            evaluation.active["operating_points"][HIGH_SENSITIVITY]["sensitivity"]
            if evaluation.active
            else None
        ),
        localisation=evaluation.localisation,
    )
    decision.update(
        {
            "candidate": candidate.version,
            "active": active.version if active else "",
            "comparison": evaluation.comparison,
            "localisation": evaluation.localisation,
            "active_metrics": evaluation.active,
            "snapshot": snapshot.version,
        }
    )
    _append_log(run.pk, "; ".join(decision["reasons"]))
    with transaction.atomic():
        current = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if current.status != TrainingRun.Status.RUNNING:  # declared dead meanwhile: do not promote
            raise InvalidStateError("The run was stopped before promotion.", run_id=run.pk)
        if decision["promote"]:
            model_version_activate(
                version=ModelVersion.objects.get(pk=candidate.pk),
                user=None,
                reason="auto",
                decision={"reasons": decision["reasons"]},
            )
        _finish(
            run.pk,
            TrainingRun.Status.SUCCEEDED,
            result_version=candidate,
            decision=decision,
        )
        audit_record(
            action="training.finish",
            object_type="trainingrun",
            object_id=str(run.pk),
            candidate=candidate.version,
            promoted=bool(decision["promote"]),
            snapshot=snapshot.version,
        )
    _append_log(
        run.pk,
        f"{candidate.version} "
        + ("promoted automatically" if decision["promote"] else "held for an admin's approval"),
    )
    logger.info(
        "training run finished",
        extra={"run_id": run.pk, "candidate": candidate.version, "promoted": decision["promote"]},
    )
