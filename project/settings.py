"""Settings of the embrec demo project.

Environment variables:

* ``DATABASE_URL`` — PostgreSQL with pgvector; unset: an embedded server under ``.embrec/``.
* ``CELERY_BROKER_URL`` — e.g. ``redis://127.0.0.1:6379/0``; unset: a filesystem broker.
* ``DJANGO_DEBUG=1`` — Django's debug mode (off unless set: tracebacks and settings are never
  shown to visitors by default).
* ``DJANGO_SECRET_KEY`` — wins; unset: a random key generated on first run and kept (mode 0600)
  in ``DJANGO_SECRET_KEY_FILE`` (default ``.embrec/secret_key``).
* ``DJANGO_ALLOWED_HOSTS`` — comma-separated; default ``127.0.0.1,localhost,[::1]``.
* ``DJANGO_HTTPS=1`` — behind HTTPS: secure cookies, redirect to HTTPS, HSTS.

The demo is safe by default; docs/PRODUCTION.md's *Production checklist* says what to change for a real site.
"""

import os
import secrets
from pathlib import Path

from embrec.devdb import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def _secret_key() -> str:
    """``DJANGO_SECRET_KEY``, else a per-install key generated once and kept private."""
    key = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    if key:
        return key
    path = Path(os.environ.get("DJANGO_SECRET_KEY_FILE") or BASE_DIR / ".embrec" / "secret_key")
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    try:
        # O_EXCL: two processes starting at once agree on the key the first one wrote.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        key = path.read_text().strip()
        if key:
            return key
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if host.strip()
]

if os.environ.get("DJANGO_HTTPS", "") == "1":
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "3600"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "embrec",
    "project.catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {"default": database_settings(BASE_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".embrec" / "static"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "embrec demo API",
    "DESCRIPTION": "Similar-item, personalized and semantic-search recommendations.",
    "VERSION": "0.1.0",
    # The docs page works offline: Swagger UI and ReDoc are served from drf-spectacular-sidecar.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
INSTALLED_APPS += ["drf_spectacular_sidecar"]

