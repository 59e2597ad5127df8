"""Settings of the benchmark runs: the demo project on its own database, quiet, DEBUG off.

``EMBREC_DATABASE_NAME`` (default ``embrec_bench``) keeps benchmark data apart from the demo's.
The demo's ``default`` encoder alias maps to the 384-d hashing encoder unless
``EMBREC_BENCH_ENCODER=minilm``: benchmarks of the database and the API measure storage and
queries, not the model (the encode benchmark measures the model).
"""

import os

os.environ.setdefault("EMBREC_DATABASE_NAME", "embrec_bench")

from project.settings import *  # noqa: E402, F403
from project.settings import REST_FRAMEWORK  # noqa: E402

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "benchmarks.urls"

CELERY_BROKER_URL = os.environ.get("EMBREC_BENCH_BROKER_URL", "redis://127.0.0.1:6379/6")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_ALWAYS_EAGER = False

if os.environ.get("EMBREC_BENCH_ENCODER", "hashing") == "minilm":
    _ENCODER = {
        "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
        "OPTIONS": {},
    }
else:
    _ENCODER = {"CLASS": "embrec.encoders.hashing.HashingEncoder", "OPTIONS": {"dimensions": 384}}

EMBREC = {
    "ENCODERS": {"default": _ENCODER},
    "AUTO_KICK": False,
    "BATCH_SIZE": int(os.environ.get("EMBREC_BENCH_BATCH_SIZE", "256")),
    # Room for the HNSW graph of a 1M-vector build (~2.2GB at 384-d); the machine has 24 GiB.
    "INDEX_BUILD_MAINTENANCE_WORK_MEM": os.environ.get("EMBREC_BENCH_INDEX_MEMORY", "3GB"),
    # No throttles: a load test from one address would be throttled (429) within a second, and
    # the hand-written views it is compared with have none either.
    "API_THROTTLE_CLASSES": [],
}

# Basic auth on every request of the load test: a cheap hasher keeps password hashing
# (deliberately slow) from dominating the figures of the recommendations endpoint.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.BasicAuthentication"],
}
LOGGING = {"version": 1, "disable_existing_loggers": False}

# The scan settings of embrec's defaults on every connection, as a site serving hand-written
# pgvector queries configures its server (benchmarks.handwritten relies on them; embrec sets its
# own per query).
DATABASES["default"].setdefault("OPTIONS", {})["options"] = (  # noqa: F405
    "-c hnsw.ef_search=100 -c hnsw.iterative_scan=relaxed_order"
)
# Connections stay open (as behind a pooler): per-request figures never include a reconnect, and
# the CPU meters of bench_rest follow the same database backends for the whole run.
DATABASES["default"]["CONN_MAX_AGE"] = None  # noqa: F405
