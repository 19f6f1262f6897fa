"""Test overlay: speed-ups only. Tests talk to real PostgreSQL and Redis.

The services default to the standard local ports (what `bin/ensure-services` provides); PGHOST,
PGPORT, REDIS_HOST and REDIS_PORT move them, and DATABASE_URL, CELERY_BROKER_URL and
REDIS_CACHE_URL override them outright (e.g. to keep parallel runs apart).
"""

import os

_pg = f"{os.environ.get('PGHOST', '127.0.0.1')}:{os.environ.get('PGPORT', '5432')}"
_redis = f"{os.environ.get('REDIS_HOST', '127.0.0.1')}:{os.environ.get('REDIS_PORT', '6379')}"
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@{_pg}/fracture_portal")
os.environ.setdefault("CELERY_BROKER_URL", f"redis://{_redis}/14")
os.environ.setdefault("REDIS_CACHE_URL", f"redis://{_redis}/15")

from fracture_portal.settings import *  # noqa: E402  (after the environment defaults)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
# WhiteNoise warns on every request when STATIC_ROOT is missing; tests never collect static files.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Lockout counters live in the shared Redis cache and outlive a test; keep them out of unrelated
# tests' way. The tests of the lockout itself set their own limits.
LOGIN_FAILURE_LIMIT = 50
LOGIN_IP_FAILURE_LIMIT = 200
LOGIN_USER_FAILURE_LIMIT = 500
# Tests that switch tasks to in-process must not start the embedded sweeper thread.
EMBEDDED_SWEEPER = False
# Retraining tests use datasets of a few dozen generated images; the guardrail tests set their own.
RETRAIN_MIN_IMAGES_PER_CLASS = 0
PROMOTION_MIN_TEST_PER_CLASS = 0
