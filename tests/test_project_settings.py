"""The demo project's settings are safe by default: no DEBUG, a private per-install SECRET_KEY,
and ``check --deploy`` warns only about what docs/PRODUCTION.md lists as demo-only."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Deploy-check warnings docs/PRODUCTION.md's production checklist documents as demo-only.
DEMO_ONLY = {"security.W004", "security.W008", "security.W012", "security.W016"}
PRINT = "from django.conf import settings; print(settings.DEBUG); print(settings.SECRET_KEY)"


def project_python(code: str, **env) -> list[str]:
    """Run ``code`` with the demo project's settings, without the test run's environment."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DJANGO_") and k not in {"DATABASE_URL"}
    }
    clean.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            # Parsing a URL starts no server: these tests only read settings.
            "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
            **env,
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_debug_is_off_unless_asked_for(tmp_path):
    keyfile = str(tmp_path / "key")
    assert project_python(PRINT, DJANGO_SECRET_KEY_FILE=keyfile)[0] == "False"
    assert project_python(PRINT, DJANGO_SECRET_KEY_FILE=keyfile, DJANGO_DEBUG="0")[0] == "False"
    assert project_python(PRINT, DJANGO_SECRET_KEY_FILE=keyfile, DJANGO_DEBUG="1")[0] == "True"


def test_secret_key_is_generated_once_per_install_and_kept_private(tmp_path):
    keyfile = tmp_path / "state" / "secret_key"
    first = project_python(PRINT, DJANGO_SECRET_KEY_FILE=str(keyfile))[1]
    assert len(first) >= 50 and "insecure" not in first
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(keyfile.parent.stat().st_mode) == 0o700
    # Kept: the next process (a worker, a restart) signs with the same key.
    assert project_python(PRINT, DJANGO_SECRET_KEY_FILE=str(keyfile))[1] == first
    # Another install gets another key.
    other = project_python(PRINT, DJANGO_SECRET_KEY_FILE=str(tmp_path / "other"))[1]
    assert other != first
    # The environment wins, and the file is left alone.
    env_key = project_python(
        PRINT, DJANGO_SECRET_KEY_FILE=str(keyfile), DJANGO_SECRET_KEY="from-the-environment"
    )[1]
    assert env_key == "from-the-environment"
    assert keyfile.read_text().strip() == first


def test_allowed_hosts_are_local_by_default(tmp_path):
    code = "from django.conf import settings; print(settings.ALLOWED_HOSTS)"
    keyfile = str(tmp_path / "key")
    assert project_python(code, DJANGO_SECRET_KEY_FILE=keyfile) == [
        "['127.0.0.1', 'localhost', '[::1]']"
    ]
    assert project_python(
        code, DJANGO_SECRET_KEY_FILE=keyfile, DJANGO_ALLOWED_HOSTS="shop.example, api.example"
    ) == ["['shop.example', 'api.example']"]


def deploy_warnings(**env) -> set[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    clean.update({"DJANGO_SETTINGS_MODULE": "project.settings", **env})
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return set(re.findall(r"\(([a-z_.]+\.[EW]\d+)\)", result.stdout + result.stderr))


def test_check_deploy_lists_only_documented_demo_warnings():
    found = deploy_warnings()
    assert "security.W018" not in found  # DEBUG
    assert "security.W009" not in found  # a weak SECRET_KEY
    assert found <= DEMO_ONLY, found - DEMO_ONLY
    production = (ROOT / "docs" / "PRODUCTION.md").read_text()
    checklist = production.split("## Production checklist", 1)[1].split("\n## ", 1)[0]
    for warning in DEMO_ONLY:
        assert warning in checklist, f"{warning} is not documented in the production checklist"


def test_https_switch_silences_the_demo_only_warnings():
    found = deploy_warnings(DJANGO_HTTPS="1")
    assert not found & DEMO_ONLY, found
