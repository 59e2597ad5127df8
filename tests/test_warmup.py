"""embrec.preload_encoders: models loaded when a web process starts, never in commands."""

import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import embrec
from embrec.checks import check_settings
from embrec.encoders import loading
from tests.settings import EMBREC as TEST_EMBREC
from tests.worker import ROOT

PROBE = (
    "import json, sys, django;{setup}"
    "from embrec.encoders import loading;"
    "enc = loading._encoders.get('default');"
    "print(json.dumps({{'torch': 'torch' in sys.modules,"
    " 'loaded': enc is not None and enc._model is not None}}))"
)


def run_probe(setup: str) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EMBREC_TEST_OVERRIDES": json.dumps({"PRELOAD_ENCODERS": ["default"]}),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_preload_encoders_loads_the_configured_aliases():
    with override_settings(EMBREC={**TEST_EMBREC, "PRELOAD_ENCODERS": ["hashing"]}):
        assert "hashing" not in loading._encoders
        timings = embrec.preload_encoders()
        assert list(timings) == ["hashing"] and "hashing" in loading._encoders
        assert embrec.preload_encoders([]) == {}
        with pytest.raises(ImproperlyConfigured, match="nope"):
            embrec.preload_encoders(["nope"])


@pytest.mark.parametrize("value", [["nope"], "default", [1]])
def test_preload_setting_is_checked(value):
    with override_settings(EMBREC={**TEST_EMBREC, "PRELOAD_ENCODERS": value}):
        problems = check_settings()
    assert [p.id for p in problems] == ["embrec.E011"]
    assert "PRELOAD_ENCODERS" in problems[0].msg


def test_wsgi_start_loads_the_model_and_commands_do_not():
    # The demo's wsgi.py, with PRELOAD_ENCODERS = ["default"]: MiniLM is in memory at once.
    assert run_probe("import project.wsgi;") == {"torch": True, "loaded": True}
    # The same settings in a management command (django.setup + check): nothing is loaded.
    command = (
        "django.setup(); from django.core.management import call_command; call_command('check');"
    )
    assert run_probe(command) == {"torch": False, "loaded": False}
