"""Running predictions on a worker and writing their results.

A worker runs `prediction_run_batch`: it claims its predictions (plus other pending ones, up to
settings.INFERENCE_BATCH_SIZE), counts the attempt in the database BEFORE running, predicts the whole
batch in one pass, writes the heat-maps under deterministic names and the results idempotently, and
moves the cases on (`case_progress`: `queued -> predicting -> predicted | failed`, then the
`case.predicted` webhook after commit).

Exclusion: a worker holds a PostgreSQL session advisory lock per prediction while it works on it.
A second delivery of the same work (a drained prediction's own message, a redelivery while the
first worker is alive) skips locked rows; a killed worker's connection drops and its locks with it.
The embedded mode (SQLite, tasks in the web process's request threads) holds the same locks in
process memory: concurrent uploads drain each other's predictions, and without them two threads
would run the same image.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from diagnosis import inference
from diagnosis.exceptions import (
    ModelArtifactError,
    TransientInferenceError,
    UnreadableImageError,
)
from diagnosis.models import Label, ModelVersion, Prediction, XrayImage
from diagnosis.selectors.models import model_version_get_active
from diagnosis.services.bulk import rows_update
from diagnosis.services.case_progress import case_advance, cases_advance, cases_start_predicting
from diagnosis.services.fault_barrier import fault_barrier
from diagnosis.services.prediction_files import (
    heatmap_names,
    prediction_file_store,
    prediction_image_read,
)
from diagnosis.services.predictions import OPEN

logger = logging.getLogger(__name__)

_LOCK_NAMESPACE = 0x46505052  # "FPPR": the advisory-lock key space of predictions


# Embedded mode: one process, tasks run in its threads; these stand in for the advisory locks.
_process_locks: set[int] = set()
_process_locks_guard = threading.Lock()


def _try_lock_many(candidate_ids: Sequence[int]) -> list[int]:
    """Advisory-lock every candidate nobody else holds (one statement); returns those held."""
    if connection.vendor != "postgresql":
        with _process_locks_guard:
            held = [pk for pk in candidate_ids if pk not in _process_locks]
            _process_locks.update(held)
        return held
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
    if connection.vendor != "postgresql":
        with _process_locks_guard:
            _process_locks.difference_update(prediction_ids)
        return
    if not prediction_ids:
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
        .filter(pk__in=held, status__in=OPEN)
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
    cases_start_predicting(case_ids={p.image.case_id for p in ok}, now=now)
    for prediction in ok:
        prediction.attempts += 1
        prediction.status = Prediction.Status.RUNNING
        prediction.started_at = now
    return [_Claimed(p, p.pk in own_ids) for p in ok]


def _test_barrier(prediction_ids: Sequence[int]) -> None:
    """Fault tests only (settings.INFERENCE_TEST_BARRIER): a test can kill this worker child while
    it is provably mid-prediction."""
    fault_barrier(settings.INFERENCE_TEST_BARRIER, " ".join(map(str, prediction_ids)))


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
        Prediction.objects.filter(pk__in=own_ids, status__in=OPEN)
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
                images.append(prediction_image_read(item.prediction))
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
        prediction_file_store(rgba_name, result.heatmap_png)
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
            count += before in OPEN
    return count


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
        cases_advance(case_ids=[p.image.case_id for p in rows], version=rows[0].model_version)
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
        case_advance(case_id=prediction.image.case_id, model_version_id=prediction.model_version_id)


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
