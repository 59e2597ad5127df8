"""Test settings: the demo project's, plus a test app and a fast deterministic encoder.

The database is the same as the demo's (embedded PostgreSQL + pgvector, or ``DATABASE_URL``);
pytest-django creates a separate test database on it. ``EMBREC_TEST_DB_NAME`` picks its name, so
several test runs can share one server.
"""

import json
import os

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

# Unit tests run Celery tasks in-process; tests that need a real worker start one explicitly
# with a real broker (see tests/worker.py).
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = os.environ.get("EMBREC_TEST_BROKER_URL", "memory://")
# The library's default routing (everything on EMBREC["QUEUE"]) unless a test asks for the
# demo's queues (JSON, also passed to the worker processes it starts).
CELERY_TASK_ROUTES = json.loads(os.environ.get("EMBREC_TEST_TASK_ROUTES", "null") or "null")

EMBREC = {
    "ENCODERS": {
        # The demo's registration uses "default": the real MiniLM model.
        "default": {
            "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
            "OPTIONS": {},
        },
        # Test-app registrations use this deterministic encoder: fast and exact.
        "hashing": {
            "CLASS": "embrec.encoders.hashing.HashingEncoder",
            "OPTIONS": {"dimensions": 64},
        },
        # Classical word vectors (GloVe 6B 50d from its package), used side by side with others.
        "glove": {"CLASS": "embrec.encoders.static.StaticWordEncoder", "OPTIONS": {}},
    },
}

# Worker processes started by tests receive EMBREC changes as JSON (top-level keys replace the
# defaults above; ENCODERS entries are replaced per alias), e.g. a slow or recording encoder.
_overrides = json.loads(os.environ.get("EMBREC_TEST_OVERRIDES", "{}") or "{}")
EMBREC["ENCODERS"].update(_overrides.pop("ENCODERS", {}))
EMBREC.update(_overrides)

# Tests compute maps in-process (eager Celery): a per-process cache, cleared by the tests.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}
TEST_BASE_DIR = BASE_DIR
