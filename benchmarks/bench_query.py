"""Query latency and recall: similar items and personal recommendations, three ways.

    python -m benchmarks.bench_query --n 100000 --queries 200

For each query item (and each benchmark user) the same search runs as

* ``raw`` — the bare pgvector SQL (``ORDER BY vector <=> %s LIMIT 10`` over the same HNSW index,
  same ``ef_search``, query vector bound from the client, on a plain psycopg connection);
* ``api`` — ``embrec.similar(obj)`` / ``embrec.recommend(user)`` in this process;
* ``rest`` — ``GET .../similar/`` / ``GET recommendations/`` over HTTP on 127.0.0.1 to a
  gunicorn worker (keep-alive connection);
* for similar items also the hand-written alternatives of :mod:`benchmarks.handwritten`:
  ``pgvector`` (pgvector-python's ``CosineDistance`` through the ORM, in this process),
  ``rest_pgvector`` and ``rest_raw_sql`` (the same view, and the one-statement SQL view, over
  HTTP to the same gunicorn worker).

All sides are interleaved query by query. recall@10 compares result ids with the exact top 10
computed in numpy over all vectors (minus the query item, or minus the user's seen items).
An ``ef_search`` curve of the raw query follows. Vectors are synthetic MiniLM-like
(:mod:`benchmarks.dataset`); the database is ``embrec_bench``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import time

import numpy as np

from benchmarks.common import Server, latency_summary, save, setup_django


def exact_top(all_vectors: np.ndarray, query: np.ndarray, exclude: set[int], k: int) -> set[int]:
    scores = all_vectors @ query
    for i in exclude:
        scores[i - 1] = -np.inf
    top = np.argpartition(-scores, k)[:k]
    return {int(i) + 1 for i in top}


def prewarm(conn, relations: list[str]) -> dict:
    """Load the table and its HNSW index into shared buffers (``pg_prewarm``), as on a server
    that has been serving them: every side then reads the same warm pages, not the disk.

    Needs ``shared_buffers`` larger than both (for 1M items ~4 GB:
    ``EMBREC_PG_SETTINGS=shared_buffers=6GB`` on the embedded server).
    """
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    except psycopg.Error as exc:
        return {"skipped": str(exc).strip()}
    shared = conn.execute("SHOW shared_buffers").fetchone()[0]
    blocks = {r: conn.execute("SELECT pg_prewarm(%s)", [r]).fetchone()[0] for r in relations}
    return {"shared_buffers": shared, "blocks": blocks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    setup_django()

    import psycopg
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from pgvector.psycopg import register_vector

    import embrec
    from benchmarks.dataset import DIMS, ensure_catalog, vectors
    from benchmarks.handwritten import pgvector_similar
    from embrec.conf import embrec_settings
    from embrec.interactions import user_vector
    from embrec.models import Interaction
    from embrec.storage import IndexSpec
    from project.catalog.models import Movie

    k = args.limit
    info = ensure_catalog(args.n)
    print("catalog:", info)
    all_vectors = vectors(args.n)
    ct = ContentType.objects.get_for_model(Movie)
    ef_default = int(embrec_settings.EF_SEARCH)

    db = settings.DATABASES["default"]
    raw = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        autocommit=True,
    )
    register_vector(raw)
    raw.execute(f"SET hnsw.ef_search = {ef_default}")
    raw.execute("SET hnsw.iterative_scan = relaxed_order")
    spec = IndexSpec(ct.id, "default", DIMS)
    info["prewarm"] = prewarm(raw, ["embrec_embedding", spec.name])
    print("prewarm:", info["prewarm"])
    # The same predicate and expression as the partial HNSW index, or PostgreSQL cannot use it.
    base_sql = (
        f"SELECT object_pk FROM embrec_embedding WHERE {spec.predicate_sql()} AND {{extra}} "
        f"ORDER BY {spec.distance_sql()} LIMIT {k}"
    )
    similar_sql = base_sql.format(extra="object_pk <> %s")
    personal_sql = base_sql.format(extra="NOT (object_pk = ANY(%s))")

    def raw_similar(pk: int) -> list[int]:
        rows = raw.execute(similar_sql, [str(pk), all_vectors[pk - 1]]).fetchall()
        return [int(r[0]) for r in rows]

    def raw_personal(seen: list[str], vector) -> list[int]:
        return [int(r[0]) for r in raw.execute(personal_sql, [seen, vector]).fetchall()]

    # EXPLAIN: the raw and the embrec query must both use the HNSW index.
    plan = raw.execute("EXPLAIN " + similar_sql, ["1", all_vectors[0]]).fetchall()
    uses_index = any("embrec_hnsw" in str(row[0]) for row in plan)

    rng = np.random.default_rng(3)
    query_pks = [int(x) + 1 for x in rng.choice(args.n, size=args.queries, replace=False)]
    movies = Movie.objects.in_bulk(query_pks)
    User = get_user_model()
    users = list(User.objects.filter(username__startswith="bench_user_").order_by("pk"))
    seen_by_user = {
        u.pk: sorted(
            Interaction.objects.filter(user=u, content_type=ct).values_list("object_pk", flat=True)
        )
        for u in users
    }
    user_vectors = {u.pk: user_vector(u.pk, embrec.registry.get(Movie), "default") for u in users}
    auth = {
        u.pk: "Basic " + base64.b64encode(f"{u.username}:bench".encode()).decode() for u in users
    }

    timings: dict[str, list[float]] = {
        f"{kind}_{how}": [] for kind in ("similar", "personal") for how in ("raw", "api", "rest")
    }
    timings["personal_api_no_explain"] = []
    for key in ("similar_pgvector", "similar_rest_pgvector", "similar_rest_raw_sql"):
        timings[key] = []
    hits: dict[str, list[float]] = {key: [] for key in timings}

    with Server(port=args.port, workers=1) as server:
        http_conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

        def rest(path: str, headers: dict | None = None) -> list[int]:
            http_conn.request("GET", path, headers=headers or {})
            response = http_conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
            return [int(r["object"]["id"]) for r in json.loads(body)["results"]]

        def timed(key: str, fn, truth: set[int]) -> None:
            start = time.perf_counter()
            ids = fn()
            timings[key].append(time.perf_counter() - start)
            hits[key].append(len(truth & set(ids)) / k)

        # Warm-up: connections, caches, the index pages.
        for pk in query_pks[:20]:
            raw_similar(pk)
            embrec.similar(movies[pk], limit=k)
            rest(f"/api/embrec/items/catalog.movie/{pk}/similar/?limit={k}")
            pgvector_similar(pk, k)
            rest(f"/bench/pgvector/{pk}/similar/?limit={k}")
            rest(f"/bench/raw/{pk}/similar/?limit={k}")

        for pk in query_pks:
            truth = exact_top(all_vectors, all_vectors[pk - 1], {pk}, k)
            obj = movies[pk]
            timed("similar_raw", lambda pk=pk: raw_similar(pk), truth)
            timed(
                "similar_api",
                lambda obj=obj: [r.object.pk for r in embrec.similar(obj, limit=k)],
                truth,
            )
            timed(
                "similar_rest",
                lambda pk=pk: rest(f"/api/embrec/items/catalog.movie/{pk}/similar/?limit={k}"),
                truth,
            )
            timed(
                "similar_pgvector",
                lambda pk=pk: [m.pk for m, _ in pgvector_similar(pk, k)],
                truth,
            )
            timed(
                "similar_rest_pgvector",
                lambda pk=pk: rest(f"/bench/pgvector/{pk}/similar/?limit={k}"),
                truth,
            )
            timed(
                "similar_rest_raw_sql",
                lambda pk=pk: rest(f"/bench/raw/{pk}/similar/?limit={k}"),
                truth,
            )
        rounds = max(1, args.queries // max(1, len(users)))
        for _ in range(rounds):
            for user in users:
                seen = seen_by_user[user.pk]
                vector = user_vectors[user.pk]
                truth = exact_top(all_vectors, vector, {int(s) for s in seen}, k)
                timed("personal_raw", lambda s=seen, v=vector: raw_personal(s, v), truth)
                timed(
                    "personal_api",
                    lambda u=user: [r.object.pk for r in embrec.recommend(u, model=Movie, limit=k)],
                    truth,
                )
                timed(
                    "personal_api_no_explain",
                    lambda u=user: [
                        r.object.pk
                        for r in embrec.recommend(u, model=Movie, limit=k, explain=False)
                    ],
                    truth,
                )
                timed(
                    "personal_rest",
                    lambda u=user: rest(
                        f"/api/embrec/recommendations/?type=catalog.movie&limit={k}",
                        {"Authorization": auth[u.pk]},
                    ),
                    truth,
                )
        http_conn.close()

    results = {
        key: {**latency_summary(values), f"recall@{k}": round(float(np.mean(hits[key])), 4)}
        for key, values in timings.items()
    }
    for kind in ("similar", "personal"):
        raw_p50 = results[f"{kind}_raw"]["p50_ms"]
        hows = ["api", "rest"]
        if kind == "similar":
            hows += ["pgvector", "rest_pgvector", "rest_raw_sql"]
        for how in hows:
            entry = results[f"{kind}_{how}"]
            entry["p50_vs_raw"] = round(entry["p50_ms"] / raw_p50, 2)
            entry["target_p50_ms"] = round(1.5 * raw_p50 + 5, 3)
            entry["target_met"] = entry["p50_ms"] <= entry["target_p50_ms"]

    curve = []
    for ef in (10, 20, 40, 64, 100, 200, 400):
        raw.execute(f"SET hnsw.ef_search = {ef}")
        lat, rec = [], []
        for pk in query_pks[:100]:
            truth = exact_top(all_vectors, all_vectors[pk - 1], {pk}, k)
            start = time.perf_counter()
            ids = raw_similar(pk)
            lat.append(time.perf_counter() - start)
            rec.append(len(truth & set(ids)) / k)
        curve.append({"ef_search": ef, **latency_summary(lat), f"recall@{k}": float(np.mean(rec))})
    personal_curve = []
    for ef in (40, 100, 200, 400):
        raw.execute(f"SET hnsw.ef_search = {ef}")
        lat, rec = [], []
        for user in users:
            seen = seen_by_user[user.pk]
            vector = user_vectors[user.pk]
            truth = exact_top(all_vectors, vector, {int(s) for s in seen}, k)
            start = time.perf_counter()
            ids = raw_personal(seen, vector)
            lat.append(time.perf_counter() - start)
            rec.append(len(truth & set(ids)) / k)
        personal_curve.append(
            {"ef_search": ef, **latency_summary(lat), f"recall@{k}": float(np.mean(rec))}
        )
    raw.close()
    connection.close()

    print(f"\n{'query':28s} {'p50 ms':>8s} {'p99 ms':>8s} {'recall':>7s}  vs raw")
    for key, entry in results.items():
        print(
            f"{key:28s} {entry['p50_ms']:8.2f} {entry['p99_ms']:8.2f} "
            f"{entry[f'recall@{k}']:7.3f}  {entry.get('p50_vs_raw', '')}"
        )
    print("\nef_search curve (raw similar-items query):")
    for point in curve:
        print(
            f"  ef {point['ef_search']:4d}: p50 {point['p50_ms']:.2f} ms, "
            f"p99 {point['p99_ms']:.2f} ms, recall@{k} {point[f'recall@{k}']:.3f}"
        )
    print("\nef_search curve (raw personal query):")
    for point in personal_curve:
        print(
            f"  ef {point['ef_search']:4d}: p50 {point['p50_ms']:.2f} ms, "
            f"p99 {point['p99_ms']:.2f} ms, recall@{k} {point[f'recall@{k}']:.3f}"
        )
    save(
        f"query-{args.n}",
        {
            "command": f"python -m benchmarks.bench_query --n {args.n} --queries {args.queries}",
            "catalog": info,
            "ef_search": ef_default,
            "hnsw": {
                "m": embrec_settings.HNSW_M,
                "ef_construction": embrec_settings.HNSW_EF_CONSTRUCTION,
            },
            "raw_query_uses_hnsw_index": uses_index,
            "results": results,
            "ef_search_curve": curve,
            "ef_search_curve_personal": personal_curve,
        },
    )


if __name__ == "__main__":
    main()
