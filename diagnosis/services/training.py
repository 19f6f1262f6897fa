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
from diagnosis.models import DatasetSnapshot, Label, ModelVersion, TrainingRun
from diagnosis.selectors.models import model_version_get_active, model_version_localises
from diagnosis.selectors.training import (
    IN_FLIGHT,
    new_reviews_since_last_run,
    snapshot_get_latest,
    training_run_get_in_flight,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.datasets import (
    snapshot_create,
    snapshot_evidence,
    snapshot_materialize,
    snapshot_reusable,
)
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
    "variants": int,  # a localising run: augmented copies cached per training image
    "fine_tune": bool,  # start from the active model's weights (a short retrain)
    "snapshot_id": int,  # reuse a snapshot instead of freezing a new one
    "base_dir": str,  # base dataset folder for the new snapshot ("" for none)
}
SCHEDULE_FAILURE_BACKOFF = timedelta(hours=1)
LIMITS = {
    "epochs": (1, 200),
    "size": (32, 1024),
    "batch_size": (1, 512),
    "head_epochs": (0, 200),
    "variants": (1, 20),
}


class TrainingInProgressError(ConflictError):
    code = "training_in_progress"


class InvalidTrainingConfigError(DomainError):
    code, status_code = "invalid_training_config", 400


class InsufficientTrainingDataError(DomainError):
    """Too few labelled images of a class to train and evaluate a model: refused before a run (or
    a snapshot) is created, with the numbers."""

    code, status_code = "insufficient_training_data", 409


_CLASS_NAMES = {Label.FRACTURED: "fractured", Label.NOT_FRACTURED: "not-fractured"}


def training_evidence_check(*, config: dict[str, Any]) -> dict[str, int]:
    """Refuse a run that cannot train: fewer than RETRAIN_MIN_IMAGES_PER_CLASS labelled images of
    either class for a new snapshot, or a chosen snapshot whose train or val split lacks a class.
    Returns the per-class counts."""
    snapshot_id = config.get("snapshot_id")
    if snapshot_id is not None:
        snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
        snapshot_check_trainable(snapshot)
        return {label: snapshot.counts.get("train", {}).get(label, 0) for label in Label.values}
    counts = snapshot_evidence(base_dir=config.get("base_dir"))
    need = settings.RETRAIN_MIN_IMAGES_PER_CLASS
    if any(counts[label] < need for label in Label.values):
        raise InsufficientTrainingDataError(
            f"Retraining needs at least {need} fractured and {need} not-fractured labelled "
            f"images (reviewed, plus the base dataset if one is set); there are "
            f"{counts[Label.FRACTURED]} and {counts[Label.NOT_FRACTURED]}.",
            needed_per_class=need,
            fractured=counts[Label.FRACTURED],
            not_fractured=counts[Label.NOT_FRACTURED],
        )
    return counts


def snapshot_check_trainable(snapshot: DatasetSnapshot) -> None:
    """Train and val need both classes, test at least one image (what training and the
    evaluation need); raises InsufficientTrainingDataError saying which split lacks what."""
    for split, need_both in (("train", True), ("val", True), ("test", False)):
        counts = snapshot.counts.get(split, {})
        fractured = counts.get(Label.FRACTURED, 0)
        not_fractured = counts.get(Label.NOT_FRACTURED, 0)
        short = (
            (fractured == 0 or not_fractured == 0) if need_both else fractured + not_fractured == 0
        )
        if short:
            raise InsufficientTrainingDataError(
                f"Snapshot {snapshot.version} cannot train a model: its {split} split has "
                f"{fractured} fractured and {not_fractured} not-fractured images (train and val "
                "each need both classes, test at least one image). Review more cases or add a "
                "base dataset.",
                snapshot=snapshot.version,
                split=split,
                fractured=fractured,
                not_fractured=not_fractured,
            )


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
    training_evidence_check(config=clean)  # before any run or snapshot exists
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


def _scratch_dirs(run_id: int) -> list[Path]:
    """The run's scratch folders: its work folder, and a half-written candidate (ml.registry.save
    builds `.<version>.tmp-*` beside the store and renames it when complete)."""
    found = list(settings.TRAINING_WORK_DIR.glob(f"run-{run_id}-*"))
    found += settings.MODEL_STORE_DIR.glob(f".retrain-{run_id}-*.tmp-*")
    return [path for path in found if path.is_dir()]


