"""Upload-to-prediction-visible latency: idle (one upload at a time) and 10 concurrent uploads.

Latency of a case = from the start of the upload (`case_create`: validation, storage, commit,
dispatch) until the case reads `predicted` in PostgreSQL (polled every 10 ms), with one worker
(`celery worker -Q inference -c 1`) on the same machine.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/fp_bench_infer \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/7 \
    .venv/bin/python bench/inference_latency.py [--model DIR] [--idle 20] [--rounds 3]
        [--children 1] [--intra-op 0]
"""

from __future__ import annotations

import argparse
import threading
import time

import inference_common as common


def one_upload(user, index: int) -> float:
    from django.db import connection

    from diagnosis.models import Case

    paths = common.samples()
    started = time.perf_counter()
    try:
        case = common.upload(user, paths[index % len(paths)], f"LAT-{index:05d}")
        while True:
            status = Case.objects.filter(pk=case.pk).values_list("status", flat=True).get()
            if status == Case.Status.PREDICTED:
                return time.perf_counter() - started
            if status == Case.Status.FAILED:
                raise RuntimeError(f"case {case.pk} failed")
            if time.perf_counter() - started > 120:
                raise TimeoutError(f"case {case.pk} not predicted in 120 s")
            time.sleep(0.01)
    finally:
        connection.close()


def concurrent_round(user, base: int, n: int) -> list[float]:
    results: list[float] = []
    barrier = threading.Barrier(n)
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        latency = one_upload(user, base + i)
        with lock:
            results.append(latency)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(name: str, values: list[float]) -> str:
    p50, p95 = common.percentile(values, 50), common.percentile(values, 95)
    return f"{name}: n={len(values)} p50={p50:.3f} s p95={p95:.3f} s max={max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model artifact folder")
    parser.add_argument("--idle", type=int, default=20, help="sequential uploads")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent uploads")
    parser.add_argument("--batch-size", type=int, default=32, help="INFERENCE_BATCH_SIZE")
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
        "latency-worker.log", concurrency=args.children, intra_op=args.intra_op
    )
    try:
        one_upload(user, 0)  # the worker child warms up (TensorFlow, model, first trace)
        one_upload(user, 1)
        idle = []
        for i in range(args.idle):
            idle.append(one_upload(user, 100 + i))
            time.sleep(0.2)
        loaded: list[float] = []
        for r in range(args.rounds):
            loaded += concurrent_round(user, 1000 + r * args.concurrency, args.concurrency)
            time.sleep(0.5)
    finally:
        common.stop_worker(worker)
    print(
        f"model: {description}; version {version.version}; batch size {args.batch_size}; "
        f"{args.children} worker child(ren), intra-op threads {args.intra_op or 'default'}"
    )
    print(summary("idle (sequential uploads)", idle))
    print(summary(f"{args.concurrency} concurrent uploads x {args.rounds} rounds", loaded))


if __name__ == "__main__":
    main()
