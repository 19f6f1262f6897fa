"""Fracture Portal settings: one module, driven by the environment (see .env.example).

Developer defaults (SQLite, local media, in-process tasks) apply only when DJANGO_DEBUG=1. Without it,
a missing DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS or DATABASE_URL raises ImproperlyConfigured.
"""

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _required(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DJANGO_DEBUG is off.")


SECRET_KEY = _required("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-" + "x" * 24)
ALLOWED_HOSTS = _required("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "diagnosis",
]

MIDDLEWARE = [
    "fracture_portal.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "fracture_portal.middleware.SecurityHeadersMiddleware",
    "fracture_portal.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "fracture_portal.middleware.RefusalAuditMiddleware",
    "fracture_portal.middleware.SessionTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fracture_portal.urls"
WSGI_APPLICATION = "fracture_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "diagnosis.context_processors.portal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url_config(_required("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Embedded mode: SQLite builds covering indexes without their INCLUDE columns (same results).
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
    # Concurrent uploads in runserver's threads: write-ahead log (readers never block the writer),
    # write transactions that take the write lock when they begin (a deferred one that reads
    # first cannot upgrade while another writes: "database is locked" at once, whatever the
    # timeout), and a busy timeout for the writers to queue behind each other.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login throttling and API throttles need a shared cache in production) ----------------
REDIS_CACHE_URL = env.str("REDIS_CACHE_URL", default="")
if REDIS_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_CACHE_URL,
            # A dead or unreachable Redis fails fast instead of hanging the request: sign-in then
            # falls back to the audit trail (services.accounts).
            "OPTIONS": {
                "socket_connect_timeout": env.float("REDIS_CACHE_TIMEOUT_SECONDS", default=1.0),
                "socket_timeout": env.float("REDIS_CACHE_TIMEOUT_SECONDS", default=1.0),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth and sessions ----------------------------------------------------------------------------
# ModelBackend with one permission query per request (diagnosis/auth_backends.py).
AUTHENTICATION_BACKENDS = ["diagnosis.auth_backends.PortalBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "diagnosis:case_list"
LOGOUT_REDIRECT_URL = "login"
# Absolute timeout: enforced by SessionTimeoutMiddleware from the sign-in time (the cookie age alone
# would be refreshed by every session write).
SESSION_ABSOLUTE_TIMEOUT_SECONDS = env.int("SESSION_ABSOLUTE_TIMEOUT_SECONDS", default=12 * 3600)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_TIMEOUT_SECONDS
SESSION_IDLE_TIMEOUT_SECONDS = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=30 * 60)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)
# Per client address: higher, since several users may share one address (hospital NAT).
LOGIN_IP_FAILURE_LIMIT = env.int("LOGIN_IP_FAILURE_LIMIT", default=4 * LOGIN_FAILURE_LIMIT)
# LOGIN_FAILURE_LIMIT counts per username *and* address. The slow per-username back-off: every
# LOGIN_USER_FAILURE_LIMIT failures (all addresses) within LOGIN_USER_WINDOW_SECONDS pause the
# username everywhere for LOGIN_USER_BACKOFF_SECONDS, doubled per step up to LOGIN_LOCKOUT_SECONDS.
LOGIN_USER_FAILURE_LIMIT = env.int("LOGIN_USER_FAILURE_LIMIT", default=4 * LOGIN_FAILURE_LIMIT)
LOGIN_USER_WINDOW_SECONDS = env.int("LOGIN_USER_WINDOW_SECONDS", default=60 * 60)
LOGIN_USER_BACKOFF_SECONDS = env.int("LOGIN_USER_BACKOFF_SECONDS", default=60)
# Refused requests are audited in bursts: per (actor, address, route, object, reason) and window,
# the 1st, 10th, 100th... refusal is written; past AUDIT_REFUSAL_MAX_ROWS rows per window, only
# floods.
AUDIT_REFUSAL_WINDOW_SECONDS = env.int("AUDIT_REFUSAL_WINDOW_SECONDS", default=60)
AUDIT_REFUSAL_MAX_ROWS = env.int("AUDIT_REFUSAL_MAX_ROWS", default=1000)

# --- Security (production values unless DEBUG) ----------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_FAILURE_VIEW = "diagnosis.views.errors.csrf_failure"  # JSON under /api/
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _trusted_proxies(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(item.strip()) for item in value.split(",") if item.strip()
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES is malformed: {exc}.") from exc


# X-Forwarded-Proto counts only on requests from these addresses or networks (the TLS proxy);
# fracture_portal.middleware.TrustedProxyMiddleware drops it from anyone else.
TRUSTED_PROXIES = _trusted_proxies(env.str("TRUSTED_PROXIES", default="127.0.0.1,::1"))
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default=(
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
)
# Swagger UI (/api/docs/): its scripts are files (no inline script), its page has an inline style.
API_DOCS_CONTENT_SECURITY_POLICY = env.str(
    "API_DOCS_CONTENT_SECURITY_POLICY",
    default=(
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
)

# --- Uploads ----------------------------------------------------------------------------------------
# One limit for a whole request, files included, on every path (RequestSizeLimitMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("UPLOAD_MAX_REQUEST_BYTES", default=200 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("UPLOAD_MAX_FILES", default=100)
UPLOAD_MAX_FILE_BYTES = env.int("UPLOAD_MAX_FILE_BYTES", default=60 * 1024 * 1024)
UPLOAD_MAX_PIXELS = env.int("UPLOAD_MAX_PIXELS", default=40_000_000)
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# --- Static and media -----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: images go through permission-checked views
STORAGES = {
    "default": {
        "BACKEND": env.str("STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage")
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Media on S3-compatible object storage (django-storages) --------------------------------------
# STORAGE_BACKEND=s3 (or the class path) keeps media in one private bucket shared by web and workers
# (AWS S3, MinIO, Ceph...). Files are only ever served through the permission-checked views: no
# ACL, no public URLs. Credentials are not settings: boto3 reads AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY (or a profile, or an instance role) from the environment itself. Nothing
# imports boto3 unless this backend is chosen.
S3_STORAGE_BACKEND = "storages.backends.s3.S3Storage"
if STORAGES["default"]["BACKEND"] in ("s3", S3_STORAGE_BACKEND):
    _s3_bucket = env.str("AWS_STORAGE_BUCKET_NAME", default="")
    if not _s3_bucket:
        raise ImproperlyConfigured(
            "AWS_STORAGE_BUCKET_NAME must be set when STORAGE_BACKEND is s3."
        )
    _s3_encryption = env.str("AWS_S3_SERVER_SIDE_ENCRYPTION", default="")  # AES256 or aws:kms
    STORAGES["default"] = {
        "BACKEND": S3_STORAGE_BACKEND,
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            # `path` for most self-hosted endpoints (MinIO, Ceph); empty: boto3 decides.
            "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="") or None,
            "default_acl": None,  # the bucket's policy applies: keep it private
            "querystring_auth": True,  # should a URL ever be built, it is signed and expires
            "file_overwrite": True,  # heat-maps are rewritten under fixed names
            "object_parameters": {"ServerSideEncryption": _s3_encryption} if _s3_encryption else {},
        },
    }

# --- Internationalisation ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Email --------------------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Fracture Portal <noreply@localhost>")

# --- REST framework ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "diagnosis.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "diagnosis.api.exception_handler.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_THROTTLE_RATES": {
        "uploads": env.str("THROTTLE_UPLOADS", default="60/min"),
        "read": env.str("THROTTLE_READ", default="600/min"),
        "write": env.str("THROTTLE_WRITE", default="120/min"),
        "review": env.str("THROTTLE_REVIEW", default="300/min"),
        "admin": env.str("THROTTLE_ADMIN", default="120/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fracture Portal API",
    "DESCRIPTION": "Upload radiographs, get fracture predictions with Grad-CAM heat-maps, review them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Anonymous users reach only the login page, /healthz and static files.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI assets are served from the drf-spectacular-sidecar package: nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Generated clients: a nullable choice is the enum plus `nullable`, not a `NullEnum`/`BlankEnum`
    # component (some generators emit invalid code for an enum whose only value is null), and
    # path parameters keep the URL's order (the generated methods take them in that order).
    "ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE": False,
    "SORT_OPERATION_PARAMETERS": False,
    "ENUM_NAME_OVERRIDES": {
        "CaseStatusEnum": "diagnosis.models.Case.Status",
        "PredictionStatusEnum": "diagnosis.models.Prediction.Status",
        "ModelVersionStatusEnum": "diagnosis.models.ModelVersion.Status",
        "LabelEnum": "diagnosis.models.Label",
    },
}
# Webhooks to API clients: private/loopback targets only in development and tests (SSRF guard).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=DEBUG)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_BACKOFF_BASE_SECONDS = env.int("WEBHOOK_BACKOFF_BASE_SECONDS", default=30)
WEBHOOK_BACKOFF_MAX_SECONDS = env.int("WEBHOOK_BACKOFF_MAX_SECONDS", default=3600)


def _webhook_proxy_url(value: str) -> str:
    """An http(s) forward proxy URL (`http://[user:password@]host:port`), or "" for none."""
    from urllib.parse import urlsplit

    if not value:
        return ""
    problem = ""
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError on a port that is not a number in range
    except ValueError:
        problem = "its port is invalid"
    else:
        if parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it must not have a path, query or fragment"
    if problem:
        raise ImproperlyConfigured(f"WEBHOOK_PROXY_URL is malformed: {problem}.")
    return value


# Deliveries go through this egress proxy when set (https targets by CONNECT); the environment's
# HTTP(S)_PROXY is never used for webhooks.
WEBHOOK_PROXY_URL = _webhook_proxy_url(env.str("WEBHOOK_PROXY_URL", default=""))

# --- Celery -------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# No broker configured: the embedded default runs tasks in-process, with the same code.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes every database connection before and after each task unless this
# is set: a new PostgreSQL session per task (the largest cost of a task that finds nothing to do,
# measured with a profiler on the inference worker). Workers keep their connection instead, and
# fracture_portal/celery.py applies Django's request-cycle rules before each task (CONN_MAX_AGE,
# broken connections closed, CONN_HEALTH_CHECKS); the fix-up still closes them every 1000 tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
CELERY_TRAINING_TIME_LIMIT = env.int("CELERY_TRAINING_TIME_LIMIT", default=4 * 3600)
# Visibility must exceed twice the longest task, or a slow task runs twice at once.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int(
        "CELERY_VISIBILITY_TIMEOUT", default=2 * CELERY_TRAINING_TIME_LIMIT + 600
    ),
    "unacked_restore_throttle": 1,
    # How often a worker scans for unacked messages of dead workers (after visibility_timeout).
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
}
# Inference tasks (diagnosis/tasks/predictions.py): short limits, batches of waiting images.
INFERENCE_TIME_LIMIT = env.int("CELERY_INFERENCE_TIME_LIMIT", default=120)
INFERENCE_SOFT_TIME_LIMIT = max(1, INFERENCE_TIME_LIMIT - max(1, INFERENCE_TIME_LIMIT // 6))
INFERENCE_BATCH_SIZE = env.int("INFERENCE_BATCH_SIZE", default=32)
# Images per model pass: 0 = auto (the whole batch in one pass).
INFERENCE_MODEL_BATCH = env.int("INFERENCE_MODEL_BATCH", default=0)
INFERENCE_PRELOAD = env.bool("INFERENCE_PRELOAD", default=True)  # warm the model per worker child
# Fault tests only: a file path; predictions pause until it exists (see docs/operations.md).
INFERENCE_TEST_BARRIER = env.str("INFERENCE_TEST_BARRIER", default="")
# Fault tests only: uploads pause after staging their files, before the commit, until it exists.
UPLOAD_TEST_BARRIER = env.str("UPLOAD_TEST_BARRIER", default="")
# A child that warms up TensorFlow and the model needs more than Celery's default 4 s to report up.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.float("CELERY_WORKER_PROC_ALIVE_TIMEOUT", default=120.0)
_longest_task = max(CELERY_TASK_TIME_LIMIT, CELERY_TRAINING_TIME_LIMIT, INFERENCE_TIME_LIMIT)
if 2 * _longest_task >= CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT must exceed twice the longest task time limit "
        f"({_longest_task} s), or a slow task is redelivered while it still runs."
    )
CELERY_TASK_ROUTES = {
    "diagnosis.tasks.prediction_*": {"queue": "inference"},
    "diagnosis.tasks.training_*": {"queue": "training"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
SWEEP_INTERVAL_SECONDS = env.int("SWEEP_INTERVAL_SECONDS", default=60)
MEDIA_RECONCILE_INTERVAL_SECONDS = env.int("MEDIA_RECONCILE_INTERVAL_SECONDS", default=3600)
# A file without a row is an orphan only once older than this (younger ones may be in flight).
MEDIA_RECONCILE_GRACE_SECONDS = env.int("MEDIA_RECONCILE_GRACE_SECONDS", default=3600)
# Embedded mode (no broker, so no beat): the web process runs the sweeper in a thread of its own,
# started by its first request.
EMBEDDED_SWEEPER = CELERY_TASK_ALWAYS_EAGER and env.bool("EMBEDDED_SWEEPER", default=True)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "sweep-stuck-cases": {
        "task": "diagnosis.tasks.case_sweep_stuck",
        "schedule": timedelta(seconds=SWEEP_INTERVAL_SECONDS),
    },
    # Media files without rows (a process killed mid-upload) removed, rows without files flagged.
    "media-reconcile": {
        "task": "diagnosis.tasks.media_reconcile",
        "schedule": timedelta(seconds=MEDIA_RECONCILE_INTERVAL_SECONDS),
    },
    # Light check on the default queue: fails stale training runs, starts one when enough new reviews.
    "retrain-schedule-check": {
        "task": "diagnosis.tasks.retrain_schedule_check",
        "schedule": timedelta(seconds=env.int("RETRAIN_CHECK_INTERVAL_SECONDS", default=300)),
    },
}

# --- Domain ---------------------------------------------------------------------------------------------
FRACTURE_MODEL_DIR = Path(
    env.str("FRACTURE_MODEL_DIR", default=str(BASE_DIR / "ml" / "weights" / "locate-256-v1"))
)
INFERENCE_MAX_ATTEMPTS = env.int("INFERENCE_MAX_ATTEMPTS", default=3)
STUCK_CASE_SECONDS = env.int("STUCK_CASE_SECONDS", default=120)
KEEP_ORIGINAL_UPLOADS = env.bool("KEEP_ORIGINAL_UPLOADS", default=False)
# Review workflow: how long a claim on a case lasts, and which first reads get a second reader
# (model-positive cases, model/reader disagreements, and a deterministic per-case random percentage).
REVIEW_CLAIM_TTL_SECONDS = env.int("REVIEW_CLAIM_TTL_SECONDS", default=15 * 60)
# Review queue counts are kept this long per reader and filters (0: computed on every request).
REVIEW_QUEUE_COUNTS_CACHE_SECONDS = env.int("REVIEW_QUEUE_COUNTS_CACHE_SECONDS", default=5)
SECOND_READ_MODEL_POSITIVE = env.bool("SECOND_READ_MODEL_POSITIVE", default=True)
SECOND_READ_ON_DISAGREEMENT = env.bool("SECOND_READ_ON_DISAGREEMENT", default=True)
SECOND_READ_RANDOM_PERCENT = env.float("SECOND_READ_RANDOM_PERCENT", default=10.0)
SECOND_READ_SEED = env.str("SECOND_READ_SEED", default="second-read")
# Absolute address of the portal, for links in e-mails.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")
# Retraining: snapshots of reviewed images (+ an optional base dataset folder), runs, gated promotion.
RETRAIN_MIN_NEW_REVIEWS = env.int("RETRAIN_MIN_NEW_REVIEWS", default=50)  # 0 disables the schedule
# A base dataset folder (split/label + manifest) added to the reviewed images; empty: none.
TRAINING_BASE_DATASET_DIR = env.str("TRAINING_BASE_DATASET_DIR", default="")
TRAINING_WORK_DIR = Path(env.str("TRAINING_WORK_DIR", default=str(VAR_DIR / "training")))
MODEL_STORE_DIR = Path(env.str("MODEL_STORE_DIR", default=str(VAR_DIR / "models")))
TRAINING_HEARTBEAT_SECONDS = env.int("TRAINING_HEARTBEAT_SECONDS", default=15)
TRAINING_STALE_SECONDS = env.int("TRAINING_STALE_SECONDS", default=180)
TRAINING_QUEUED_STALE_SECONDS = env.int("TRAINING_QUEUED_STALE_SECONDS", default=3600)
RETRAIN_DEFAULT_EPOCHS = env.int("RETRAIN_DEFAULT_EPOCHS", default=5)
PROMOTION_AUROC_MARGIN = env.float("PROMOTION_AUROC_MARGIN", default=0.02)
PROMOTION_SENSITIVITY_TOLERANCE = env.float("PROMOTION_SENSITIVITY_TOLERANCE", default=0.02)
PROMOTION_BOOTSTRAP_SAMPLES = env.int("PROMOTION_BOOTSTRAP_SAMPLES", default=2000)
# Automatic promotion needs this many fractured and not-fractured images in the frozen test split.
PROMOTION_MIN_TEST_PER_CLASS = env.int("PROMOTION_MIN_TEST_PER_CLASS", default=25)
# A run starts only with this many labelled images of each class (reviewed + base dataset).
RETRAIN_MIN_IMAGES_PER_CLASS = env.int("RETRAIN_MIN_IMAGES_PER_CLASS", default=10)
# Top-1 localisation (share of fractured test images whose best mark hits an expert box) may not
# be worse than the active model's beyond this margin, with 95 % confidence (paired bootstrap).
PROMOTION_LOCALISATION_MARGIN = env.float("PROMOTION_LOCALISATION_MARGIN", default=0.05)

# --- Logging ---------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # pydicom's own log lines can quote data-set values (PHI); uploads report by stable code.
        "pydicom": {"level": "CRITICAL"},
    },
}