def training_scratch_clean(*, run_id: int | None = None) -> int:
    """Remove the scratch folders of `run_id`, or (None) of every run not in flight: a worker
    killed mid-run cannot clean up itself. Scratch folders live on the training host, so each run's
    start cleans there too, whichever process marked the run failed. Returns folders removed."""
    if run_id is not None:
        dirs = _scratch_dirs(run_id)
    else:
        in_flight = set(
            TrainingRun.objects.filter(status__in=IN_FLIGHT).values_list("pk", flat=True)
        )
        dirs = []
        for pattern in ("run-*-*", ".retrain-*-*.tmp-*"):
            root = (
                settings.TRAINING_WORK_DIR
                if pattern.startswith("run")
                else settings.MODEL_STORE_DIR
            )
            for path in root.glob(pattern):
                number = path.name.lstrip(".").split("-")[1]
                if path.is_dir() and number.isdecimal() and int(number) not in in_flight:
                    dirs.append(path)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    if dirs:
        logger.info("training scratch removed", extra={"run_id": run_id, "folders": len(dirs)})
    return len(dirs)


def training_run_fail(*, run_id: int, reason: str) -> None:
    """Mark an in-flight run failed (the task's failure hook, the stale check) and remove its
    scratch folders (a killed worker leaves them)."""
    updated = TrainingRun.objects.filter(pk=run_id, status__in=IN_FLIGHT).update(
        status=TrainingRun.Status.FAILED, error=reason[:1000], finished_at=timezone.now()
    )
    training_scratch_clean(run_id=run_id)
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
    if (
        threshold > 0
        and new_reviews >= threshold
        and training_run_get_in_flight() is None
        and not _failed_recently()
    ):
        try:
            started = training_run_start(trigger=TrainingRun.Trigger.SCHEDULED).pk
        except TrainingInProgressError:
            started = None
        except InsufficientTrainingDataError as exc:
            logger.info("scheduled retraining not started", extra={"reason": exc.message})
    return {"stale_failed": failed, "new_reviews": new_reviews, "started_run": started}


def _failed_recently() -> bool:
    """The latest run failed within SCHEDULE_FAILURE_BACKOFF: the schedule waits rather than
    starting the same failing run on every check (a failed run does not reset the count)."""
    latest = (
        TrainingRun.objects.order_by("-created_at").values_list("status", "finished_at").first()
    )
    return bool(
        latest
        and latest[0] == TrainingRun.Status.FAILED
        and latest[1] is not None
        and latest[1] > timezone.now() - SCHEDULE_FAILURE_BACKOFF
    )


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
        data = dict(info)  # JSON-safe already (training_bridge.train_model)
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
    training_scratch_clean()  # what runs killed on this host left behind
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
            if isinstance(exc, DomainError):  # a refusal with its reason in words
                training_run_fail(run_id=run.pk, reason=exc.message)
                return
            logger.exception("training run failed", extra={"run_id": run.pk})
            training_run_fail(run_id=run.pk, reason=f"{type(exc).__name__}: {exc}")


def _execute(run: TrainingRun, work: Path, callbacks: _RunCallbacks) -> None:
    config = dict(run.config)
    snapshot = run.snapshot
    if snapshot is None:
        base_dir = config.get("base_dir")
        latest = snapshot_get_latest()
        if latest is not None and snapshot_reusable(snapshot=latest, base_dir=base_dir):
            snapshot = latest
            _append_log(run.pk, f"nothing new since snapshot {latest.version}: reusing it")
        else:
            _append_log(run.pk, "freezing a dataset snapshot")
            snapshot = snapshot_create(user=run.triggered_by, base_dir=base_dir)
        TrainingRun.objects.filter(pk=run.pk).update(snapshot=snapshot)
    snapshot_check_trainable(snapshot)
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
    # The review loop trains where the model points, not only what it says: with boxes in the
    # snapshot and a localising active model, the candidate is a locator trained on them.
    boxes = int((snapshot.counts.get("boxes") or {}).get("total", 0))
    localise = boxes > 0 and model_version_localises(active)
    if localise:
        _append_log(
            run.pk,
            f"training {version_name}: a localising model on {boxes} fracture boxes "
            f"(recipe of {active.version}"  # type: ignore[union-attr]
            + (", fine-tuning it)" if init_from else ", from ImageNet weights)"),
        )
        outcome = training_bridge.train_locator(
            config=train_config,
            data_dir=data_dir,
            out_dir=out_dir,
            recipe_from=inference.artifact_path(active.artifact_dir),  # type: ignore[union-attr]
            progress=callbacks.progress,
            should_stop=callbacks.should_stop,
            init_from=init_from,
        )
    else:
        _append_log(
            run.pk,
            f"training {version_name}"
            + (f" (fine-tuning {active.version})" if init_from else " (from the configuration)")
            + ("" if boxes or active is None else "; the snapshot has no fracture boxes"),
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
        test_positives=int(evaluation.candidate["positives"]),
        test_negatives=int(evaluation.candidate["n"]) - int(evaluation.candidate["positives"]),
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