# --- Celery -------------------------------------------------------------------------------
_BROKER_DIR = BASE_DIR / ".embrec" / "broker"
# The filesystem transport ignores the host; naming one keeps Kombu from warning "No hostname was
# supplied" on every connection.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://localhost/"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("out", "processed", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "out"),
        "data_folder_out": str(_BROKER_DIR / "out"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Saves queue a drain task after commit: an unreachable broker must not hold a request for
    # long (the outbox keeps the work, the sweeper re-queues it).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CELERY_TASK_ALWAYS_EAGER", "0") == "1"
# Item encoding (the outbox drain, what makes an admin edit show up) has its own queue and its
# own worker process in the demo, so it never waits behind a backlog of user-vector refreshes
# (a demo start queues hundreds). Queue order in `-Q a,b` is no priority: Kombu's Redis and
# filesystem transports take turns between queues.
ENCODE_QUEUE = "embrec.encode"
USER_VECTOR_QUEUE = "embrec.users"
# The admin's embedding map is computed by a worker and read by the web process: the cache must
# be shared between processes (a directory here; Redis or Memcached in production).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(BASE_DIR / ".embrec" / "django-cache"),
    }
}
CELERY_TASK_ROUTES = {
    "embrec.drain": {"queue": ENCODE_QUEUE},
    "embrec.refresh_user_vectors": {"queue": USER_VECTOR_QUEUE},
    "embrec.refresh_user_vectors_for_items": {"queue": USER_VECTOR_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    "embrec-sweep": {"task": "embrec.sweep", "schedule": 60.0},
    # Retrain ALS nightly (the task trains any encoder learned from interactions); it queues
    # re-embedding (ALS and the adaptive hybrid on it) only when the model changed.
    "embrec-train-mf": {
        "task": "embrec.train_item2vec",
        "schedule": 24 * 3600.0,
        "args": ["mf"],
    },
}

# --- embrec -------------------------------------------------------------------------------
EMBREC = {
    "QUEUE": ENCODE_QUEUE,
    "ENCODERS": {
        "default": {
            "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
            "OPTIONS": {},
        },
        # Behavioural vectors: implicit ALS item factors (train: manage.py embrec_train; about
        # a second on the 100k ratings), as unit vectors: the best similar-movie lists on the
        # validation split of docs/ENCODERS.md. (Not aliased "als": in embrec_evaluate method
        # lists that names the ALS baseline.)
        "mf": {
            "CLASS": "embrec.encoders.als.ALSEncoder",
            "OPTIONS": {
                "factors": 64,
                "regularization": 2.0,
                "alpha": 5.0,
                "similarity": "cosine",
            },
        },
        # Serves similar movies and recommendations: ALS where a movie has ratings, MiniLM mapped
        # into the ALS space where it has few or none (a new movie gets neighbours at once);
        # movies known only from their text rank lower in other movies' lists (uncertainty).
        "adaptive": {
            "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
            "OPTIONS": {
                "behaviour": "mf",
                "content": "default",
                "shrinkage": 2,
                "uncertainty": 0.3,
            },
        },
        # MiniLM fine-tuned on co-rated movies (manage.py embrec_finetune finetuned; see
        # docs/FINETUNING.md): text-only vectors for movies nobody rated yet.
        "finetuned": {
            "CLASS": "embrec.encoders.finetune.FinetunedEncoder",
            "OPTIONS": {"learning_rate": 2e-4, "max_pairs": 2500, "max_pairs_per_item": 10},
        },
        # Item-kNN's co-rating cosine as vectors (truncated SVD, 128 dimensions; trained by
        # embrec_train like mf).
        "cooc": {
            "CLASS": "embrec.encoders.cooccurrence.CooccurrenceEncoder",
            "OPTIONS": {"dimensions": 128},
        },
        # Serves similar movies (MovieRecommendable.similar_encoder): a rated movie's own cooc
        # vector (item-kNN's lists), MiniLM mapped into that space for a movie nobody rated yet.
        # Matches item-kNN's next-item hit rate on the validation split of docs/ENCODERS.md.
        "similar": {
            "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
            "OPTIONS": {
                "behaviour": "cooc",
                "content": "default",
                "shrinkage": 0,
                "min_support": 1,
                "uncertainty": 0.3,
            },
        },
    },
    # Web processes load MiniLM (search) when they start (project/wsgi.py), not on the first search.
    "PRELOAD_ENCODERS": ["default"],
    # MovieLens ratings date from 1997-98: count popularity over all time.
    "POPULARITY_WINDOW_DAYS": None,
    # The read path's profile, blend and pools as `manage.py embrec_tune catalog.movie --budget 400
    # --output project/tuned.json` chose them on a validation split of the demo's ratings (the
    # user's 5 latest movies, uniform weights, 40 % popularity, 100 popular candidates; test
    # figures in tuned.report.json and docs/EVALUATION.md). Keys set in this dict would win.
    "TUNED_CONFIG": BASE_DIR / "project" / "tuned.json",
    # A movie nobody rated yet is blended with the popularity of the 75th-percentile movie
    # instead of 0, so it can reach a top 10 when its content matches (validation:
    # docs/ENCODERS.md); a movie with ratings keeps (almost) its own popularity.
    "POPULARITY_PRIOR": 0.75,
    "POPULARITY_PRIOR_STRENGTH": 0.1,
    # MovieLens star ratings are loaded as these kinds (see project/catalog/management/commands/demo.py).
    "INTERACTION_WEIGHTS": {
        "view": 1.0,
        "like": 3.0,
        "love": 5.0,
        "purchase": 5.0,
        "dislike": -3.0,
    },
}

# embrec's messages (INFO and up) go to one handler, its own, and not on to the root logger: in a
# Celery worker the root logger has Celery's handler, which would print each line a second time.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "embrec": {"format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"},
    },
    "handlers": {"embrec": {"class": "logging.StreamHandler", "formatter": "embrec"}},
    "loggers": {"embrec": {"handlers": ["embrec"], "level": "INFO", "propagate": False}},
}
