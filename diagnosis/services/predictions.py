"""Prediction requests and results (the inference pipeline).

Flow: `case_request_predictions` (after the case's creating transaction commits) creates one
pending Prediction per image on the active model version, moves the case to `queued` and, after
commit, sends batch tasks to the `inference` queue. A worker runs `prediction_run_batch`:
it claims its predictions (plus other pending ones, up to settings.INFERENCE_BATCH_SIZE), counts the
attempt in the database BEFORE running, predicts the whole batch in one pass, writes the heat-maps
under deterministic names and the results idempotently, and moves the case on
(`queued -> predicting -> predicted | failed`, then the `case.predicted` webhook after commit).

Exclusion: a worker holds a PostgreSQL session advisory lock per prediction while it works on it.
A second delivery of the same work (a drained prediction's own message, a redelivery while the
first worker is alive) skips locked rows; a killed worker's connection drops and its locks with it.

Nothing is lost: if the broker is down at dispatch the case stays `queued` and the periodic
`case_sweep_stuck` re-dispatches it, as it does for `predicting` cases whose work went stale and for
`received` cases that waited for a model to be activated.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import redis.exceptions
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from diagnosis import inference
from diagnosis.exceptions import (
    InvalidStateError,
    ModelArtifactError,
    NoActiveModelError,
    NotFoundError,
    TransientInferenceError,
    UnreadableImageError,
)
from diagnosis.models import Case, Label, ModelVersion, Prediction, XrayImage
from diagnosis.selectors.models import model_version_get_active
from diagnosis.services.bulk import rows_update
from diagnosis.services.reviews import case_priority
from diagnosis.services.webhooks import webhook_notify
from diagnosis.tasks.predictions import prediction_run_batch as prediction_run_batch_task

logger = logging.getLogger(__name__)

# Errors a publish raises when the broker is unreachable (after kombu's short retry policy).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    BrokerOperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    OSError,
)
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
NO_MODEL_REASON = "Waiting for an active model version; predictions start once one is registered."
_LOCK_NAMESPACE = 0x46505052  # "FPPR": the advisory-lock key space of predictions
_OPEN = (Prediction.Status.PENDING, Prediction.Status.RUNNING)


# --- Requests and dispatch -------------------------------------------------------------------------


def _dispatch(*, prediction_ids: list[int], case_id: int | None = None) -> bool:
    """Send batch tasks (ids only). A broker outage is logged, never raised: the rows are
    committed and the sweeper sends them again. In embedded mode this runs the task in-process."""
    if not prediction_ids:
        return True
    size = max(1, settings.INFERENCE_BATCH_SIZE)
    try:
        for start in range(0, len(prediction_ids), size):
            prediction_run_batch_task.apply_async(
                args=[prediction_ids[start : start + size]],
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
    except BROKER_ERRORS as exc:
        logger.warning(
            "broker unavailable: predictions left queued for the sweeper",
            extra={
                "case_id": case_id,
                "prediction_ids": prediction_ids,
                "error": type(exc).__name__,
            },
        )
        return False
    return True


@transaction.atomic
def case_request_predictions(*, case: Case) -> list[int]:
    """Create a pending Prediction per image on the active model version (idempotent: one per
    image and version) and dispatch them after commit; returns the ids sent.

    A `received`/`queued`/`failed` case becomes `queued`; a case further along (predicted, in
    review) keeps its status while the new version's predictions run. Without an active model the
    case stays `received` with a reason, and the sweeper requests again once a model is active.
    """
    case = Case.objects.select_for_update().get(pk=case.pk)
    if case.status == Case.Status.CANCELLED:
        return []
    version = model_version_get_active()
    if version is None:
        if case.status == Case.Status.RECEIVED and case.status_reason != NO_MODEL_REASON:
            case.status_reason = NO_MODEL_REASON
            case.save(update_fields=["status_reason", "updated_at"])
        logger.warning("no active model version", extra={"case_id": case.pk})
        return []
    open_ids = []
    for image in case.images.order_by("position", "pk"):
        prediction, _ = Prediction.objects.get_or_create(image=image, model_version=version)
        if prediction.status in _OPEN:
            open_ids.append(prediction.pk)
    if case.status in (Case.Status.RECEIVED, Case.Status.QUEUED, Case.Status.FAILED):
        if open_ids:
            case.status = Case.Status.QUEUED
            case.queued_at = timezone.now()
            case.status_reason = ""
            case.save(update_fields=["status", "queued_at", "status_reason", "updated_at"])
        else:
            _case_advance(case_id=case.pk, model_version_id=version.pk)
    logger.info(
        "predictions requested",
        extra={"case_id": case.pk, "model_version": version.version, "prediction_ids": open_ids},
    )
    transaction.on_commit(lambda: _dispatch(prediction_ids=open_ids, case_id=case.pk))
    return open_ids


@transaction.atomic
def case_retry_predictions(*, case: Case, user: AbstractBaseUser) -> Case:
    """Staff action on a failed (or stuck) case: reset its failed predictions on the active version
    (fresh attempt budget) and request predictions again."""
    case = Case.objects.select_for_update().get(pk=case.pk)
    if case.status not in (Case.Status.FAILED, Case.Status.QUEUED, Case.Status.RECEIVED):
        raise InvalidStateError(f"A {case.get_status_display().lower()} case cannot be retried.")
    version = model_version_get_active()
    if version is None:
        raise NoActiveModelError("No model version is active.")
    Prediction.objects.filter(
        image__case=case, model_version=version, status=Prediction.Status.FAILED
    ).update(status=Prediction.Status.PENDING, attempts=0, error="", started_at=None)
    if case.status == Case.Status.FAILED:
        case.status = Case.Status.RECEIVED
        case.save(update_fields=["status", "updated_at"])
    case_request_predictions(case=case)
    logger.info("case retried", extra={"case_id": case.pk, "user_id": user.pk})
    case.refresh_from_db()
    return case


# --- Running (worker side) ---------------------------------------------------------------------------


def _try_lock_many(candidate_ids: Sequence[int]) -> list[int]:
    """Advisory-lock every candidate nobody else holds (one statement); returns those held."""
    if connection.vendor != "postgresql":
        return list(candidate_ids)  # embedded SQLite: one process, tasks run in-process
    if not candidate_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM unnest(%s::int[]) WITH ORDINALITY AS t(id, n) "
            "WHERE pg_try_advisory_lock(%s, id) ORDER BY n",
            [list(candidate_ids), _LOCK_NAMESPACE],
        )
        return [row[0] for row in cursor.fetchall()]


def _unlock(prediction_ids: Sequence[int]) -> None:
    if connection.vendor != "postgresql" or not prediction_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_unlock(%s, id) FROM unnest(%s::int[]) AS t(id)",
            [_LOCK_NAMESPACE, list(prediction_ids)],
        )


@contextlib.contextmanager
def _locked(candidate_ids: Sequence[int], *, limit: int) -> Iterator[list[int]]:
    """Advisory-lock up to `limit` of the candidates (in order) that nobody else holds; unlock on
    exit. A killed worker's connection drops, and its locks with it."""
    held: list[int] = []
    try:
        held = _try_lock_many(list(dict.fromkeys(candidate_ids)))
        _unlock(held[limit:])
        held = held[:limit]
        yield held
    finally:
        try:
            _unlock(held)
        except DatabaseError:
            # Workers keep their connection between tasks: a session that cannot unlock must
            # not live on holding the locks (closing it releases them; a dropped one already has).
            with contextlib.suppress(Exception):
                connection.close()


