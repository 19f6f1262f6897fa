"""Hand-written SQL against the ORM, statement by statement, in-process on PostgreSQL.

Every place that writes SQL by hand is measured against the best ORM way of doing the same thing,
on the same rows in the same run, so that hand-written SQL stays only where the ORM cannot get
within 20 % (docs/benchmarks.md, "Hand-written SQL against the ORM"):

- the API token lookup (token, client and user by prefix);
- loading a user's permissions (what `has_perm` reads on every API request);
- the case list's image count (a correlated subquery per row, first page of 25);
- writing a batch's results (16 predictions x 10 fields) in one statement.

Each figure is the median wall time of one call, the ORM and the hand-written call taking turns, (client CPU + round trip + PostgreSQL) over
--repeat calls after a warm-up, in a scratch database (`fp_orm_bench`, created and migrated if
missing; PGHOST/PGPORT/PGUSER move it).

    nice .venv/bin/python bench/orm_vs_sql.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup_django(db: str) -> None:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    os.environ["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings_test")
    os.environ["DJANGO_DEBUG"] = "0"  # no query log
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ["LOG_LEVEL"] = "WARNING"
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()
    import django

    django.setup()


def interleaved(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median milliseconds of one call of each of `fns`, called in turn (so that load from other
    processes falls on all of them alike), after a warm-up of a tenth of `repeat`."""
    for _ in range(max(10, repeat // 10)):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(out) * 1000 for out in samples]


def seed() -> dict[str, object]:
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from diagnosis.models import ApiToken, Case, ModelVersion, Prediction, XrayImage
    from diagnosis.services.accounts import roles_sync
    from diagnosis.services.tokens import api_client_create, api_token_create

    call_command("migrate", verbosity=0)
    roles_sync()
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username="orm-bench-clinician")
    if created:
        user.groups.add(Group.objects.get(name="clinician"))
    client = api_client_create(user=user, name="orm bench")
    token, raw = api_token_create(
        client=client, user=user, name="orm bench", scopes=[ApiToken.Scope.READ], expires_at=None
    )
    version, _ = ModelVersion.objects.get_or_create(
        version="orm-bench",
        defaults={
            "artifact_dir": "/nonexistent",
            "sha256": "0" * 64,
            "architecture": "bench",
            "status": ModelVersion.Status.RETIRED,
            "thresholds": {"balanced": 0.5},
        },
    )
    if not Case.objects.filter(created_by=user).exists():
        for n in range(40):
            case = Case.objects.create(
                patient_ref=f"ORM-{n:04d}", body_part="hand", created_by=user
            )
            for position in range(2):
                XrayImage.objects.create(
                    case=case,
                    position=position,
                    file=f"bench/{n}-{position}.png",
                    sha256=f"{n * 2 + position:064x}",
                    width=64,
                    height=48,
                )
    images = list(XrayImage.objects.filter(case__created_by=user).order_by("pk")[:16])
    predictions = [
        Prediction.objects.get_or_create(image=image, model_version=version)[0] for image in images
    ]
    pristine = user_model.objects.get(pk=user.pk)  # no permission cache on it yet
    return {"user": pristine, "raw": raw, "prefix": token.prefix, "predictions": predictions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="fp_orm_bench")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    _setup_django(args.db)

    from django.contrib.auth.backends import ModelBackend
    from django.db import connection
    from django.db.models import F, Func, IntegerField, OuterRef, Subquery
    from django.db.models.expressions import RawSQL
    from django.utils import timezone

    from diagnosis.models import ApiToken, Case, Prediction, XrayImage
    from diagnosis.selectors import api as api_selectors
    from diagnosis.selectors.cases import case_list
    from diagnosis.services import bulk

    data = seed()
    user, prefix, rows = data["user"], data["prefix"], data["predictions"]
    repeat = args.repeat
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object], int]] = {}

    # 1. Token lookup by prefix, with client and user.
    def token_orm() -> object:
        return ApiToken.objects.select_related("client__user").filter(prefix=prefix).first()

    # 2. A user's permissions, loaded as `has_perm` loads them (a fresh user object per request).
    pristine = copy.copy(user)  # before any permission check caches permissions on `user`

    def permissions_orm() -> object:
        fresh = copy.copy(pristine)
        return ModelBackend().get_all_permissions(fresh)  # Django's own, two ORM queries

    # The hand-written versions: diagnosis.selectors.auth, or services.tokens in older trees.
    try:
        from diagnosis.selectors import auth
    except ImportError:
        auth = None
    if auth is not None:
        lookup = lambda: auth.api_token_by_prefix(prefix=prefix)  # noqa: E731
        permissions_sql = lambda: auth.user_permission_names(user_id=user.pk)  # noqa: E731
    else:
        from diagnosis.services import tokens

        lookup = lambda: tokens._token_lookup(prefix)  # noqa: E731

        def permissions_sql() -> object:
            with connection.cursor() as cursor:
                cursor.execute(tokens._permissions_sql(connection.vendor), [user.pk, user.pk])
                return {f"{app}.{codename}" for app, codename in cursor.fetchall()}

    assert lookup() == token_orm()
    assert permissions_sql() == permissions_orm()
    pairs["token lookup"] = (token_orm, lookup, repeat)
    pairs["permissions"] = (permissions_orm, permissions_sql, repeat)

    # 3. The first page of the case list with each case's image count: the ORM's correlated
    # subquery against the same subquery written by hand (what the list used before).
    count_orm = Subquery(
        XrayImage.objects.filter(case=OuterRef("pk"))
        .order_by()
        .annotate(count=Func(F("pk"), function="COUNT"))
        .values("count"),
        output_field=IntegerField(),
    )
    qn = connection.ops.quote_name
    count_sql = RawSQL(  # noqa: S611 (model names only, no input)
        f"SELECT COUNT(*) FROM {qn(XrayImage._meta.db_table)} i "  # noqa: S608
        f"WHERE i.{qn(XrayImage._meta.get_field('case').column)} "
        f"= {qn(Case._meta.db_table)}.{qn(Case._meta.pk.column)}",
        (),
        IntegerField(),
    )

    def page(image_count: object) -> object:
        return list(
            case_list(user=user).values(*api_selectors.CASE_LIST_COLUMNS, image_count=image_count)[
                :25
            ]
        )

    assert page(count_sql) == page(count_orm)
    pairs["case list page (image count)"] = (
        lambda: page(count_orm),
        lambda: page(count_sql),
        repeat // 2,
    )

    # 4. A batch's results: 16 predictions x 10 fields in one statement.
    fields = [
        "status",
        "probability",
        "labels",
        "label",
        "heatmap",
        "candidates",
        "timings",
        "error",
        "finished_at",
        "attempts",
    ]
    now = timezone.now()
    for n, prediction in enumerate(rows):
        prediction.status = Prediction.Status.DONE
        prediction.probability = n / 16
        prediction.labels = {"balanced": "fractured"}
        prediction.label = "fractured"
        prediction.heatmap = f"heatmaps/{prediction.pk}.png"
        prediction.candidates = [{"x0": 1.0, "y0": 2.0, "x1": 3.0, "y1": 4.0, "score": 0.5}]
        prediction.timings = {"model_pass": 12.5, "render": 3.25}
        prediction.error = ""
        prediction.finished_at = now
    pairs["batch results update"] = (
        lambda: Prediction.objects.bulk_update(rows, fields),
        lambda: bulk.rows_update(rows, fields),
        repeat // 8,
    )

    results: dict[str, dict[str, float]] = {}
    for name, (orm, sql, n) in pairs.items():
        orm_ms, sql_ms = interleaved([orm, sql], n)
        results[name] = {
            "orm": round(orm_ms, 3),
            "sql": round(sql_ms, 3),
            "orm_over_sql": round(orm_ms / sql_ms, 2),
        }
    print(json.dumps({"repeat": repeat, "median_ms_per_call": results}, indent=2))


if __name__ == "__main__":
    main()
