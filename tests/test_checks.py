"""Every EMBREC key is validated by ``manage.py check``; the project's Celery app must be loaded."""

import json
import os
import subprocess
import sys

import celery
import pytest
from celery import _state as celery_state
from django.test import override_settings

from embrec.checks import check_celery_app, check_settings
from embrec.conf import DEFAULTS
from tests.settings import EMBREC as TEST_EMBREC
from tests.worker import ROOT

HASHING = "embrec.encoders.hashing.HashingEncoder"


def ids(errors):
    return sorted({e.id for e in errors})


def encoders(**extra):
    return {"ENCODERS": {**TEST_EMBREC["ENCODERS"], **extra}}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ITERATIVE_SCAN", "fast", "embrec.E011"),
        ("ITERATIVE_SCAN", None, "embrec.E011"),
        ("USER_VECTOR_WEIGHTING", "linear", "embrec.E011"),
        ("HNSW_M", 1, "embrec.E011"),
        ("HNSW_M", 40, "embrec.E011"),  # pgvector needs ef_construction (64) >= 2 * m
        ("EF_SEARCH", 5000, "embrec.E011"),
        ("EF_SEARCH", "100", "embrec.E011"),
        ("MAX_SCAN_TUPLES", 0, "embrec.E011"),
        ("INDEX_BUILD_MAINTENANCE_WORK_MEM", "1GB; DROP TABLE x", "embrec.E011"),
        ("INDEX_BUILD_PARALLEL_WORKERS", -1, "embrec.E011"),
        ("USER_VECTOR_HALF_LIFE_DAYS", 0, "embrec.E011"),
        ("RECENCY_HALF_LIFE_DAYS", None, "embrec.E011"),
        ("POPULARITY_WINDOW_DAYS", "90", "embrec.E011"),
        ("RECOMMEND_POPULARITY", 1.5, "embrec.E011"),
        ("POPULARITY_PRIOR", 1.5, "embrec.E011"),
        ("POPULARITY_PRIOR", "median", "embrec.E011"),
        ("POPULARITY_PRIOR_STRENGTH", -1, "embrec.E011"),
        ("POPULARITY_PRIOR_STRENGTH", None, "embrec.E011"),
        ("RERANK_POPULAR_CANDIDATES", -1, "embrec.E011"),
        ("AUTO_KICK", "yes", "embrec.E011"),
        ("INTERACTION_WEIGHTS", {"like": "three"}, "embrec.E011"),
        ("INTERACTION_WEIGHTS", {}, "embrec.E011"),
        ("DEFAULT_LIMIT", 500, "embrec.E011"),
        ("BATCH_SIZE", 0, "embrec.E007"),
        ("SEARCH_MAX_LENGTH", True, "embrec.E007"),
        ("THROTTLE_RATES", {"anon": "lots"}, "embrec.E012"),
        ("THROTTLE_RATES", {"anon": "10/fortnight"}, "embrec.E012"),
        ("THROTTLE_RATES", {"admin": "10/min"}, "embrec.E012"),
        ("THROTTLE_RATES", ["10/min"], "embrec.E012"),
        ("API_THROTTLE_CLASSES", ["no.such.Throttle"], "embrec.E013"),
        ("API_THROTTLE_CLASSES", "embrec.api.throttling.AnonRateThrottle", "embrec.E013"),
        ("API_PERMISSION_CLASSES", ["embrec.api.throttling.AnonRateThrottle"], "embrec.E013"),
    ],
)
def test_a_bad_value_of_any_key_is_a_check_error_with_a_hint(key, value, expected):
    with override_settings(EMBREC={**encoders(), key: value}):
        errors = check_settings()
    assert ids(errors) == [expected], errors
    assert all(error.hint for error in errors)
    assert key in errors[0].msg or key == "THROTTLE_RATES"