def _drain_candidates(*, exclude: Sequence[int], model_version_id: int, limit: int) -> list[int]:
    """Other pending predictions of the same version, oldest first (their messages may still wait
    in the queue; they find the work done and return at once)."""
    if limit <= 0:
        return []
    return list(
        Prediction.objects.filter(
            status=Prediction.Status.PENDING, model_version_id=model_version_id
        )
        .exclude(pk__in=exclude)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[: limit * 2]
    )


@dataclass
class _Claimed:
    prediction: Prediction
    own: bool


@transaction.atomic
def _claim(*, held: Sequence[int], own_ids: set[int]) -> list[_Claimed]:
    """Count the attempt (committed before any model code runs, so a worker killed by the OOM
    killer still leaves a trace), give up past settings.INFERENCE_MAX_ATTEMPTS, mark running."""
    now = timezone.now()
    rows = list(
        Prediction.objects.select_for_update(of=("self",))
        .select_related("image")
        .filter(pk__in=held, status__in=_OPEN)
        .order_by("pk")
    )
    # One version row for the batch, without its card, metrics and plots (large JSON, unused).
    versions = ModelVersion.objects.defer("card", "metrics", "plots", "input_spec", "notes")
    by_pk = versions.in_bulk({p.model_version_id for p in rows})
    for prediction in rows:
        prediction.model_version = by_pk[prediction.model_version_id]
    cap = settings.INFERENCE_MAX_ATTEMPTS
    for prediction in (p for p in rows if p.attempts >= cap):
        _fail_one(
            prediction,
            reason=f"Gave up after {prediction.attempts} attempts: the worker stopped while "
            "predicting this image (e.g. out of memory or a time limit).",
        )
    ok = [p for p in rows if p.attempts < cap]
    if not ok:
        return []
    # Three statements for the whole batch, whatever its size.
    Prediction.objects.filter(pk__in=[p.pk for p in ok]).update(
        attempts=F("attempts") + 1, status=Prediction.Status.RUNNING, started_at=now
    )
    XrayImage.objects.filter(pk__in={p.image_id for p in ok}).update(
        inference_attempts=F("inference_attempts") + 1
    )
    Case.objects.filter(pk__in={p.image.case_id for p in ok}, status=Case.Status.QUEUED).update(
        status=Case.Status.PREDICTING, updated_at=now
    )
    for prediction in ok:
        prediction.attempts += 1
        prediction.status = Prediction.Status.RUNNING
        prediction.started_at = now
    return [_Claimed(p, p.pk in own_ids) for p in ok]


