"""Fixture catalogs for the read-path tests (queries, interactions, API)."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from embrec import indexing
from embrec.encoders import get_encoder
from embrec.registry import registry
from embrec.storage import IndexSpec, VectorRow, ensure_index, write_vectors
from tests.testapp.models import Article

VOCAB = {
    "scifi": "space robot alien galaxy starship laser planet android cyborg nebula orbit".split(),
    "romance": "love kiss heart wedding letter dance moonlight romance bride sweetheart".split(),
    "cooking": "recipe oven garlic pasta bake sauce butter kitchen flour spice".split(),
    "sports": "football goal match team stadium league coach player score referee".split(),
}
COMMON = "the story of a day with some people and things in town".split()


def make_catalog(per_category: int = 20, seed: int = 7, embed: bool = True) -> list[Article]:
    """Articles in four categories with distinct vocabularies, embedded by the write path."""
    rng = random.Random(seed)
    articles = []
    for category, words in VOCAB.items():
        for i in range(per_category):
            title = f"{category} {i} " + " ".join(rng.sample(words, 3))
            body = " ".join(rng.choices(words, k=6) + rng.choices(COMMON, k=4))
            articles.append(
                Article(
                    title=title,
                    body=body,
                    category=category,
                    price=Decimal(rng.randint(1, 100)),
                )
            )
    articles = Article.objects.bulk_create(articles)
    if embed:
        embed_all()
    return articles


def embed_all() -> None:
    """Run the real write path (outbox + drain) for every article."""
    rec = registry.get(Article)
    indexing.enqueue(Article, rec.get_queryset().values_list("pk", flat=True), kick=False)
    indexing.drain()


def brute_force(query: np.ndarray, articles: list[Article]) -> list[tuple[str, float]]:
    """Exact cosine ranking of ``articles`` against ``query`` with numpy."""
    rec = registry.get(Article)
    matrix = get_encoder("hashing").encode([rec.get_text(a) for a in articles]).astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = query.astype(np.float64) / np.linalg.norm(query)
    scores = matrix @ q
    order = np.argsort(-scores, kind="stable")
    return [(str(articles[i].pk), float(scores[i])) for i in order]


def text_vector(text: str) -> np.ndarray:
    return get_encoder("hashing").encode([text])[0]


def article_spec() -> IndexSpec:
    ct = ContentType.objects.get_for_model(Article)
    encoder = get_encoder("hashing")
    return IndexSpec(ct.id, "hashing", encoder.dimensions, identity=encoder.identity.as_string())


def load_random_vectors(count: int, seed: int = 1, categories=("a", "b", "c", "d")) -> list:
    """Many articles with random unit vectors written straight to storage (planner-sized table).

    Categories cycle so that ``categories[0]`` holds ``1/len(categories)`` of the rows.
    """
    rng = np.random.default_rng(seed)
    articles = Article.objects.bulk_create(
        [
            Article(title=f"bulk {i}", category=categories[i % len(categories)], price=i % 100)
            for i in range(count)
        ],
        batch_size=2000,
    )
    spec = article_spec()
    vectors = rng.standard_normal((count, spec.dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_vectors(
        spec.content_type_id,
        "hashing",
        spec.identity,
        [VectorRow(str(a.pk), v, "x") for a, v in zip(articles, vectors, strict=True)],
    )
    # Building the HNSW index over existing rows is several times faster than inserting into
    # it row by row; deferred foreign-key checks must run first (CREATE INDEX refuses to run
    # with pending trigger events).
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    ensure_index(spec)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embrec_embedding")
        cursor.execute("ANALYZE testapp_article")
    return list(zip(articles, vectors, strict=True))


def make_user(username: str, *, tenant: str = "", staff: bool = False):
    return get_user_model().objects.create_user(
        username=username, password="pw", first_name=tenant, is_staff=staff
    )
