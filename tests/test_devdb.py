"""The database layer: DATABASE_URL parsing, the embedded server, and the errors a user sees."""

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured

from embrec.devdb import EmbeddedDatabaseError, EmbeddedPostgres, _bin_dir, parse_database_url

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


# --------------------------------------------------------------------------- a shared host

PSQL = str(_bin_dir() / "psql")


def as_nobody(*command, env=None):
    """Run ``command`` as the unprivileged ``nobody`` account, without any group of ours."""
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "5", **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def groups_of(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:]}
    raise AssertionError("no Groups line")


def gid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Gid:"):
            return int(line.split()[1])
    raise AssertionError("no Gid line")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another account needs root")
def test_another_account_cannot_connect(tmp_path):
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "db", port=port)
    server.start()
    try:
        root = tmp_path / "db"
        # The secret and the folders around it are private.
        assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(root.stat().st_mode) & 0o007 == 0, oct(root.stat().st_mode)
        assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
        hba = (server.pgdata / "pg_hba.conf").read_text()
        assert "trust" not in hba and "scram-sha-256" in hba
        pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        assert 0 not in groups_of(pid) and gid_of(pid) != 0

        socket_dsn = f"host={server.socket_dir} port={port} user=postgres dbname=postgres"
        tcp_dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        # The owner gets in with the password file (a control: the commands below can work).
        for dsn in (socket_dsn, tcp_dsn):
            ok = subprocess.run(
                [PSQL, "-w", "-At", "-c", "SELECT current_user", dsn],
                capture_output=True,
                text=True,
                env={**os.environ, "PGPASSFILE": str(server.passfile)},
                timeout=30,
            )
            assert (ok.returncode, ok.stdout.strip()) == (0, "postgres"), ok.stderr
            # …and not without it.
            bare = subprocess.run(
                [PSQL, "-w", "-c", "SELECT 1", dsn],
                capture_output=True,
                text=True,
                env={**os.environ, "PGPASSFILE": "/nonexistent"},
                timeout=30,
            )
            assert bare.returncode != 0

        # Another account: not through the socket, not over TCP, not with the password file.
        via_socket = as_nobody(PSQL, "-w", "-c", "SELECT 1", socket_dsn)
        assert via_socket.returncode != 0
        assert "Permission denied" in via_socket.stderr, via_socket.stderr
        via_tcp = as_nobody(PSQL, "-w", "-c", "SELECT 1", tcp_dsn)
        assert via_tcp.returncode != 0
        assert "password" in via_tcp.stderr, via_tcp.stderr
        guessed = as_nobody(PSQL, "-w", "-c", "SELECT 1", tcp_dsn + " password=postgres")
        assert guessed.returncode != 0
        assert "password authentication failed" in guessed.stderr, guessed.stderr
        assert as_nobody("cat", str(server.passfile)).returncode != 0
        # TCP listens on the loopback address only.
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    finally:
        server.release()
    assert not server.is_running()


def make_old_data_folder(root: Path) -> EmbeddedPostgres:
    """A data folder as earlier versions made it: initdb --auth=trust, no password."""
    server = EmbeddedPostgres(root)
    root.mkdir()
    root.chmod(0o755)  # earlier versions left it open
    server._make_traversable()
    server.pgdata.mkdir(mode=0o700)
    server._chown(server.pgdata)
    subprocess.run(
        [
            str(_bin_dir() / "initdb"),
            "-D",
            str(server.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        **server._run_as(),
    )
    assert "trust" in (server.pgdata / "pg_hba.conf").read_text()
    assert not server.passfile.exists()
    return server


def start_old_style(server: EmbeddedPostgres) -> None:
    """Start it as earlier versions did: an open socket folder, the default 0777 socket."""
    server.socket_dir.mkdir(exist_ok=True)  # (left by an earlier run of this test)
    server.socket_dir.chmod(0o755)
    server._chown(server.socket_dir)
    server.logfile.touch()
    server._chown(server.logfile)
    options = f"-k {server.socket_dir} -p {server.port} -h ''"
    server._pg_ctl(["start", "-w", "-l", str(server.logfile), "-o", options])


@pytest.mark.parametrize("running", [False, True], ids=["at-rest", "running"])
def test_old_trust_data_folder_is_migrated(tmp_path, running):
    """A data folder made by earlier versions keeps working, now with a password; also when an
    earlier version's server is still running on it."""
    root = tmp_path / "old"
    server = make_old_data_folder(root)
    if running:
        start_old_style(server)
        with psycopg.connect(
            host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres"
        ) as conn:
            started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]

    server.start()
    try:
        assert "trust" not in (server.pgdata / "pg_hba.conf").read_text()
        assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            verifier = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
            ).fetchone()[0]
            if running:  # reloaded in place, not restarted
                assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
        assert verifier.startswith("SCRAM-SHA-256$")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres"
            )
    finally:
        server.release()
    assert not server.is_running()

    # A second start finds the folder migrated and leaves it as it is.
    again = EmbeddedPostgres(root)
    again.start()
    try:
        with psycopg.connect(again.url(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        again.release()


def test_lost_password_file_gets_a_new_password(tmp_path):
    server = EmbeddedPostgres(tmp_path)
    server.start()
    server.release()
    old = server.password()
    server.passfile.unlink()
    server.start()
    try:
        assert server.password() != old
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a folder's owner needs root")
def test_foreign_socket_folder_is_refused(tmp_path):
    server = EmbeddedPostgres(tmp_path)
    server.socket_dir.mkdir()
    try:
        os.chown(server.socket_dir, 65534, 65534)  # created first by another account
        with pytest.raises(EmbeddedDatabaseError, match="not a folder of this account"):
            server.start()
    finally:
        server.socket_dir.rmdir()


def test_project_settings_use_the_password():
    from django.conf import settings

    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL is set: the embedded server is not used")
    server = EmbeddedPostgres.for_base_dir(settings.BASE_DIR)
    assert settings.DATABASES["default"]["PASSWORD"] == server.password() != ""


REGISTER = """
import sys, time
from pathlib import Path
from embrec.devdb import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1])).start()
print("registered", flush=True)
time.sleep(600)
"""


def test_killed_client_does_not_keep_the_server_running(tmp_path):
    server = EmbeddedPostgres(tmp_path)
    server.start()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    child = subprocess.Popen(
        [sys.executable, "-c", REGISTER, str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "registered"
        assert (tmp_path / "clients" / str(child.pid)).exists()
        # Killed (it never releases) and not yet reaped: a zombie still has its pid.
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # A registration whose pid now belongs to another process (other start time) is stale.
        (tmp_path / "clients" / "1").write_text("not-its-start-time")
        server.release()
        assert not server.is_running()
        assert not list((tmp_path / "clients").iterdir())
    finally:
        child.kill()
        child.wait()
