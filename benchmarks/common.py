"""Shared helpers of the benchmark scripts: machine description, results files, timing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_DB = "embrec_bench"


def machine() -> dict:
    """Where a figure was measured: CPU model and count, GPU if any, load, date (UTC)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def setup_django(settings: str = "benchmarks.settings", migrate: bool = True) -> None:
    """Configure Django on the benchmark database (``EMBREC_DATABASE_NAME``, default
    ``embrec_bench``) and apply migrations."""
    os.environ.setdefault("EMBREC_DATABASE_NAME", BENCH_DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


class Server:
    """A gunicorn server of the benchmark settings on 127.0.0.1, stopped on exit."""

    def __init__(self, *, port: int = 8765, workers: int = 1, threads: int = 1) -> None:
        self.port = port
        self.workers = workers
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        import signal  # noqa: F401  (used in __exit__)
        import sys

        env = dict(os.environ)
        env.setdefault("EMBREC_DATABASE_NAME", BENCH_DB)
        env["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
        self.log = open(RESULTS / "gunicorn.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "project.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--worker-class",
                "gthread" if self.threads > 1 else "sync",
                "--keep-alive",
                "30",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import http.client

        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/bench/constant/")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start; see {RESULTS / 'gunicorn.log'}")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- CPU accounting

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command: state is [0]; utime and stime are fields 14 and 15 of stat.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_group(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` (a gunicorn master and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def backend_pids(cursor, exclude_self: bool = True) -> list[int]:
    """Pids of the PostgreSQL client backends connected to the current database."""
    cursor.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend'"
        + (" AND pid <> pg_backend_pid()" if exclude_self else "")
    )
    return [row[0] for row in cursor.fetchall()]


class CPUMeter:
    """CPU seconds used by a set of processes between :meth:`start` and :meth:`stop`.

    ``pids`` is called at both ends (processes may appear in between: a new database backend);
    a process present at one end only counts from 0 or up to its last reading.
    """

    def __init__(self, pids) -> None:
        self.pids = pids
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {pid: process_cpu_seconds(pid) for pid in self.pids()}

    def stop(self) -> float:
        after = {pid: process_cpu_seconds(pid) for pid in self.pids()}
        return sum(
            after.get(pid, self.before.get(pid, 0.0)) - self.before.get(pid, 0.0)
            for pid in set(after) | set(self.before)
        )
