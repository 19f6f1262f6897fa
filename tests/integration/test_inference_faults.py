"""Fault tests of the inference pipeline with real worker processes, Redis and PostgreSQL
(RELIABILITY.md §3). Every accepted case must end `predicted` (or `failed` with a reason), with
exactly one Prediction per image and model version.

To stop a worker child provably mid-prediction, workers of (a) and (b) run with
INFERENCE_TEST_BARRIER: the service announces '<pid> <ids>' in '<barrier>.reached' and waits until
the file '<barrier>' exists (a setting that is empty in production).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Count

from diagnosis.models import Case, Prediction
from diagnosis.services.cases import case_create
from diagnosis.tests import factories
from tests.integration.conftest import Harness, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.jpg"))
FINAL = (Case.Status.PREDICTED, Case.Status.FAILED)


def upload(user, n_images: int = 1, offset: int = 0) -> Case:
    """What the intake page does: validate, store, commit, then request predictions."""
    files = [
        SimpleUploadedFile(
            SAMPLES[(offset + i) % len(SAMPLES)].name,
            SAMPLES[(offset + i) % len(SAMPLES)].read_bytes(),
            "image/jpeg",
        )
        for i in range(n_images)
    ]
    return case_create(
        user=user,
        patient_ref=f"FAULT-{offset:04d}",
        body_part="hand",
        clinical_question="",
        files=files,
    )


def settle(cases: list[Case], harness: Harness, *, timeout: float) -> None:
    """Wait until every case is predicted or failed; fail with the worker logs otherwise."""

    def done() -> bool:
        return Case.objects.filter(pk__in=[c.pk for c in cases], status__in=FINAL).count() == len(
            cases
        )

    if not wait_for(done, timeout=timeout, interval=0.25):
        states = list(
            Case.objects.filter(pk__in=[c.pk for c in cases]).values_list("status", flat=True)
        )
        pytest.fail(f"cases did not settle in {timeout} s: {states}\n{harness.logs()}")


def assert_accepted_cases_accounted_for(cases: list[Case]) -> None:
    """The invariant of every fault test."""
    for case in Case.objects.filter(pk__in=[c.pk for c in cases]):
        assert case.status in FINAL, case.status
        if case.status == Case.Status.FAILED:
            assert case.status_reason, "a failed case must carry a reason"
        images = case.images.count()
        per_image = (
            Prediction.objects.filter(image__case=case)
            .values("image_id", "model_version_id")
            .annotate(n=Count("pk"))
        )
        assert len(per_image) == images
        assert {row["n"] for row in per_image} == {1}


def wait_for_barrier(barrier: Path, harness: Harness, timeout: float = 90) -> tuple[int, list[int]]:
    reached = Path(f"{barrier}.reached")
    if not wait_for(reached.exists, timeout=timeout, interval=0.05):
        pytest.fail(f"no prediction reached the barrier in {timeout} s\n{harness.logs()}")
    pid, *ids = reached.read_text().split()
    return int(pid), [int(i) for i in ids]


def test_sigkill_worker_child_mid_prediction_is_redelivered_once(harness: Harness):
    """(a) The pool child dies mid-prediction (OOM killer): with acks_late + reject_on_worker_lost
    the parent requeues the message, a new child runs it again, the attempt count shows 2."""
    barrier = harness.tmp / "barrier"
    worker = harness.start_worker(INFERENCE_TEST_BARRIER=str(barrier))
    user = factories.ClinicianFactory()
    case = upload(user, n_images=2)
    child_pid, ids = wait_for_barrier(barrier, harness)
    assert child_pid != worker.process.pid
    os.kill(child_pid, signal.SIGKILL)
    barrier.touch()  # later attempts pass straight through

    settle([case], harness, timeout=90)
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED, harness.logs()
    attempts = dict(Prediction.objects.filter(image__case=case).values_list("pk", "attempts"))
    assert sorted(ids) == sorted(attempts)  # both images were in the killed batch
    assert set(attempts.values()) == {2}
    assert worker.alive(), worker.log()
    assert_accepted_cases_accounted_for([case])


def test_sigkill_whole_worker_then_restart_recovers_within_the_visibility_bound(harness: Harness):
    """(b) The worker host dies (main process and child): the unacked message is restored by the
    restarted worker after the visibility timeout (20 s here) and the restore interval (2 s)."""
    barrier = harness.tmp / "barrier"
    first = harness.start_worker(INFERENCE_TEST_BARRIER=str(barrier))
    user = factories.ClinicianFactory()
    case = upload(user, n_images=1)
    wait_for_barrier(barrier, harness)
    first.kill_all()
    killed_at = time.monotonic()
    barrier.touch()
    assert harness.redis.queue_length() == 0  # the message is not in the queue: it is unacked

    harness.start_worker(INFERENCE_TEST_BARRIER=str(barrier))
    visibility = int(harness.env["CELERY_VISIBILITY_TIMEOUT"])
    settle([case], harness, timeout=visibility + 60)
    recovered_in = time.monotonic() - killed_at
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED, harness.logs()
    # Bound: visibility timeout + restore interval + a worker start (TensorFlow import) + slack.
    assert recovered_in < visibility + 45, recovered_in
    assert Prediction.objects.get(image__case=case).attempts == 2
    assert_accepted_cases_accounted_for([case])


def test_redis_killed_and_restarted_with_queued_tasks_loses_nothing(harness: Harness):
    """(c) Redis is SIGKILLed with tasks in the queue (one batch in flight) and restarted from its
    append-only file: every task still runs; the worker survives or its supervisor restarts it."""
    barrier = harness.tmp / "barrier"
    worker = harness.start_worker(INFERENCE_TEST_BARRIER=str(barrier), INFERENCE_BATCH_SIZE="1")
    user = factories.ClinicianFactory()
    cases = [upload(user, n_images=1, offset=i) for i in range(5)]
    wait_for_barrier(barrier, harness)  # one task in flight, four waiting in Redis
    queued = harness.redis.queue_length()
    assert queued >= 3, queued
    time.sleep(1.5)  # appendfsync everysec
    harness.redis.kill()
    time.sleep(1.0)
    harness.redis.start()
    assert harness.redis.queue_length() == queued  # replayed from the append-only file
    barrier.touch()

    def supervise() -> bool:  # compose's `restart: unless-stopped`
        nonlocal worker
        if not worker.alive():
            worker = harness.start_worker(INFERENCE_BATCH_SIZE="1")
        done = Case.objects.filter(pk__in=[c.pk for c in cases], status__in=FINAL).count()
        return done == len(cases)

    if not wait_for(supervise, timeout=150, interval=0.5):
        pytest.fail(f"cases did not settle after the Redis restart\n{harness.logs()}")
    assert worker.alive(), harness.logs()
    assert set(
        Case.objects.filter(pk__in=[c.pk for c in cases]).values_list("status", flat=True)
    ) == {Case.Status.PREDICTED}
    assert_accepted_cases_accounted_for(cases)


def test_broker_down_while_uploads_arrive_then_back_the_sweeper_recovers_all(harness: Harness):
    """(d) Uploads while Redis is down succeed (the dispatch fails fast and is logged), the cases
    wait in `queued`; once Redis is back, the beat-scheduled sweeper re-dispatches them all."""
    worker = harness.start_worker(beat=True)
    user = factories.ClinicianFactory()
    harness.redis.kill()
    cases = []
    for i in range(3):
        started = time.monotonic()
        cases.append(upload(user, n_images=2, offset=i))
        assert time.monotonic() - started < 5  # the upload does not hang on the broker
    assert set(
        Case.objects.filter(pk__in=[c.pk for c in cases]).values_list("status", flat=True)
    ) == {Case.Status.QUEUED}
    harness.redis.start()

    def supervise() -> bool:
        nonlocal worker
        if not worker.alive():
            worker = harness.start_worker(beat=True)
        done = Case.objects.filter(pk__in=[c.pk for c in cases], status__in=FINAL).count()
        return done == len(cases)

    if not wait_for(supervise, timeout=150, interval=0.5):
        pytest.fail(f"the sweeper did not recover the cases\n{harness.logs()}")
    assert set(
        Case.objects.filter(pk__in=[c.pk for c in cases]).values_list("status", flat=True)
    ) == {Case.Status.PREDICTED}
    assert_accepted_cases_accounted_for(cases)
