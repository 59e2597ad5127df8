"""Popularity under live writes: recommendations right after a new interaction against warm ones.

    python -m benchmarks.bench_popularity --n 20000 --crowd 2000 --per-user 50 --rounds 200

A catalog of ``n`` movies (:mod:`benchmarks.dataset`) gets ``crowd × per_user`` positive
interactions spread over the last 60 days (item popularity Zipf-like), then each round

1. records one interaction of a random crowd user on a random movie (``record_interaction``,
   timed as ``write``),
2. times ``embrec.recommend(user, model=Movie, limit=10, popularity=0.3, explain=False)``
   (``personal_after_write``), then the same call again with nothing written in between
   (``personal_warm``),
3. the same pair for ``embrec.popular(Movie, limit=10)`` (``popular_after_write``,
   ``popular_warm``).

Then a bulk import: ``--bulk`` interactions by ``bulk_create`` (batches of 5,000) in a
transaction that is rolled back (``bulk_import``, per 1,000 rows), alternating five times with
the same import with the table's triggers disabled in that transaction
(``bulk_import_no_triggers``: what the popularity triggers add, side by side; a revision without
them measures the same twice).

The target: p50 right after a write at most 1.2 × the warm p50. Besides wall-clock latency each
measure reports CPU per call: this process's plus its PostgreSQL backend's (read from ``/proc``,
the server runs on the same machine), totalled over the run (the clock ticks are 10 ms) and
divided by the calls; on a shared machine CPU moves less with the load than wall-clock time.
Only the public API is used, so
the same script measures any revision (run it from another checkout with
``EMBREC_DATABASE_NAME`` set to a database of its own; ``EMBREC_PGDATA`` may point at this
checkout's embedded server).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from benchmarks.common import latency_summary, save, setup_django


def crowd_interactions(n: int, crowd: int, per_user: int, *, seed: int = 9) -> int:
    """``crowd`` users with ``per_user`` positive interactions each (kept when present)."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import transaction
    from django.utils import timezone

    from embrec.models import Interaction
    from project.catalog.models import Movie

    User = get_user_model()
    existing = User.objects.filter(username__startswith="crowd_").count()
    if existing == crowd:
        return Interaction.objects.filter(user__username__startswith="crowd_").count()
    User.objects.filter(username__startswith="crowd_").delete()
    users = User.objects.bulk_create(
        User(username=f"crowd_{u}", password="!") for u in range(crowd)
    )
    ct = ContentType.objects.get_for_model(Movie)
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n + 1) ** 0.9
    weights /= weights.sum()
    now = timezone.now()
    total = 0
    for lo in range(0, crowd, 200):
        rows = []
        for user in users[lo : lo + 200]:
            picks = rng.choice(n, size=per_user, replace=False, p=weights) + 1
            ages = rng.uniform(0, 60, size=per_user)
            rows += [
                Interaction(
                    user_id=user.pk,
                    content_type=ct,
                    object_pk=str(int(pk)),
                    kind="like",
                    weight=3.0,
                    created_at=now - timedelta(days=float(age)),
                )
                for pk, age in zip(picks, ages, strict=True)
            ]
        with transaction.atomic():
            Interaction.objects.bulk_create(rows, batch_size=5000)
        total += len(rows)
    return total


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a local process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--crowd", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=20_000, help="Rows of the bulk import.")
    parser.add_argument("--label", default="", help="A name for this run (e.g. the revision).")
    args = parser.parse_args()
    setup_django()

    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    import embrec
    from benchmarks.common import git_revision
    from benchmarks.dataset import ensure_catalog
    from embrec.conf import embrec_settings
    from embrec.interactions import record_interaction
    from embrec.models import Interaction
    from project.catalog.models import Movie

    info = ensure_catalog(args.n, users=20)
    started = time.perf_counter()
    info["crowd_interactions"] = crowd_interactions(args.n, args.crowd, args.per_user)
    info["crowd_s"] = round(time.perf_counter() - started, 1)
    print("catalog:", info)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM embrec_interaction")
        info["interactions"] = cursor.fetchone()[0]

    User = get_user_model()
    readers = list(User.objects.filter(username__startswith="bench_user_").order_by("pk"))
    crowd = list(User.objects.filter(username__startswith="crowd_").order_by("pk"))
    movies = Movie.objects.in_bulk(list(range(1, args.n + 1)))
    rng = np.random.default_rng(17)

    def personal(user) -> list:
        return embrec.recommend(user, model=Movie, limit=10, popularity=0.3, explain=False)

    def popular(_user) -> list:
        return embrec.popular(Movie, limit=10)

    calls = {"personal": personal, "popular": popular}
    timings: dict[str, list[float]] = {"write": []}
    for name in calls:
        timings[f"{name}_after_write"] = []
        timings[f"{name}_warm"] = []
    cpu = dict.fromkeys(timings, 0.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def measure(key: str, fn, *fn_args) -> None:
        cpu_start = time.process_time() + backend_cpu(backend)
        start = time.perf_counter()
        fn(*fn_args)
        timings[key].append(time.perf_counter() - start)
        cpu[key] += time.process_time() + backend_cpu(backend) - cpu_start

    for user in readers:  # warm-up: connections, caches, index pages
        personal(user)
        popular(user)
    for r in range(args.rounds):
        reader = readers[r % len(readers)]
        for name, call in calls.items():
            writer = crowd[int(rng.integers(len(crowd)))]
            movie = movies[int(rng.integers(1, args.n + 1))]
            measure("write", record_interaction, writer, movie, "like")
            measure(f"{name}_after_write", call, reader)
            measure(f"{name}_warm", call, reader)
    for key in ("bulk_import", "bulk_import_no_triggers"):
        timings[key] = []
        cpu[key] = 0.0
    ct = ContentType.objects.get_for_model(Movie)
    for _ in range(5):
        rows = [
            Interaction(
                user_id=crowd[int(rng.integers(len(crowd)))].pk,
                content_type=ct,
                object_pk=str(int(rng.integers(1, args.n + 1))),
                kind="like",
                weight=3.0,
            )
            for _ in range(args.bulk)
        ]

        def bulk_import(rows=rows, triggers: bool = True) -> None:
            with transaction.atomic():
                if not triggers:
                    with connection.cursor() as cursor:
                        cursor.execute("ALTER TABLE embrec_interaction DISABLE TRIGGER USER")
                Interaction.objects.bulk_create(rows, batch_size=5000)
                transaction.set_rollback(True)

        measure("bulk_import", bulk_import)
        measure("bulk_import_no_triggers", bulk_import, rows, False)
    connection.close()
    scale = dict.fromkeys(("bulk_import", "bulk_import_no_triggers"), 1000 / args.bulk)

    results = {
        key: {
            **latency_summary([v * scale.get(key, 1.0) for v in values]),
            "cpu_ms_per_call": round(1000 * cpu[key] * scale.get(key, 1.0) / len(values), 3),
        }
        for key, values in timings.items()
    }
    for name in calls:
        warm = results[f"{name}_warm"]
        after = results[f"{name}_after_write"]
        after["p50_vs_warm"] = round(after["p50_ms"] / warm["p50_ms"], 2)
        after["cpu_vs_warm"] = round(after["cpu_ms_per_call"] / warm["cpu_ms_per_call"], 2)
        after["target_met"] = after["p50_ms"] <= 1.2 * warm["p50_ms"]
    bulk = results["bulk_import"]
    bulk["cpu_vs_no_triggers"] = round(
        bulk["cpu_ms_per_call"] / results["bulk_import_no_triggers"]["cpu_ms_per_call"], 2
    )
    header = f"{'measure':24s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s} {'CPU ms':>8s}"
    print(f"\n{header}  p50 / warm, CPU / warm")
    for key, entry in results.items():
        print(
            f"{key:24s} {entry['p50_ms']:8.2f} {entry['p99_ms']:8.2f} {entry['mean_ms']:8.2f} "
            f"{entry['cpu_ms_per_call']:8.2f}  {entry.get('p50_vs_warm', '')} "
            f"{entry.get('cpu_vs_warm', entry.get('cpu_vs_no_triggers', ''))}"
        )
    label = args.label or git_revision()
    save(
        f"popularity-{args.n}-{label}",
        {
            "command": (
                f"python -m benchmarks.bench_popularity --n {args.n} --crowd {args.crowd} "
                f"--per-user {args.per_user} --rounds {args.rounds} --bulk {args.bulk}"
            ),
            "revision": git_revision(),
            "label": label,
            "catalog": info,
            "popularity_window_days": embrec_settings.POPULARITY_WINDOW_DAYS,
            "popularity_cache_seconds": embrec_settings.POPULARITY_CACHE_SECONDS,
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
