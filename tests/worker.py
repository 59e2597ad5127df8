"""Start a real ``celery worker`` process against a real Redis broker, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("EMBREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_available(url: str = REDIS_URL) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def flush_broker(url: str = REDIS_URL) -> None:
    redis.Redis.from_url(url).flushdb()


@contextlib.contextmanager
def use_broker(url: str = REDIS_URL):
    """Make this process send tasks to ``url`` instead of running them eagerly."""
    from project.celery import app

    saved = (app.conf.task_always_eager, app.conf.broker_url)
    _reset_pools(app)
    app.conf.task_always_eager = False
    app.conf.broker_url = url
    try:
        yield app
    finally:
        _reset_pools(app)
        app.conf.task_always_eager, app.conf.broker_url = saved


def _reset_pools(app) -> None:
    """Drop cached broker connections so the next publish uses the current broker_url."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    # kombu keeps producer pools per connection in a process-wide registry; a pool whose
    # connections were closed above would otherwise be handed out again ("closed pool").
    pools.reset()


def start_worker(
    *,
    broker: str = REDIS_URL,
    queues: str = "embrec",
    name: str = "w1",
    extra_env: dict | None = None,
    logfile: Path | None = None,
) -> subprocess.Popen:
    """Start ``celery -A project worker`` on the test database; returns the process."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "EMBREC_DATABASE_NAME": connection.settings_dict["NAME"],
            "EMBREC_TEST_BROKER_URL": broker,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.update(extra_env or {})
    out = open(logfile, "wb") if logfile else subprocess.DEVNULL
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_worker_app",
            "worker",
            "-Q",
            queues,
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen, *, kill: bool = False, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def wait_for(predicate, *, timeout: float = 120, interval: float = 0.25, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