def _test_barrier(prediction_ids: Sequence[int]) -> None:
    """Fault tests only (settings.INFERENCE_TEST_BARRIER, empty in production): announce
    '<pid> <ids>' in '<barrier>.reached' and wait until the file '<barrier>' exists, so a test can
    kill this worker child while it is provably mid-prediction."""
    barrier = settings.INFERENCE_TEST_BARRIER
    if not barrier:
        return
    Path(f"{barrier}.reached").write_text(f"{os.getpid()} {' '.join(map(str, prediction_ids))}\n")
    deadline = time.monotonic() + 60
    while not Path(barrier).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def heatmap_names(prediction_id: int) -> tuple[str, str]:
    """Deterministic storage names (heat-map, captioned overlay): a rerun overwrites. The worker
    writes the heat-map; the overlay is rendered from it when first asked for
    (`prediction_overlay_name`): most are never downloaded, and the pages draw the heat-map over
    the image themselves."""
    return (
        f"heatmaps/prediction-{prediction_id}.png",
        f"heatmaps/prediction-{prediction_id}-overlay.png",
    )


def _store_file(name: str, data: bytes) -> None:
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # a concurrent writer won the name: keep its (identical) file
        default_storage.delete(saved)


def prediction_overlay_name(*, prediction: Prediction) -> str:
    """Storage name of the finished prediction's captioned overlay PNG, rendered from the image and
    the stored heat-map on first use and kept (concurrent first requests render the same bytes;
    one file wins). Raises NotFoundError when the prediction has no heat-map or a file is gone."""
    overlay_name = heatmap_names(prediction.pk)[1]
    if prediction.status != Prediction.Status.DONE or not prediction.heatmap:
        raise NotFoundError("This prediction has no heat-map.")
    if default_storage.exists(overlay_name):
        return overlay_name
    try:
        with prediction.heatmap.open("rb") as fh:
            heatmap_png = fh.read()
        image = _read_image(prediction)
    except OSError as exc:
        logger.error("heat-map or image file missing", extra={"prediction_id": prediction.pk})
        raise NotFoundError("The heat-map is not available.") from exc
    try:
        data = inference.overlay_render(image=image, heatmap_png=heatmap_png)
    except UnreadableImageError as exc:
        logger.error("overlay not rendered", extra={"prediction_id": prediction.pk})
        raise NotFoundError("The overlay cannot be rendered.") from exc
    saved = default_storage.save(overlay_name, ContentFile(data))
    if saved != overlay_name:  # a concurrent request stored it first: keep that one
        default_storage.delete(saved)
    return overlay_name


