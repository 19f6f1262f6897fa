"""Case list and case detail pages at scale: server time per request, in process, on PostgreSQL.

Creates (or reuses) a scratch database (default `fp_web_bench`), migrates it, seeds `--cases` cases
spread over 50 clinicians (one image each, newest first by creation), then times the pages through
Django's test client (no network, no browser): the view, selectors, template and every query.

    .venv/bin/python bench/web_case_list.py --cases 20000 --requests 40

Prints a markdown table: p50 / p95 milliseconds per request, the p50 of the time spent in SQL,
and the number of SQL queries per request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _prepare_environment(db_name: str) -> None:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    os.environ["DATABASE_URL"] = f"postgres://postgres@{host}:{port}/{db_name}"
    os.environ["DJANGO_DEBUG"] = "1"
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{db_name}"')
    conn.close()


def _seed(n_cases: int) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from diagnosis.models import BodyPart, Case, XrayImage

    user_model = get_user_model()
    if Case.objects.count() >= n_cases:
        return
    clinicians = []
    group = Group.objects.get(name="clinician")
    for i in range(50):
        user, _ = user_model.objects.get_or_create(username=f"bench-clin-{i}")
        user.groups.add(group)
        clinicians.append(user)
    radiologist, _ = user_model.objects.get_or_create(username="bench-rad")
    radiologist.groups.add(Group.objects.get(name="radiologist"))
    statuses = [s for s, _ in Case.Status.choices]
    parts = [p for p, _ in BodyPart.choices]
    missing = n_cases - Case.objects.count()
    batch = []
    for i in range(missing):
        batch.append(
            Case(
                patient_ref=f"PSN-{i:07d}",
                body_part=parts[i % len(parts)],
                created_by=clinicians[i % len(clinicians)],
                status=statuses[i % len(statuses)],
            )
        )
        if len(batch) == 5000 or i == missing - 1:
            created = Case.objects.bulk_create(batch)
            XrayImage.objects.bulk_create(
                XrayImage(
                    case=case,
                    file=f"images/bench/{case.pk}.png",
                    sha256=f"{case.pk:064x}",
                    width=256,
                    height=256,
                    source_format="png",
                )
                for case in created
            )
            batch = []


def _time(client, url: str, n: int) -> tuple[float, float, float, int]:
    """p50 and p95 of the whole request, p50 of its SQL time (ms), and its query count."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches and the session
    times, sql_times = [], []
    queries = 0
    for _ in range(n):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
        sql_times.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
    times.sort()
    return (
        statistics.median(times),
        times[int(0.95 * (len(times) - 1))],
        statistics.median(sql_times),
        queries,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--db", default="fp_web_bench")
    args = parser.parse_args()

    _prepare_environment(args.db)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from diagnosis.models import Case

    call_command("migrate", verbosity=0)
    _seed(args.cases)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh planner statistics, as autovacuum would leave them
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    radiologist = user_model.objects.get(username="bench-rad")
    clinician = user_model.objects.get(username="bench-clin-7")
    case = Case.objects.filter(created_by=clinician).order_by("-created_at").first()
    rows = []
    for who, user, url in [
        ("radiologist", radiologist, "/"),
        ("radiologist", radiologist, "/?page=200"),
        ("radiologist", radiologist, "/?status=predicted&body_part=leg"),
        ("radiologist", radiologist, "/?q=PSN-00123"),
        ("clinician", clinician, "/"),
        ("clinician", clinician, f"/cases/{case.uuid}/"),
    ]:
        client = Client()
        client.force_login(user)
        p50, p95, sql, queries = _time(client, url, args.requests)
        rows.append(
            f"| {who} | `{url.replace(str(case.uuid), '<uuid>')}` | {p50:.1f} | {p95:.1f} | {sql:.1f} | {queries} |"
        )
    total = Case.objects.count()
    print(f"{total} cases, 50 clinicians, {args.requests} requests per row\n")
    print("| user | page | p50 ms | p95 ms | SQL p50 ms | queries |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
