"""The README's "Add embrec to your project" steps name what exists."""

import re
import tomllib

import embrec
from embrec.conf import DEFAULTS
from tests.worker import ROOT

SECTION = (
    (ROOT / "README.md")
    .read_text()
    .split("## Add embrec to your project\n", 1)[1]
    .split("\n## ", 1)[0]
)


def test_install_line_has_every_extra_the_snippets_need():
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    (line,) = re.findall(r'pip install "/path/to/embrec\[([a-z,]+)\]"', SECTION)
    named = set(line.split(","))
    assert named <= extras
    # embrec.devdb (embedded), the broker (redis), encoding (worker), the docs pages (docs).
    assert {"embedded", "redis", "worker", "docs"} <= named
    assert "embrec.devdb" in SECTION and "redis://" in SECTION and "SIDECAR" in SECTION


def test_snippets_name_real_settings_and_functions():
    assert '"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"' in SECTION
    assert "from .celery import app as celery_app" in SECTION
    assert 'app.config_from_object("django.conf:settings", namespace="CELERY")' in SECTION
    assert "celery -A yourproject worker -Q embrec" in SECTION
    assert DEFAULTS["QUEUE"] == "embrec"
    assert "PRELOAD_ENCODERS" in DEFAULTS and "embrec.preload_encoders()" in SECTION
    assert callable(embrec.preload_encoders)