def _read_image(prediction: Prediction) -> bytes:
    with prediction.image.file.open("rb") as fh:
        return fh.read()


@transaction.atomic
def _store_results(
    items: Sequence[tuple[Prediction, inference.ImageResult, dict[str, float]]],
) -> int:
    """Write a batch's results in one transaction (one commit), only over unfinished rows (a
    redelivered or concurrent run never overwrites a finished result), then move the cases on."""
    if not items:
        return 0
    open_ids = set(
        Prediction.objects.select_for_update()
        .filter(pk__in=[p.pk for p, _, _ in items])
        .exclude(status=Prediction.Status.DONE)
        .values_list("pk", flat=True)
    )
    finished_at = timezone.now()
    rows = []
    for prediction, result, timings in items:
        if prediction.pk not in open_ids:
            continue
        version = prediction.model_version
        labels = {
            op: (Label.FRACTURED if fractured else Label.NOT_FRACTURED)
            for op, fractured in result.fractured_at.items()
        }
        prediction.status = Prediction.Status.DONE
        prediction.probability = min(1.0, max(0.0, result.probability))
        prediction.labels = {k: str(v) for k, v in labels.items()}
        prediction.label = labels.get(version.default_operating_point) or (
            Label.FRACTURED if result.probability >= 0.5 else Label.NOT_FRACTURED
        )
        prediction.heatmap = heatmap_names(prediction.pk)[0]
        prediction.candidates = [dict(c) for c in result.candidates]
        prediction.timings = timings
        prediction.error = ""
        prediction.finished_at = finished_at
        rows.append(prediction)
    rows_update(
        rows,
        [
            "status",
            "probability",
            "labels",
            "label",
            "heatmap",
            "candidates",
            "timings",
            "error",
            "finished_at",
        ],
    )
    if rows:  # a batch holds one model version
        _cases_advance(case_ids=[p.image.case_id for p in rows], version=rows[0].model_version)
    return len(rows)


def _fail_one(prediction: Prediction, *, reason: str) -> None:
    """Mark one prediction failed (if not done) and its case failed with the reason."""
    updated = (
        Prediction.objects.filter(pk=prediction.pk)
        .exclude(status__in=[Prediction.Status.DONE, Prediction.Status.FAILED])
        .update(status=Prediction.Status.FAILED, error=reason[:500], finished_at=timezone.now())
    )
    if updated:
        logger.warning(
            "prediction failed",
            extra={"prediction_id": prediction.pk, "case_id": prediction.image.case_id},
        )
        _case_advance(
            case_id=prediction.image.case_id, model_version_id=prediction.model_version_id
        )


_ADVANCEABLE = (
    Case.Status.RECEIVED,
    Case.Status.QUEUED,
    Case.Status.PREDICTING,
    Case.Status.FAILED,
)


def _case_advance(*, case_id: int, model_version_id: int) -> None:
    _cases_advance(case_ids=[case_id], version=ModelVersion.objects.get(pk=model_version_id))


class _Outcome(NamedTuple):
    """What moving a case on needs of one of its predictions (read as values, not models)."""

    position: int
    status: str
    probability: float | None
    error: str


