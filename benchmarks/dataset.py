"""A synthetic catalog in the benchmark database: N movies with 384-d vectors and some users.

Vectors are MiniLM-like (unit length, clustered: ~50 items per topic, neighbours at cosine
~0.6-0.7), generated from a seed so that exact neighbours can be recomputed in numpy for recall.
Movie ``i`` (pk ``i``, 1-based) has vector ``vectors(n)[i - 1]``. Building is skipped when the
database already holds exactly this catalog.
"""

from __future__ import annotations

import time

import numpy as np

DIMS = 384
TOPIC_SIZE = 50
NOISE = 0.7


def topics_and_vectors(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``(topic of each item, unit vectors)``."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(1, n // TOPIC_SIZE), DIMS)).astype(np.float32)
    assignment = rng.integers(0, len(topics), size=n)
    out = topics[assignment] + NOISE * rng.standard_normal((n, DIMS)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return assignment, out


def vectors(n: int, seed: int = 42) -> np.ndarray:
    return topics_and_vectors(n, seed)[1]


def create_movies(n: int) -> None:
    """Replace all movies with ``n`` synthetic ones (pks 1..n), without any signal."""
    from django.db import connection

    from benchmarks.texts import iter_item_texts
    from project.catalog.models import Movie

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE catalog_movie CASCADE")
    batch = []
    for i, text in enumerate(iter_item_texts(n, seed=5), start=1):
        title = text.split(". Category", 1)[0][:200]
        batch.append(
            Movie(id=i, movielens_id=i, title=title, year=1950 + i % 70, genres="Drama Comedy")
        )
        if len(batch) == 10_000:
            Movie.objects.bulk_create(batch)
            batch = []
    if batch:
        Movie.objects.bulk_create(batch)


def ensure_catalog(n: int, *, users: int = 50, interactions_per_user: int = 30) -> dict:
    """Create (or reuse) the catalog, its HNSW index and users with interactions."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    from embrec.encoders import get_encoder
    from embrec.interactions import refresh_user_vector
    from embrec.models import Embedding, Interaction
    from embrec.storage import IndexSpec, VectorRow, build_index, write_vectors
    from project.catalog.models import Movie

    ct = ContentType.objects.get_for_model(Movie)
    spec = IndexSpec(ct.id, "default", DIMS)
    info: dict = {"n_items": n}
    existing = Movie.objects.count()
    embedded = Embedding.objects.filter(content_type=ct, encoder="default").count()
    if existing == n and embedded == n and Movie.objects.filter(pk=n).exists():
        info["reused"] = True
    else:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE embrec_embedding, embrec_outbox")
        create_movies(n)
        info["movies_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        all_vectors = vectors(n)
        identity = get_encoder("default").identity.as_string()
        for lo in range(0, n, 20_000):
            rows = [
                VectorRow(str(i + 1), all_vectors[i], f"{i:032x}")
                for i in range(lo, min(n, lo + 20_000))
            ]
            with transaction.atomic():
                write_vectors(ct.id, "default", identity, rows)
        info["vectors_s"] = round(time.perf_counter() - started, 1)
        info["reused"] = False
    started = time.perf_counter()
    if build_index(spec):  # INDEX_BUILD_MAINTENANCE_WORK_MEM applies
        info["hnsw_build_s"] = round(time.perf_counter() - started, 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embrec_embedding")

    User = get_user_model()
    if User.objects.filter(username__startswith="bench_user_").count() != users:
        User.objects.filter(username__startswith="bench_user_").delete()
        # Each user likes items of two or three topics: coherent tastes, like real users.
        assignment = topics_and_vectors(n)[0]
        by_topic: dict[int, list[int]] = {}
        for item, topic in enumerate(assignment, start=1):
            by_topic.setdefault(int(topic), []).append(item)
        topic_ids = sorted(by_topic)
        rng = np.random.default_rng(1)
        for u in range(users):
            user = User.objects.create_user(f"bench_user_{u}", password="bench")
            liked = rng.choice(topic_ids, size=int(rng.integers(2, 4)), replace=False)
            pool = [item for topic in liked for item in by_topic[int(topic)]]
            picks = rng.choice(pool, size=min(interactions_per_user, len(pool)), replace=False)
            Interaction.objects.bulk_create(
                Interaction(
                    user=user,
                    content_type=ct,
                    object_pk=str(int(pk)),
                    kind="like",
                    weight=3.0,
                )
                for pk in picks
            )
            refresh_user_vector(user.pk, Movie)
    info["users"] = users
    return info
