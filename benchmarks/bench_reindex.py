"""End-to-end reindex: outbox -> Celery worker(s) -> vectors committed in PostgreSQL, items/s.

    python -m benchmarks.bench_reindex --n 100000 --workers 1 2
    EMBREC_BENCH_ENCODER=minilm python -m benchmarks.bench_reindex --n 2000 --workers 1

For each worker count: empty the vectors and the HNSW index, queue every movie in the outbox
(``embrec.indexing.reindex``), start that many real ``celery worker`` processes on a Redis broker
(``EMBREC_BENCH_BROKER_URL``, default ``redis://127.0.0.1:6379/6``), send one drain task per
worker, and time until every vector is committed, the outbox is empty and the HNSW index exists
(a bulk load defers the index and builds it at the end, ``EMBREC["INDEX_BUILD_THRESHOLD"]``; that
build is part of the figure). Reported: items/s, the load and index-build times, the enqueue time,
and each worker's peak RSS (``VmHWM``).

By default the encoder is the 384-d hashing encoder, so the figure is the pipeline's own
ceiling (claiming, loading objects, hashing, COPY + upsert, building the HNSW index, deleting
outbox rows); ``EMBREC_BENCH_ENCODER=minilm`` runs the real model through the engine. The benchmark
uses its own database, ``embrec_bench_reindex``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("EMBREC_DATABASE_NAME", "embrec_bench_reindex")

from benchmarks.common import RESULTS, ROOT, save, setup_django  # noqa: E402


def start_worker(name: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
            "HF_HUB_OFFLINE": "1",
        }
    )
    log = open(RESULTS / f"worker-{name}.log", "wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-Q",
            "embrec",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}@%h",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    setup_django()

    import redis
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    from benchmarks.dataset import create_movies
    from embrec import indexing
    from embrec.conf import embrec_settings
    from embrec.encoders import get_encoder
    from embrec.models import Embedding, OutboxEntry
    from embrec.registry import registry
    from embrec.storage import IndexSpec, forget_indexes
    from embrec.tasks import drain_outbox
    from project.catalog.models import Movie

    if Movie.objects.count() != args.n or not Movie.objects.filter(pk=args.n).exists():
        create_movies(args.n)
    rec = registry.get(Movie)
    ct = ContentType.objects.get_for_model(Movie)
    encoder = get_encoder("default")
    index_name = IndexSpec(ct.id, "default", encoder.dimensions).name
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    runs = []
    for workers in args.workers:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE embrec_embedding, embrec_outbox")
            cursor.execute(f"DROP INDEX IF EXISTS {index_name}")
        forget_indexes()
        broker.flushdb()
        started = time.perf_counter()
        queued = indexing.reindex(rec)
        enqueue_s = time.perf_counter() - started
        procs = [start_worker(f"bench{w}") for w in range(workers)]
        try:
            time.sleep(3)  # let the workers boot and connect before timing starts
            started = time.perf_counter()
            for _ in range(workers):
                drain_outbox.apply_async(queue=embrec_settings.QUEUE)
            deadline = started + args.timeout
            done = 0
            loaded_at = None
            peaks: dict[int, float] = {}
            while time.perf_counter() < deadline:
                time.sleep(0.5)
                for proc in procs:
                    peak = peak_rss_mb(proc.pid)
                    if peak:
                        peaks[proc.pid] = max(peaks.get(proc.pid, 0), peak)
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker exited; see benchmarks/results/worker-*.log")
                # Cheap while rows are pending (an EXISTS, not a count of up to 1M rows every
                # half second, which would take CPU from the workers being measured).
                if OutboxEntry.objects.exists():
                    continue
                done = Embedding.objects.filter(content_type=ct).count()
                if done >= args.n:
                    if loaded_at is None:
                        loaded_at = time.perf_counter()
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [index_name])
                        if cursor.fetchone():
                            break
            elapsed = time.perf_counter() - started
            done = Embedding.objects.filter(content_type=ct).count()
        finally:
            for proc in procs:
                stop(proc)
        failed = OutboxEntry.objects.filter(state=OutboxEntry.FAILED).count()
        run = {
            "workers": workers,
            "items": done,
            "queued": queued,
            "failed": failed,
            "seconds": round(elapsed, 1),
            "load_s": round(loaded_at - started, 1) if loaded_at else None,
            "index_build_s": round(elapsed - (loaded_at - started), 1) if loaded_at else None,
            "index_build_threshold": embrec_settings.INDEX_BUILD_THRESHOLD,
            "items_per_s": round(done / elapsed, 1),
            "enqueue_s": round(enqueue_s, 1),
            "worker_peak_rss_mb": [round(v, 1) for v in peaks.values()],
        }
        runs.append(run)
        print(
            f"{workers} worker(s): {done} items in {elapsed:.1f} s = {done / elapsed:,.0f} items/s "
            f"(load {run['load_s']} s + index {run['index_build_s']} s; enqueue {enqueue_s:.1f} s; peak RSS {run['worker_peak_rss_mb']} MiB; failed {failed})"
        )
    save(
        f"reindex-{encoder.identity.name}-{args.n}",
        {
            "command": (
                f"python -m benchmarks.bench_reindex --n {args.n} "
                f"--workers {' '.join(map(str, args.workers))}"
            ),
            "encoder": encoder.identity.as_string(),
            "batch_size": embrec_settings.BATCH_SIZE,
            "broker": settings.CELERY_BROKER_URL,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