def _cases_advance(*, case_ids: Iterable[int], version: ModelVersion) -> None:
    """Move cases on from their predictions on `version`: any failed -> `failed` with the reason;
    all done -> `predicted` (priority computed, `case.predicted` webhook after commit). Cases
    already predicted or in review keep their status (a new version's results do not move them
    back). A constant number of queries for the whole batch."""
    cases = list(
        Case.objects.select_for_update()
        .filter(pk__in=set(case_ids), status__in=_ADVANCEABLE)
        .order_by("pk")  # one lock order for every worker: no deadlocks
    )
    if not cases:
        return
    # The cases' images, then their predictions by image id: both lookups follow the narrow
    # indexes (image case, unique image + version), never the model-version index that nearly
    # every prediction shares.
    images = {
        pk: (case_id, position)
        for pk, case_id, position in XrayImage.objects.filter(
            case_id__in=[case.pk for case in cases]
        ).values_list("pk", "case_id", "position")
    }
    n_images = Counter(case_id for case_id, _ in images.values())
    by_case: dict[int, list[_Outcome]] = defaultdict(list)
    for image_id, status, probability, error in Prediction.objects.filter(
        image_id__in=list(images), model_version=version
    ).values_list("image_id", "status", "probability", "error"):
        case_id, position = images[image_id]
        by_case[case_id].append(_Outcome(position, status, probability, error))
    for outcomes in by_case.values():
        outcomes.sort(key=lambda outcome: outcome.position)
    threshold = float(version.thresholds.get(version.default_operating_point, 0.5))
    now = timezone.now()
    failed, predicted = [], []
    for case in cases:
        predictions = by_case[case.pk]
        bad = [p for p in predictions if p.status == Prediction.Status.FAILED]
        if bad:
            if case.status != Case.Status.FAILED:
                case.status = Case.Status.FAILED
                case.status_reason = (
                    f"Prediction failed for image {bad[0].position + 1}: {bad[0].error}"
                )[:500]
                case.updated_at = now
                failed.append(case)
            continue
        done = [p for p in predictions if p.status == Prediction.Status.DONE]
        if not n_images.get(case.pk) or len(done) < n_images[case.pk]:
            continue
        case.status = Case.Status.PREDICTED
        case.status_reason = ""
        case.predicted_at = now
        case.updated_at = now
        case.priority = case_priority(
            probabilities=[float(p.probability or 0.0) for p in done],
            threshold=threshold,
            urgent=case.urgent,
        )
        predicted.append(case)
    if failed:
        rows_update(failed, ["status", "status_reason", "updated_at"])
    if predicted:
        rows_update(
            predicted, ["status", "status_reason", "predicted_at", "priority", "updated_at"]
        )
    for case in predicted:
        logger.info("case predicted", extra={"case_id": case.pk, "model_version": version.version})
        transaction.on_commit(functools.partial(webhook_notify, case=case, event="case.predicted"))


def _release(claimed: Sequence[_Claimed], *, only_drained: bool) -> None:
    """Give claimed rows back to the pool (pending) after an error that is not theirs."""
    ids = [c.prediction.pk for c in claimed if not (only_drained and c.own)]
    if ids:
        Prediction.objects.filter(pk__in=ids, status=Prediction.Status.RUNNING).update(
            status=Prediction.Status.PENDING
        )


def prediction_run_batch(*, prediction_ids: Sequence[int], drain: bool = True) -> dict[str, int]:
    """Run the given predictions (and, with `drain`, other pending ones of the same version up to
    settings.INFERENCE_BATCH_SIZE) as one batch: one claim, settings.INFERENCE_MODEL_BATCH images
    per model pass, one result transaction. Idempotent: done rows are skipped, rows another live
    worker holds are skipped, files have fixed names, results are written only over unfinished
    rows. Raises TransientInferenceError (the task retries) on a transient fault, after giving the
    claimed rows back."""
    own_ids = list(dict.fromkeys(int(pk) for pk in prediction_ids))
    open_own = list(
        Prediction.objects.filter(pk__in=own_ids, status__in=_OPEN)
        .order_by("pk")
        .values_list("pk", "model_version_id")
    )
    if not open_own:
        return {"done": 0, "failed": 0, "skipped": len(own_ids)}
    version_id = open_own[0][1]
    same_version = [pk for pk, v in open_own if v == version_id]
    other_versions = [pk for pk, v in open_own if v != version_id]
    limit = max(len(same_version), settings.INFERENCE_BATCH_SIZE if drain else 0)
    drained = _drain_candidates(
        exclude=own_ids, model_version_id=version_id, limit=limit - len(same_version)
    )
    with _locked(same_version + drained, limit=limit) as held:
        claimed = _claim(held=held, own_ids=set(own_ids)) if held else []
        counts = _run_claimed(claimed) if claimed else {"done": 0, "failed": 0}
    if other_versions:  # rare: one message carrying two versions' rows
        extra = prediction_run_batch(prediction_ids=other_versions, drain=False)
        counts = {k: counts[k] + extra.get(k, 0) for k in counts}
    counts["skipped"] = len(own_ids) - sum(1 for c in claimed if c.own)
    return counts


