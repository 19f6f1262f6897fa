"""The Celery application; configuration comes from Django settings (CELERY_ namespace)."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")

app = Celery("fracture_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _database_connections_as_between_requests(task: Any = None, **kwargs: Any) -> None:
    """Before each task in a worker, what Django does at every request boundary: close the
    connection if it broke or outlived CONN_MAX_AGE, and arm CONN_HEALTH_CHECKS so a connection
    that died while idle (database restart) is replaced before the task's first query.
    Not for eager tasks: they run inside the caller's request and transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
