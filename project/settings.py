"""Settings of the embrec demo project.

Environment variables:

* ``DATABASE_URL`` — PostgreSQL with pgvector; unset: an embedded server under ``.embrec/``.
* ``CELERY_BROKER_URL`` — e.g. ``redis://127.0.0.1:6379/0``; unset: a filesystem broker.
* ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` — the usual.
"""

import os
from pathlib import Path

from embrec.devdb import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

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
}

# --- Celery -------------------------------------------------------------------------------
_BROKER_DIR = BASE_DIR / ".embrec" / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
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
CELERY_BEAT_SCHEDULE = {
    "embrec-sweep": {"task": "embrec.sweep", "schedule": 60.0},
    # Retrain item2vec nightly; it queues re-embedding only when the model changed.
    "embrec-train-item2vec": {
        "task": "embrec.train_item2vec",
        "schedule": 24 * 3600.0,
        "args": ["item2vec"],
    },
}

# --- embrec -------------------------------------------------------------------------------
EMBREC = {
    "ENCODERS": {
        "default": {
            "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
            "OPTIONS": {},
        },
        # Behavioural vectors learned from the ratings (train: manage.py embrec_train).
        "item2vec": {"CLASS": "embrec.encoders.item2vec.Item2VecEncoder", "OPTIONS": {}},
        # Behaviour where there is some, content (MiniLM) for movies nobody rated yet.
        "hybrid": {
            "CLASS": "embrec.encoders.hybrid.HybridEncoder",
            "OPTIONS": {
                "parts": [
                    {"encoder": "item2vec", "weight": 1.0},
                    {"encoder": "default", "weight": 0.5},
                ]
            },
        },
        # MiniLM fine-tuned on co-rated movies (manage.py embrec_finetune finetuned; see
        # docs/FINETUNING.md): text-only vectors for movies nobody rated yet.
        "finetuned": {
            "CLASS": "embrec.encoders.finetune.FinetunedEncoder",
            "OPTIONS": {"learning_rate": 2e-4, "max_pairs": 2500, "max_pairs_per_item": 10},
        },
    },
    # MovieLens ratings date from 1997-98: count popularity over all time.
    "POPULARITY_WINDOW_DAYS": None,
    # The best configuration of docs/EVALUATION.md: a user's vector is the plain mean of their
    # 3 most recent movies (every rating counts as having watched it; 1-2 star ratings still hide
    # the movie), and 60 % of a recommendation's score is popularity.
    "USER_VECTOR_MAX_INTERACTIONS": 3,
    "USER_VECTOR_WEIGHTING": "uniform",
    "RECOMMEND_POPULARITY": 0.6,
    # MovieLens star ratings are loaded as these kinds (see project/catalog/management/commands/demo.py).
    "INTERACTION_WEIGHTS": {
        "view": 1.0,
        "like": 3.0,
        "love": 5.0,
        "purchase": 5.0,
        "dislike": -3.0,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"embrec": {"handlers": ["console"], "level": "INFO"}},
}
