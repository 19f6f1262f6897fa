"""Worker tasks keep their database connection between tasks (CELERY_DB_REUSE_MAX) and apply
Django's request-boundary rules before each one (fracture_portal.celery)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import connection

from fracture_portal.celery import _database_connections_as_between_requests, app

pytestmark = pytest.mark.django_db(transaction=True)


def _task(*, eager: bool) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def test_celery_reuses_connections_between_tasks():
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX >= 100


def test_a_healthy_connection_is_kept_and_health_checked_before_the_next_task():
    connection.ensure_connection()
    raw = connection.connection
    connection.health_check_done = True
    _database_connections_as_between_requests(task=_task(eager=False))
    assert connection.connection is raw  # kept: no new PostgreSQL session per task
    assert connection.health_check_done is False  # CONN_HEALTH_CHECKS runs before first use


def test_a_broken_connection_is_closed_before_the_next_task():
    connection.ensure_connection()
    raw = connection.connection
    raw.close()  # as if the database restarted while the worker idled
    connection.errors_occurred = True
    _database_connections_as_between_requests(task=_task(eager=False))
    assert connection.connection is None
    with connection.cursor() as cursor:  # the task's first query reconnects
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_eager_tasks_leave_the_callers_connection_alone():
    connection.ensure_connection()
    raw = connection.connection
    raw.close()
    connection.errors_occurred = True
    _database_connections_as_between_requests(task=_task(eager=True))
    assert connection.connection is raw  # untouched: it belongs to the calling request
    connection.close()
