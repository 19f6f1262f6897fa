"""The Celery application; configuration comes from Django settings (CELERY_ namespace)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")

app = Celery("fracture_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
