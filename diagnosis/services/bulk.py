"""Writing several rows' fields in one statement.

Django's `bulk_update` builds a `CASE WHEN pk = ... THEN ...` expression per field and row and
resolves every one of them in Python: for a batch of 16 predictions x 8 fields that cost more CPU
than the statement itself (~70 ms per call under the profiler, the largest database cost of a
batched prediction). On PostgreSQL `rows_update` sends `UPDATE ... FROM (VALUES ...)` instead,
built with each field's own database conversion; elsewhere (embedded SQLite) it is `bulk_update`.
Kept because the ORM cannot get within 20 %: docs/benchmarks.md, "Hand-written SQL against the
ORM" (`bench/orm_vs_sql.py`), batch results update.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, router
from django.db.models import Model


def rows_update(objs: Sequence[Model], fields: Sequence[str]) -> int:
    """Save `fields` (concrete, non-primary-key) of `objs` (saved rows of one model) in one
    statement; returns the number of rows updated. Like `bulk_update`, it calls no `save()`,
    sends no signals and does not run `auto_now`."""
    if not objs:
        return 0
    model = type(objs[0])
    if any(type(obj) is not model for obj in objs):
        raise ValueError("rows_update takes rows of one model")
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    if not columns or any(f.primary_key or not f.concrete or f.many_to_many for f in columns):
        raise ValueError("rows_update takes concrete, non-primary-key fields")
    if any(obj.pk is None for obj in objs):
        raise ValueError("rows_update takes saved rows")
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        return model._default_manager.bulk_update(objs, list(fields))
    quote = connection.ops.quote_name
    pk = meta.pk
    typed = [pk, *columns]
    row = "(" + ", ".join(f"%s::{field.db_type(connection)}" for field in typed) + ")"
    params: list[object] = []
    for obj in objs:
        params.append(pk.get_db_prep_value(obj.pk, connection))
        params.extend(
            field.get_db_prep_save(getattr(obj, field.attname), connection) for field in columns
        )
    names = ", ".join(quote(field.column) for field in typed)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns)
    # Only identifiers from the model's metadata (quoted by the backend) and casts from the fields'
    # database types are formatted in; every value is a query parameter.
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608
        f"FROM (VALUES {', '.join([row] * len(objs))}) AS v({names}) "
        f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