def _run_claimed(claimed: list[_Claimed]) -> dict[str, int]:
    started = time.perf_counter()
    version = claimed[0].prediction.model_version
    _test_barrier([c.prediction.pk for c in claimed])
    try:
        images: list[bytes] = []
        for item in claimed:
            try:
                images.append(_read_image(item.prediction))
            except FileNotFoundError:
                images.append(b"")  # decoded as unreadable below
        results = inference.run_batch(
            artifact_dir=version.artifact_dir,
            sha256=version.sha256,
            images=images,
            thresholds={k: float(v) for k, v in version.thresholds.items()},
            temperature=float(version.temperature or 1.0),
            pass_size=settings.INFERENCE_MODEL_BATCH,
        )
    except (TransientInferenceError, OSError) as exc:
        _release(claimed, only_drained=False)
        raise TransientInferenceError(f"inference unavailable: {type(exc).__name__}") from exc
    except ModelArtifactError as exc:
        reason = f"Model {version.version} cannot be loaded: {exc.message}"
        for item in claimed:
            _fail_one(item.prediction, reason=reason)
        return {"done": 0, "failed": len(claimed)}
    except BaseException:
        _release(claimed, only_drained=True)
        raise
    counts = {"done": 0, "failed": 0}
    model_end = time.perf_counter()
    finished: list[tuple[Prediction, inference.ImageResult, dict[str, float]]] = []
    for item, result in zip(claimed, results, strict=True):
        prediction = item.prediction
        if isinstance(result, UnreadableImageError):
            _fail_one(prediction, reason=result.message)
            counts["failed"] += 1
            continue
        store_started = time.perf_counter()
        rgba_name, overlay_name = heatmap_names(prediction.pk)
        _store_file(rgba_name, result.heatmap_png)
        default_storage.delete(overlay_name)  # one rendered from an earlier run's heat-map
        queued_ms = (prediction.started_at - prediction.created_at).total_seconds() * 1e3
        timings = {
            "queue_ms": round(max(0.0, queued_ms), 2),
            **result.timings,
            "store_ms": round((time.perf_counter() - store_started) * 1e3, 2),
            "batch_size": len(claimed),
        }
        # Work time of this image: its share of the batch, its files; plus its wait in the queue.
        share_ms = (model_end - started) * 1e3 / len(claimed)
        timings["total_ms"] = round(timings["queue_ms"] + share_ms + timings["store_ms"], 2)
        finished.append((prediction, result, timings))
    counts["done"] += _store_results(finished)
    logger.info(
        "batch predicted",
        extra={
            "prediction_ids": [c.prediction.pk for c in claimed],
            "model_version": version.version,
            "batch_ms": round((time.perf_counter() - started) * 1e3, 1),
        },
    )
    return counts


def prediction_fail(*, prediction_ids: Sequence[int], reason: str) -> int:
    """The task's final-failure hook: mark the unfinished predictions failed, cases with them."""
    count = 0
    rows = Prediction.objects.filter(pk__in=list(prediction_ids)).select_related("image")
    for prediction in rows.order_by("pk"):
        with transaction.atomic():
            before = prediction.status
            _fail_one(prediction, reason=reason)
            count += before in _OPEN
    return count


# --- Model registry ---------------------------------------------------------------------------------------


@transaction.atomic
def _json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. a sensitivity on a subgroup without positives) become null: JSON has
    no such numbers, and PostgreSQL's jsonb and SQLite's JSON_VALID refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


