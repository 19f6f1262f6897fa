"""Review queue at scale: seed 100,000 cases into a PostgreSQL database of its own, then time the
queue page and its JSON through the whole Django stack (middleware, session, audit row, template),
and show the query plans.

    .venv/bin/python bench/review_queue.py [--cases 100000] [--requests 200] [--db fp_review_bench]
        [--nice -10] [--counts-cache SECONDS]

Environment: PGHOST/PGPORT/PGUSER as for the tests (default 127.0.0.1:5432, user postgres). The
database is created (and migrated) if missing and reused on later runs; `--reseed` starts over.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup_django(db: str) -> None:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    os.environ["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings_test")
    # Production-like request handling: no DEBUG (no query log), no HTTPS redirect on the client.
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    os.environ["DJANGO_SECURE_SSL_REDIRECT"] = "0"
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ["LOG_LEVEL"] = "WARNING"  # no per-request audit log lines on stderr
    _create_database(host, port, user, db)
    import django

    django.setup()


def _create_database(host: str, port: str, user: str, db: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


# --- Seeding ----------------------------------------------------------------------------------------------

STATUS_MIX = [  # share of cases per state
    ("predicted", 0.30),
    ("in_review:first", 0.02),
    ("in_review:second", 0.03),
    ("in_review:adjudication", 0.01),
    ("reviewed", 0.55),
    ("queued", 0.04),
    ("failed", 0.03),
    ("cancelled", 0.02),
]
BATCH = 5000


def seed(n_cases: int, *, reseed: bool) -> dict[str, int]:
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from diagnosis.models import (
        BodyPart,
        Case,
        Label,
        ModelVersion,
        Prediction,
        Review,
        XrayImage,
    )
    from diagnosis.services.case_progress import case_priority
    from diagnosis.tests import factories

    call_command("migrate", verbosity=0)
    if reseed:
        with connection.cursor() as cur:
            cur.execute(
                "TRUNCATE diagnosis_review, diagnosis_prediction, diagnosis_xrayimage,"
                " diagnosis_notification, diagnosis_webhookdelivery, diagnosis_case CASCADE"
            )
    if Case.objects.count() >= n_cases:
        return {"cases": Case.objects.count(), "seeded": 0}

    rng = random.Random(7)
    clinicians = [factories.ClinicianFactory(username=f"bench_clin_{i}") for i in range(20)]
    readers = [factories.RadiologistFactory(username=f"bench_rad_{i}") for i in range(10)]
    versions = [
        ModelVersion.objects.get_or_create(
            version=f"bench-v{i}",
            defaults={
                "artifact_dir": "/nonexistent",
                "sha256": "0" * 64,
                "architecture": "bench",
                "thresholds": {"balanced": 0.5, "high_sensitivity": 0.2},
                "status": "retired" if i == 0 else "active",
            },
        )[0]
        for i in range(2)
    ]
    parts = [p for p, _ in BodyPart.choices]
    states = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    now = timezone.now()
    made = 0
    while made < n_cases:
        size = min(BATCH, n_cases - made)
        plan = []
        cases = []
        for _ in range(size):
            state = rng.choices(states, weights)[0]
            status, _, stage = state.partition(":")
            probability = rng.betavariate(0.6, 1.6)
            urgent = rng.random() < 0.02
            plan.append((state, probability))
            cases.append(
                Case(
                    patient_ref=f"BENCH-{made + len(cases):07d}",
                    body_part=rng.choice(parts),
                    clinical_question="Trauma",
                    created_by=rng.choice(clinicians),
                    status=status,
                    urgent=urgent,
                    priority=case_priority(
                        probabilities=[probability], threshold=0.5, urgent=urgent
                    )
                    if status in ("predicted", "in_review", "reviewed")
                    else 0.0,
                    needs_second_read=stage in ("second", "adjudication"),
                    needs_adjudication=stage == "adjudication",
                    final_label=(Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED)
                    if status == "reviewed"
                    else "",
                    claimed_by=rng.choice(readers) if stage == "first" else None,
                    claim_expires_at=now + (rng.random() - 0.5) * 2 * timedelta(hours=1)
                    if stage == "first"
                    else None,
                )
            )
        with transaction.atomic():
            Case.objects.bulk_create(cases)
            images = [
                XrayImage(
                    case=case,
                    position=0,
                    file=f"images/bench/{case.patient_ref}.png",
                    sha256=f"{case.pk:064x}",
                    width=2000,
                    height=2500,
                    source_format="png",
                )
                for case in cases
            ]
            XrayImage.objects.bulk_create(images)
            predictions = []
            for image, (state, probability) in zip(images, plan, strict=True):
                if state in ("queued",):
                    continue
                label = Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED
                predictions.append(
                    Prediction(
                        image=image,
                        model_version=versions[1] if rng.random() < 0.8 else versions[0],
                        status="done",
                        probability=probability,
                        label=label,
                        labels={"balanced": label},
                    )
                )
            Prediction.objects.bulk_create(predictions)
            by_image = {p.image_id: p for p in predictions}
            reviews = []
            for image, (state, _) in zip(images, plan, strict=True):
                prediction = by_image.get(image.pk)
                reads = {"reviewed": 1 + (rng.random() < 0.3), "in_review:second": 1}.get(state, 0)
                if state == "in_review:adjudication":
                    reads = 2
                first, second = rng.sample(readers, 2)
                if reads:
                    image.case.first_reader = first
                if reads > 1:
                    image.case.second_reader = second
                for number, reader in list(enumerate((first, second), start=1))[:reads]:
                    label = prediction.label if prediction else Label.NOT_FRACTURED
                    reviews.append(
                        Review(
                            image=image,
                            prediction=prediction,
                            reviewer=reader,
                            read_number=number,
                            decision="confirm",
                            final_label=label,
                        )
                    )
            Review.objects.bulk_create(reviews)
            Case.objects.bulk_update(cases, ["first_reader", "second_reader"], batch_size=1000)
        made += size
        print(f"  seeded {made}/{n_cases} cases", file=sys.stderr)
    with connection.cursor() as cur:
        # Spread arrival times over ~60 days so "waiting time" ordering is meaningful.
        cur.execute(
            "UPDATE diagnosis_case SET created_at = now() - (random() * interval '60 days')"
        )
    with connection.cursor() as cur:  # VACUUM cannot run inside a transaction block
        cur.execute("VACUUM ANALYZE")  # bulk updates leave dead index entries behind
    return {"cases": Case.objects.count(), "seeded": made}


# --- Measurement ------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def measure(n_requests: int) -> list[dict[str, object]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from diagnosis.models import Case

    user = get_user_model().objects.get(username="bench_rad_0")
    client = Client()
    client.force_login(user)
    total_pages = max(1, (Case.objects.filter(status__in=["predicted", "in_review"]).count()) // 25)
    scenarios = [
        ("queue page (HTML), page 1", reverse("review:queue"), {}),
        ("queue data (JSON), page 1", reverse("review:queue_data"), {}),
        (
            "queue page, filter body part + status",
            reverse("review:queue"),
            {"body_part": "leg", "status": "predicted"},
        ),
        ("queue data, filter model version", reverse("review:queue_data"), {"model_version": "1"}),
        ("queue data, second reads only", reverse("review:queue_data"), {"stage": "2"}),
        (
            "queue data, page 100",
            reverse("review:queue_data"),
            {"page": str(min(100, total_pages))},
        ),
    ]
    from diagnosis.models import ModelVersion

    active = ModelVersion.objects.filter(version="bench-v1").values_list("pk", flat=True).first()
    results = []
    for name, url, params in scenarios:
        if "model_version" in params:
            params = {**params, "model_version": str(active)}
        for _ in range(10):  # warm-up: connections, template cache, plans
            client.get(url, params)
        timings = []
        for _ in range(n_requests):
            start = time.perf_counter()
            response = client.get(url, params)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.status_code
        results.append(
            {
                "scenario": name,
                "n": n_requests,
                "p50_ms": statistics.median(timings),
                "p95_ms": percentile(timings, 95),
                "max_ms": max(timings),
            }
        )
    return results


def explain() -> dict[str, str]:
    from django.contrib.auth import get_user_model

    from diagnosis.selectors.reviews import QueueFilters, review_queue, review_queue_counts

    user = get_user_model().objects.get(username="bench_rad_0")
    page = review_queue(user=user, filters=QueueFilters())[:25]
    plans = {"queue page": page.explain(analyze=True)}
    # The counts query, as the queue view runs it (aggregate over the same filtered set).
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        review_queue_counts(user=user, cached=False)
    with connection.cursor() as cur:
        cur.execute("EXPLAIN ANALYZE " + ctx.captured_queries[-1]["sql"])
        plans["queue counts"] = "\n".join(row[0] for row in cur.fetchall())
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", default="fp_review_bench")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--counts-cache",
        type=int,
        default=None,
        help="REVIEW_QUEUE_COUNTS_CACHE_SECONDS for this run (default: the setting, 5 s); "
        "0 computes the counts on every request",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="run the client and its PostgreSQL backend at this nice value (negative needs root): "
        "approximates a web host that does not share its CPUs with training jobs",
    )
    args = parser.parse_args()
    _setup_django(args.db)

    started = time.perf_counter()
    seeded = seed(args.cases, reseed=args.reseed)
    print(
        f"database {args.db}: {seeded['cases']} cases ({seeded['seeded']} seeded in "
        f"{time.perf_counter() - started:.0f} s)"
    )
    from diagnosis.models import Case

    waiting = Case.objects.filter(status__in=["predicted", "in_review"]).count()
    print(f"cases waiting for review (predicted/in_review): {waiting}")

    plans = explain()
    for name, plan in plans.items():
        print(f"\n--- EXPLAIN ANALYZE: {name}\n{plan}")
    uses_index = "case_review_queue" in plans["queue page"]
    print(f"\nqueue page uses the partial index case_review_queue: {uses_index}")

    if args.nice is not None:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        os.setpriority(os.PRIO_PROCESS, backend, args.nice)
        print(f"\nclient and PostgreSQL backend {backend} at nice {args.nice}")
    from django.conf import settings

    if args.counts_cache is not None:
        settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = args.counts_cache
    print(f"queue counts cached for {settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS} s")
    load_before = os.getloadavg()
    results = measure(args.requests)
    load_after = os.getloadavg()
    if args.nice is not None:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] == backend, "the requests used another PostgreSQL backend"
    print(
        f"\nmachine: {os.cpu_count()} CPUs; 1-minute load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after the timed requests (other work on the machine included)"
    )
    print("\n| scenario | requests | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['scenario']} | {r['n']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    worst = max(r["p95_ms"] for r in results)
    print(f"\nworst p95: {worst:.1f} ms (target <= 150 ms): {'PASS' if worst <= 150 else 'FAIL'}")


if __name__ == "__main__":
    main()