def test_a_denser_hnsw_graph_with_a_wide_enough_construction_passes():
    with override_settings(EMBREC={**encoders(), "HNSW_M": 32, "HNSW_EF_CONSTRUCTION": 128}):
        assert check_settings() == []
    with override_settings(EMBREC={**encoders(), "HNSW_M": 32, "HNSW_EF_CONSTRUCTION": 63}):
        errors = check_settings()
    assert ids(errors) == ["embrec.E011"]
    assert "at least 2 × EMBREC['HNSW_M'] (64" in errors[0].msg


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_key_is_validated(key):
    # A value no setting accepts: each key must have a rule that reports it.
    with override_settings(EMBREC={**encoders(), key: object()}):
        errors = check_settings()
    assert errors, f"EMBREC[{key!r}] is not validated"
    assert any(key in error.msg for error in errors), errors
    assert all(error.id.startswith("embrec.E") and error.hint for error in errors)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"CLASS": HASHING, "OPTIONS": {"dimension": 8}}, "unknown option(s) for HashingEncoder"),
        ({"CLASS": HASHING, "OPTIONS": {}, "OPTION": {}}, "unknown key(s): OPTION"),
        (
            {
                "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
                "OPTIONS": {"batchsize": 8},
            },
            "batchsize",
        ),
        (
            {"CLASS": "embrec.encoders.hybrid.HybridEncoder", "OPTIONS": {"parts": []}},
            "rejected by HybridEncoder",
        ),
    ],
)
def test_encoder_options_are_checked(config, message):
    with override_settings(EMBREC=encoders(bad=config)):
        errors = check_settings()
    assert ids(errors) == ["embrec.E009"], errors
    assert message in errors[0].msg and errors[0].hint


def test_valid_values_pass():
    good = {
        **encoders(ok={"CLASS": HASHING, "OPTIONS": {"dimensions": 8, "bigrams": False}}),
        "ITERATIVE_SCAN": "strict_order",
        "USER_VECTOR_WEIGHTING": "uniform",
        "INDEX_BUILD_MAINTENANCE_WORK_MEM": "512MB",
        "USER_VECTOR_HALF_LIFE_DAYS": None,
        "THROTTLE_RATES": {"search": "5/second", "anon": None},
        "API_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    with override_settings(EMBREC=good):
        assert check_settings() == []


def test_manage_py_check_fails_with_the_id_in_a_fresh_process():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EMBREC_TEST_OVERRIDES": json.dumps({"ITERATIVE_SCAN": "fast"}),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "embrec.E011" in done.stderr and "ITERATIVE_SCAN" in done.stderr, done.stderr


def test_celery_app_of_the_project_is_loaded():
    assert check_celery_app() == []
    assert celery.current_app.main == "project"


def test_forgotten_celery_app_is_an_error_with_the_lines_to_add(monkeypatch):
    # What a web process looks like when the project package does not import its Celery app:
    # nothing has created an app, so celery.current_app is Celery's fallback.
    monkeypatch.setattr(celery_state, "default_app", None)
    monkeypatch.setattr(celery_state._tls, "current_app", None)
    errors = check_celery_app()
    assert ids(errors) == ["embrec.E014"], errors
    assert "amqp://" in errors[0].msg
    assert "from .celery import app as celery_app" in errors[0].hint


def test_a_celery_app_not_configured_from_django_settings_is_a_warning(monkeypatch):
    app = celery.Celery("elsewhere", broker="redis://127.0.0.1:1/0", set_as_current=False)
    monkeypatch.setattr(celery_state._tls, "current_app", app)
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        errors = check_celery_app()
    assert ids(errors) == ["embrec.W001"], errors


HOST_SETTINGS = """
SECRET_KEY = "x"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "embrec",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "unused"}}
CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
"""
HOST_CELERY = """
from celery import Celery

app = Celery("hostproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""


def _check_host(tmp_path, init: str) -> subprocess.CompletedProcess:
    package = tmp_path / "hostproj"
    package.mkdir(exist_ok=True)
    (package / "settings.py").write_text(HOST_SETTINGS)
    (package / "celery.py").write_text(HOST_CELERY)
    (package / "__init__.py").write_text(init)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hostproj.settings",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_host_project_that_forgets_its_celery_app_fails_the_check(tmp_path):
    forgot = _check_host(tmp_path, "")
    assert forgot.returncode != 0
    assert "embrec.E014" in forgot.stderr, forgot.stderr
    assert "from .celery import app as celery_app" in forgot.stderr
    fixed = _check_host(
        tmp_path, 'from .celery import app as celery_app\n\n__all__ = ["celery_app"]\n'
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "embrec.E014" not in fixed.stderr + fixed.stdout