@transaction.atomic
def model_version_register(
    *, artifact_dir: Path, version: str = "", activate: bool = False
) -> tuple[ModelVersion, bool]:
    """Register an artifact folder as a ModelVersion (idempotent; returns (row, created)).

    Reads card.json and checks model.keras against its sha256 without importing TensorFlow. The
    same version with the same checksum updates the row; a different checksum is refused. The
    version becomes active when `activate` is set or no version is active (the previous active one
    is retired).
    """
    card = inference.artifact_verify(artifact_dir)
    name = (version or card.version).strip()
    if not name:
        raise ModelArtifactError("The model card names no version; pass one.")
    fields = {
        "artifact_dir": inference.artifact_dir_for_storage(artifact_dir),
        "sha256": card.sha256,
        "architecture": card.architecture[:64],
        "input_spec": _json_safe(card.input_spec),
        "thresholds": _json_safe(card.thresholds),
        "default_operating_point": card.default_operating_point,
        "temperature": card.temperature,
        "gradcam_layer": card.gradcam_layer,
        "metrics": _json_safe(card.metrics),
        "card": _json_safe(card.card),
    }
    row = ModelVersion.objects.select_for_update().filter(version=name).first()
    created = row is None
    if row is None:
        row = ModelVersion.objects.create(version=name, **fields)
    elif row.sha256 != card.sha256:
        raise ModelArtifactError(
            f"Version {name} is already registered with another model file (sha256 differs)."
        )
    else:
        for key, value in fields.items():
            setattr(row, key, value)
        row.save(update_fields=list(fields))
    active = model_version_get_active()
    if activate or active is None:
        if active is not None and active.pk != row.pk:
            ModelVersion.objects.filter(pk=active.pk).update(status=ModelVersion.Status.RETIRED)
        if row.status != ModelVersion.Status.ACTIVE:
            row.status = ModelVersion.Status.ACTIVE
            row.promoted_at = timezone.now()
            row.save(update_fields=["status", "promoted_at"])
    logger.info(
        "model version registered",
        extra={"model_version": row.version, "new": created, "status": row.status},
    )
    return row, created


# --- Sweeper ---------------------------------------------------------------------------------------------


def case_sweep_stuck(*, now: Any = None) -> dict[str, int]:
    """Re-dispatch work that should have happened by now (idempotent; safe to run anywhere):
    `received` cases once a model is active, `queued` cases whose messages were never sent or were
    lost, and `predicting` cases whose predictions went stale (pending, or running without a
    result) beyond settings.STUCK_CASE_SECONDS. Each case is touched at most once per that bound."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_CASE_SECONDS)
    counts = {"requested": 0, "redispatched": 0, "predictions": 0}
    if model_version_get_active() is not None:
        waiting = Case.objects.filter(
            status=Case.Status.RECEIVED, created_at__lt=cutoff, updated_at__lt=cutoff
        ).values_list("pk", flat=True)
        for case in Case.objects.filter(pk__in=list(waiting[:500])):
            case_request_predictions(case=case)
            counts["requested"] += 1
    stuck = Case.objects.filter(
        Q(status=Case.Status.QUEUED) | Q(status=Case.Status.PREDICTING), updated_at__lt=cutoff
    ).values_list("pk", flat=True)
    for case_id in list(stuck[:500]):
        stale = list(
            Prediction.objects.filter(image__case_id=case_id)
            .filter(
                Q(status=Prediction.Status.PENDING)
                | Q(status=Prediction.Status.RUNNING, started_at__lt=cutoff)
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        Case.objects.filter(pk=case_id).update(updated_at=now)
        if not stale:
            continue
        if _dispatch(prediction_ids=stale, case_id=case_id):
            counts["redispatched"] += 1
            counts["predictions"] += len(stale)
    if any(counts.values()):
        logger.info("sweeper re-dispatched stuck work", extra=counts)
    return counts


# --- Worker process start-up ------------------------------------------------------------------------------


def prediction_worker_warm_up() -> None:
    """In a fresh inference worker child: import TensorFlow and load the active model, so the first
    task pays neither (seconds). Failures are logged; tasks load lazily anyway."""
    started = time.perf_counter()
    try:
        inference.runtime_warm_up()
        version = model_version_get_active()
        if version is not None:
            inference.model_preload(artifact_dir=version.artifact_dir, sha256=version.sha256)
    except Exception:
        logger.exception("inference warm-up failed; the first task loads the model")
        return
    logger.info(
        "inference worker warm",
        extra={"warm_up_ms": round((time.perf_counter() - started) * 1e3, 1)},
    )
