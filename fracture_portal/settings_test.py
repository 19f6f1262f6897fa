"""Test overlay: speed-ups only. Tests talk to real PostgreSQL and Redis."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fracture_portal")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("REDIS_CACHE_URL", "redis://127.0.0.1:6379/15")

from fracture_portal.settings import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
# WhiteNoise warns on every request when STATIC_ROOT is missing; tests never collect static files.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
