"""The two reads behind every API request: the token by its prefix, and the user's permissions.

Both are hand-written SQL, built once per process from the models' metadata (they name only tables
and columns of models; every value is a query parameter). They are the only hand-written reads of
the project because the ORM cannot get within 20 % of them: docs/benchmarks.md, "Hand-written SQL
against the ORM" (`bench/orm_vs_sql.py`), token lookup and permissions. Two statements, not one:
a single UNION of both cost PostgreSQL more to plan than the extra round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import Field, Model
from django.db.models.expressions import Col

from diagnosis.models import ApiClient, ApiToken

_Converter = Callable[[Any, Any, Any], Any]
_Columns = list[tuple[Field, Col, list[_Converter]]]


def api_token_by_prefix(*, prefix: str) -> ApiToken | None:
    """The token with this prefix, with its client and the client's user attached, or None.
    Checks nothing else (hash, expiry, revocation: `services.tokens.api_token_authenticate`)."""
    sql, plan = _token_lookup_plan(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    instances = []
    start = 0
    for model, columns in plan:
        instances.append(_instance(model, columns, row[start : start + len(columns)]))
        start += len(columns)
    token, client, user = instances
    client.user = user
    token.client = client
    return token


def user_permission_names(*, user_id: int) -> set[str]:
    """`app_label.codename` of every permission the user holds directly or through a group (what
    `ModelBackend.get_all_permissions` gives a user who is not a superuser)."""
    with connection.cursor() as cursor:
        cursor.execute(_permissions_sql(connection.vendor), [user_id, user_id])
        return {f"{app}.{codename}" for app, codename in cursor.fetchall()}


@cache
def _token_lookup_plan(vendor: str) -> tuple[str, tuple[tuple[type[Model], _Columns], ...]]:
    """SQL of `api_token_by_prefix` (token, client and user by prefix) and each column's
    converters (what the ORM applies to values read from the database), built once per backend."""
    user_model = get_user_model()
    qn = connection.ops.quote_name
    plan = []
    selects = []
    for model, alias in ((ApiToken, "t"), (ApiClient, "c"), (user_model, "u")):
        columns: _Columns = []
        for field in model._meta.concrete_fields:
            expression = field.get_col(alias)
            converters = connection.ops.get_db_converters(expression)
            converters += expression.get_db_converters(connection)
            columns.append((field, expression, converters))
            selects.append(f"{alias}.{qn(field.column)}")
        plan.append((model, columns))
    sql = (
        f"SELECT {', '.join(selects)} FROM {_table(ApiToken, 't')} "  # noqa: S608 (model names)
        f"INNER JOIN {_table(ApiClient, 'c')} "
        f"ON {_col('c', ApiClient, 'pk')} = {_col('t', ApiToken, 'client')} "
        f"INNER JOIN {_table(user_model, 'u')} "
        f"ON {_col('u', user_model, 'pk')} = {_col('c', ApiClient, 'user')} "
        f"WHERE {_col('t', ApiToken, 'prefix')} = %s"
    )
    return sql, tuple(plan)


@cache
def _permissions_sql(vendor: str) -> str:
    """`app_label, codename` of the user's own and group permissions (user id twice)."""
    user_model = get_user_model()
    user_perms = user_model.user_permissions.through
    user_groups = user_model.groups.through
    group_perms = Group.permissions.through
    return (
        f"SELECT {_col('ct', ContentType, 'app_label')}, {_col('p', Permission, 'codename')} "  # noqa: S608
        f"FROM {_table(Permission, 'p')} INNER JOIN {_table(ContentType, 'ct')} "
        f"ON {_col('ct', ContentType, 'pk')} = {_col('p', Permission, 'content_type')} "
        f"WHERE {_col('p', Permission, 'pk')} IN ("
        f"SELECT {_col('up', user_perms, 'permission')} FROM {_table(user_perms, 'up')} "
        f"WHERE {_col('up', user_perms, 'user')} = %s "
        f"UNION ALL SELECT {_col('gp', group_perms, 'permission')} "
        f"FROM {_table(user_groups, 'ug')} INNER JOIN {_table(group_perms, 'gp')} "
        f"ON {_col('gp', group_perms, 'group')} = {_col('ug', user_groups, 'group')} "
        f"WHERE {_col('ug', user_groups, 'user')} = %s)"
    )


def _table(model: type[Model], alias: str) -> str:
    return f"{connection.ops.quote_name(model._meta.db_table)} {alias}"


def _col(alias: str, model: type[Model], name: str) -> str:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    return f"{alias}.{connection.ops.quote_name(field.column)}"


def _instance(model: type[Model], columns: _Columns, values: Sequence[Any]) -> Any:
    converted = []
    for (_, expression, converters), value in zip(columns, values, strict=True):
        for converter in converters:
            value = converter(value, expression, connection)
        converted.append(value)
    return model.from_db(connection.alias, [field.attname for field, _, _ in columns], converted)
