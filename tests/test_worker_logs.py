"""A worker started as ``manage.py demo`` starts it logs each line once, without Kombu's
"No hostname was supplied" warning, from its start to a processed task."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

import project.settings
from embrec.models import Embedding
from tests.worker import ROOT, stop_worker, wait_for

# The demo's own settings (its LOGGING and its default filesystem broker), on the test database.
ENV = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

DEMO_COMMANDS = """
import json, django
django.setup()
from project.catalog.management.commands.demo import READY_FILE_ENV, worker_commands
print(json.dumps({"ready_env": READY_FILE_ENV, "commands": dict(worker_commands())}))
"""

SAVE_A_MOVIE = """
import django
django.setup()
from project.catalog.models import Movie
Movie.objects.create(movielens_id=1, title="Alien (1979)", genres="Horror|Sci-Fi")
"""


def project_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DATABASE_URL"}}
    env.pop("EMBREC_TEST_DB_NAME", None)
    env.update(ENV)
    env["EMBREC_DATABASE_NAME"] = connection.settings_dict["NAME"]
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return env


def python(code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def message(line: str) -> str:
    """A log line without its "[time: LEVEL/process]" prefix (Celery's format and the demo's)."""
    return re.sub(r"^\[[^\]]*\] ", "", line).strip()


def repeated_lines(lines: list[str]) -> list[str]:
    """Lines whose message is the one of the line before (one record printed by two handlers)."""
    return [
        b for a, b in zip(lines, lines[1:], strict=False) if message(a) and message(a) == message(b)
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demos_encoding_worker_logs_each_line_once(tmp_path):
    env = project_env()
    demo = json.loads(python(DEMO_COMMANDS, env).strip().splitlines()[-1])
    command = demo["commands"]["encoding worker"]
    assert "-n" in command  # a node name of its own
    ready = tmp_path / "ready"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, demo["ready_env"]: str(ready)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: ready.exists() or proc.poll() is not None, timeout=180, message="worker ready"
        )
        assert proc.poll() is None, log.read_text()
        # A save in another process: its drain task reaches the worker, which embeds the movie.
        python(SAVE_A_MOVIE, env)
        wait_for(lambda: Embedding.objects.exists(), timeout=120, message="the movie embedded")
    finally:
        stop_worker(proc)
    text = Path(log).read_text()
    lines = text.splitlines()
    assert "No hostname was supplied" not in text, text
    assert repeated_lines(lines) == [], text
    assert "Task embrec.drain" not in text  # --loglevel WARNING: Celery's INFO lines are off
    # The warm-up's INFO line from embrec's logger: printed, once.
    loaded = [line for line in lines if "embrec: encoder 'default' runs on" in line]
    assert len(loaded) == 1, text


def test_the_docs_show_the_demos_logging_settings():
    section = (ROOT / "docs" / "WORKERS.md").read_text().split("## Running workers\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(LOGGING = .*?)```", section, re.S)
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace["LOGGING"] == project.settings.LOGGING
    assert project.settings.LOGGING["loggers"]["embrec"]["propagate"] is False
