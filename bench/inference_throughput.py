"""Worker throughput (images/s), batched against one image per task, in the same run and worker.

N pending predictions (one image per case, as concurrent single-image uploads produce) are queued
at once, one message each, then the clock runs until all are done:
  per-image  `diagnosis.tasks.prediction_run(id)`: one model pass per image (no draining)
  drained    `diagnosis.tasks.prediction_run_batch([id])`, one message per image as concurrent
             single-image uploads send them: a task drains other waiting predictions up to
             INFERENCE_BATCH_SIZE into one batch; the drained rows' own messages still arrive and
             find nothing left to do
  grouped    `diagnosis.tasks.prediction_run_batch(ids[i:i+B])`: one message per B images, as the
             dispatcher sends a multi-image case and the sweeper re-dispatches stuck work
The modes alternate for --rounds rounds; the median of each is reported. A round's time runs from
the first message sent to the last `finished_at` written (the results' own timestamps), and the
rows are polled only every 250 ms, so watching does not take CPU from the worker.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/fp_bench_infer \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/7 \
    .venv/bin/python bench/inference_throughput.py [--model DIR] [-n 128] [--batch-size 32] [--rounds 5]
        [--children 1] [--intra-op 0]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import inference_common as common

# What the worker stores per image (Prediction.timings, ms): averaged per mode over all rounds.
STAGES = ("model_ms", "preprocess_ms", "gradcam_ms", "store_ms")
STAGE_MS: dict[str, dict[str, list[float]]] = collections.defaultdict(
    lambda: collections.defaultdict(list)
)


def make_pending(user, version, n: int, tag: str) -> list[int]:
    """N queued cases with one canonical image and one pending prediction each (not dispatched)."""
    from django.core.files.base import ContentFile
    from django.db import transaction
    from django.utils import timezone

    from diagnosis.imaging import validate_upload
    from diagnosis.models import Case, Prediction, XrayImage

    paths = common.samples()
    canon = [validate_upload(p.read_bytes(), p.name) for p in paths]
    ids = []
    with transaction.atomic():
        for i in range(n):
            c = canon[i % len(canon)]
            case = Case.objects.create(
                patient_ref=f"TP-{tag}-{i:04d}",
                body_part="hand",
                created_by=user,
                status=Case.Status.QUEUED,
                queued_at=timezone.now(),
            )
            image = XrayImage(
                case=case,
                position=0,
                sha256=c.sha256,
                width=c.width,
                height=c.height,
                source_format=c.source_format,
            )
            image.file.save("bench.png", ContentFile(c.png_bytes), save=False)
            image.save()
            ids.append(Prediction.objects.create(image=image, model_version=version).pk)
    return ids


def wait_done(ids: list[int], timeout: float = 900) -> None:
    """Poll sparingly: the clock is read from the rows (`finished_at`), not from this loop, and a
    tight poll would take CPU from the worker it measures (a 20 ms poll slowed its model pass by
    ~10 %)."""
    from diagnosis.models import Prediction

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = Prediction.objects.filter(pk__in=ids).exclude(status__in=["done", "failed"]).count()
        if left == 0:
            return
        time.sleep(0.25)
    raise TimeoutError("predictions not finished")


def run_mode(mode: str, user, version, n: int, tag: str) -> tuple[float, dict[int, int]]:
    from django.conf import settings
    from django.db.models import Max
    from django.utils import timezone

    from diagnosis.models import Prediction
    from diagnosis.tasks.predictions import prediction_run, prediction_run_batch

    ids = make_pending(user, version, n, tag)
    size = settings.INFERENCE_BATCH_SIZE
    started = timezone.now()
    if mode == "grouped":
        for start in range(0, len(ids), size):
            prediction_run_batch.delay(ids[start : start + size])
    for pk in [] if mode == "grouped" else ids:
        if mode == "per-image":
            prediction_run.delay(pk)
        else:
            prediction_run_batch.delay([pk])
    wait_done(ids)
    # From the first message sent to the last result written (the worker stamps `finished_at`
    # in the transaction that stores it; same host, same clock).
    last = Prediction.objects.filter(pk__in=ids).aggregate(last=Max("finished_at"))["last"]
    elapsed = (last - started).total_seconds()
    failed = Prediction.objects.filter(pk__in=ids, status="failed").count()
    if failed:
        raise RuntimeError(f"{failed} predictions failed")
    timings = list(Prediction.objects.filter(pk__in=ids).values_list("timings", flat=True))
    sizes = collections.Counter(t.get("batch_size", 0) for t in timings)
    for key in STAGES:
        STAGE_MS[mode][key] += [float(t.get(key, 0.0)) for t in timings]
    return n / elapsed, dict(sorted(sizes.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model artifact folder")
    parser.add_argument("-n", type=int, default=128, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="INFERENCE_BATCH_SIZE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--children", type=int, default=1, help="worker children (-c)")
    parser.add_argument(
        "--intra-op", type=int, default=0, help="TensorFlow threads per operation (0: default)"
    )
    args = parser.parse_args()

    common.setup_django(batch_size=args.batch_size)
    path, description = common.model_dir(args.model)
    version = common.register(path)
    user = common.bench_user()
    worker = common.start_worker(
        "throughput-worker.log", concurrency=args.children, intra_op=args.intra_op
    )
    modes = ("per-image", "drained", "grouped")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    sizes: dict[str, dict[int, int]] = {}
    stamp = str(int(time.time()))
    try:
        run_mode("grouped", user, version, 8, f"warm{stamp}")  # warm-up: TF, model, traces
        run_mode("per-image", user, version, 4, f"warm1{stamp}")
        STAGE_MS.clear()
        for r in range(args.rounds):
            for mode in modes:
                rate, sizes[mode] = run_mode(mode, user, version, args.n, f"{mode}{r}{stamp}")
                results[mode].append(rate)
                print(f"round {r + 1} {mode}: {rate:.2f} images/s, batch sizes {sizes[mode]}")
    finally:
        common.stop_worker(worker)
    per_image = statistics.median(results["per-image"])
    print(
        f"model: {description}; version {version.version}; batch size {args.batch_size}; "
        f"{args.children} worker child(ren), intra-op threads {args.intra_op or 'default'}"
    )
    for mode in modes:
        rate = statistics.median(results[mode])
        print(
            f"{mode}: {rate:.2f} images/s ({rate / per_image:.2f}x per-image), n={args.n}, "
            f"median of {args.rounds}"
        )
    print("worker-side ms per image (mean over the measured rounds; batch stages are shared):")
    for mode in modes:
        stages = ", ".join(
            f"{key[:-3]} {statistics.fmean(STAGE_MS[mode][key]):.2f}" for key in STAGES
        )
        total = 1e3 / statistics.median(results[mode])
        print(f"  {mode}: {stages}; whole (1 / throughput) {total:.2f}")


if __name__ == "__main__":
    main()
