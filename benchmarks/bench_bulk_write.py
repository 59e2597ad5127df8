"""Bulk write: ``embrec.storage.write_vectors`` vs Django's ``bulk_create(update_conflicts=True)``.

    python -m benchmarks.bench_bulk_write --n 20000 --repeats 3

Both sides upsert the same N 384-d vectors into ``embrec_embedding`` (first as new rows, then
again over existing rows), each inside one transaction, alternating runs. The rows use their own
encoder alias, which has no HNSW index: this measures the write path itself; index maintenance
costs both sides the same and is part of the reindex benchmark.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from benchmarks.common import Timer, save, setup_django

ALIAS = "bench_write"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--django-batch-size", type=int, default=1000)
    args = parser.parse_args()
    setup_django()

    from django.contrib.contenttypes.models import ContentType
    from django.db import transaction
    from django.db.models.functions import Now

    from embrec.models import Embedding
    from embrec.storage import VectorRow, write_vectors
    from project.catalog.models import Movie

    ct = ContentType.objects.get_for_model(Movie)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pks = [str(i) for i in range(1, args.n + 1)]
    hashes = [f"{i:064x}" for i in range(args.n)]
    identity = f"bench@1/{args.dims}/norm"

    def clear() -> None:
        Embedding.objects.filter(content_type=ct, encoder=ALIAS).delete()

    def embrec_write() -> int:
        rows = [VectorRow(pk, v, h) for pk, v, h in zip(pks, vectors, hashes, strict=True)]
        with transaction.atomic():
            return write_vectors(ct.id, ALIAS, identity, rows)

    def django_write() -> int:
        objs = [
            Embedding(
                content_type_id=ct.id,
                object_pk=pk,
                encoder=ALIAS,
                identity=identity,
                dimensions=args.dims,
                vector=v,
                content_hash=h,
                updated_at=Now(),
            )
            for pk, v, h in zip(pks, vectors, hashes, strict=True)
        ]
        with transaction.atomic():
            done = Embedding.objects.bulk_create(
                objs,
                batch_size=args.django_batch_size,
                update_conflicts=True,
                unique_fields=["content_type", "object_pk", "encoder"],
                update_fields=["identity", "dimensions", "vector", "content_hash", "updated_at"],
            )
        return len(done)

    times: dict[str, list[float]] = {
        "embrec_insert": [],
        "embrec_update": [],
        "django_insert": [],
        "django_update": [],
    }
    clear()
    embrec_write()  # warm-up: connection, type registration, temp table
    for r in range(args.repeats):
        for name, fn in (("embrec", embrec_write), ("django", django_write)):
            clear()
            with Timer() as t:
                assert fn() == args.n
            times[f"{name}_insert"].append(t.seconds)
            with Timer() as t:
                assert fn() == args.n
            times[f"{name}_update"].append(t.seconds)
        print(
            f"run {r + 1}: " + "  ".join(f"{k} {args.n / v[-1]:,.0f}/s" for k, v in times.items())
        )
    clear()
    rates = {k: round(args.n / statistics.median(v), 1) for k, v in times.items()}
    result = {
        "command": f"python -m benchmarks.bench_bulk_write --n {args.n} --repeats {args.repeats}",
        "n_vectors": args.n,
        "dimensions": args.dims,
        "django_batch_size": args.django_batch_size,
        "vectors_per_s": rates,
        "ratio_insert": round(rates["embrec_insert"] / rates["django_insert"], 2),
        "ratio_update": round(rates["embrec_update"] / rates["django_update"], 2),
        "runs_s": times,
    }
    print(
        f"\nwrite_vectors: insert {rates['embrec_insert']:,.0f}/s, update "
        f"{rates['embrec_update']:,.0f}/s | bulk_create: insert {rates['django_insert']:,.0f}/s, "
        f"update {rates['django_update']:,.0f}/s | ratios {result['ratio_insert']}x / "
        f"{result['ratio_update']}x"
    )
    save("bulk-write", result)


if __name__ == "__main__":
    main()
