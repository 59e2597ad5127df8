"""The database layer: DATABASE_URL parsing, the embedded server, and the errors a user sees."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured

from embrec.devdb import EmbeddedDatabaseError, EmbeddedPostgres, parse_database_url

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_parse_database_url_accepts_postgres():
    config = parse_database_url("postgres://bob:secret@db.example.com:6543/shop")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == (
        "db.example.com",
        6543,
        "shop",
        "bob",
    )


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://root@localhost/db", "must be a PostgreSQL URL"),
        ("sqlite:///db.sqlite3", "must be a PostgreSQL URL"),
        ("not a url", "must be a PostgreSQL URL"),
        ("postgres://localhost:5432", "names no database"),
    ],
)
def test_parse_database_url_rejects_bad_urls(url, fragment):
    with pytest.raises(ImproperlyConfigured, match=fragment):
        parse_database_url(url)


def test_wrong_scheme_in_manage_py_is_one_clear_line():
    result = run_manage("check", env={"DATABASE_URL": "mysql://root@localhost/db"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_unreachable_database_url_is_one_clear_line():
    # Nothing listens on port 1.
    result = run_manage("migrate", env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Could not connect to PostgreSQL at 127.0.0.1:1/nowhere" in result.stderr
    assert "DATABASE_URL" in result.stderr


def _system_postgres():
    """The machine's PostgreSQL on 5432, which has no pgvector."""
    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)


def test_missing_pgvector_extension_is_reported_clearly():
    name = f"embrec_nopgvector_{os.getpid()}"
    with _system_postgres() as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        assert available is None, "this test needs a PostgreSQL server without pgvector"
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
        result = run_manage("migrate", env={"DATABASE_URL": url})
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "does not have the pgvector extension installed" in result.stderr
        assert "127.0.0.1:5432" in result.stderr

        check = run_manage("check", "--database", "default", env={"DATABASE_URL": url})
        assert check.returncode == 1
        assert "embrec.E010" in check.stderr
    finally:
        with _system_postgres() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_data_folder_from_another_major_version_is_refused_untouched(tmp_path):
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "base").mkdir()
    before = sorted(p.name for p in pgdata.iterdir())
    server = EmbeddedPostgres(tmp_path)
    with pytest.raises(EmbeddedDatabaseError, match="created by PostgreSQL 15") as info:
        server.start()
    assert "move that folder aside" in str(info.value)
    assert sorted(p.name for p in pgdata.iterdir()) == before
    assert (pgdata / "PG_VERSION").read_text() == "15\n"


def test_taken_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedPostgres(tmp_path, port=port)
        with pytest.raises(
            EmbeddedDatabaseError, match=f"Port {port} on 127.0.0.1 is already taken"
        ):
            server.start()
    assert not (tmp_path / "pgdata").exists()


def test_bad_port_setting_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBREC_PG_PORT", "http")
    with pytest.raises(EmbeddedDatabaseError, match="EMBREC_PG_PORT must be a TCP port number"):
        EmbeddedPostgres.for_base_dir(tmp_path)


CLIENT = """
import os, sys, time
from pathlib import Path
import psycopg
from embrec.devdb import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
with psycopg.connect(server.url(), autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS hits (pid int)")
    conn.execute("INSERT INTO hits VALUES (%s)", (os.getpid(),))
    # Wait until the other process has written too: both must be on one server at once.
    deadline = time.monotonic() + 90
    while conn.execute("SELECT count(*) FROM hits").fetchone()[0] < 2:
        assert time.monotonic() < deadline, "the other process never showed up"
        time.sleep(0.1)
    print(conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0])
"""


def test_two_processes_share_one_server_and_the_last_one_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    # Both saw each other's row on the same postmaster: one shared server, no fight.
    assert outputs[0][0].strip() == outputs[1][0].strip() != ""
    server = EmbeddedPostgres(tmp_path)
    assert not server.is_running(), "the last process should have stopped the server"
    assert not list((tmp_path / "clients").iterdir())
    # Data survives a restart: the folder is reused.
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM hits").fetchone()[0] == 2
    finally:
        server.release()
    assert not server.is_running()


def test_server_settings_from_the_environment(tmp_path, monkeypatch):
    from embrec.devdb import parse_server_settings

    assert parse_server_settings(" shared_buffers=256MB , work_mem=7MB,") == {
        "shared_buffers": "256MB",
        "work_mem": "7MB",
    }
    for bad in ["shared_buffers", "=1", "work mem=1MB", "work_mem="]:
        monkeypatch.setenv("EMBREC_PG_SETTINGS", bad)
        with pytest.raises(EmbeddedDatabaseError, match="EMBREC_PG_SETTINGS must be"):
            EmbeddedPostgres.for_base_dir(tmp_path / "unused")
    server = EmbeddedPostgres(tmp_path, settings={"work_mem": "7MB", "application_name": "a b"})
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SHOW work_mem").fetchone()[0] == "7MB"
    finally:
        server.release()
