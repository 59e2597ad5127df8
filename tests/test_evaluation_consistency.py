"""The evaluation's in-memory scorer ranks exactly as the read path does.

A catalog, users and interactions (dated 1998, with simultaneous events) are stored in
PostgreSQL; for every user, the top 10 of :class:`~embrec.evaluation.methods.EmbeddingMethod`
built with ``deployed=1`` (the site's ``EMBREC`` settings) equals ``embrec.recommend``'s.
"""

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import embrec
from embrec.evaluation.metrics import top_k
from embrec.evaluation.runner import seen_items
from embrec.evaluation.site import build_methods, content_vectors, interactions_from_database
from embrec.evaluation.split import Split
from embrec.interactions import record_interaction
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

K = 10


def populate(articles, n_users=14, seed=3):
    rng = random.Random(seed)
    start = datetime(1998, 3, 1, tzinfo=UTC)
    users = []
    for n in range(n_users):
        user = make_user(f"c{n}")
        users.append(user)
        at = start + timedelta(days=rng.randint(0, 30))
        # A user's taste: mostly one category, some noise; dislikes; repeats; same-second ties.
        home = rng.randrange(4) * 20
        for _ in range(rng.randint(4, 9)):
            pool = articles[home : home + 20] if rng.random() < 0.7 else articles
            item = rng.choice(pool)
            kind = rng.choice(["view", "view", "like", "purchase", "dislike"])
            record_interaction(user, item, kind, at=at)
            if rng.random() < 0.6:
                at += timedelta(hours=rng.randint(1, 72))
    return users


@pytest.mark.parametrize(
    "weighting,prior", [("uniform", None), ("weighted", None), ("uniform", 0.75)]
)
def test_evaluation_scorer_matches_recommend(settings, weighting, prior):
    settings.EMBREC = {
        **settings.EMBREC,
        "EF_SEARCH": 400,  # exact HNSW on this small catalog
        "USER_VECTOR_MAX_INTERACTIONS": 3,
        "USER_VECTOR_WEIGHTING": weighting,
        "USER_VECTOR_HALF_LIFE_DAYS": 2.0,
        "POPULARITY_WINDOW_DAYS": None,
        "RERANK_POOL_FACTOR": 2,
        "RERANK_POPULAR_CANDIDATES": 6,
        "RECOMMEND_POPULARITY": 0.6,
        # With a prior, items nobody liked get the 75th percentile's popularity (both sides).
        "POPULARITY_PRIOR": prior,
        "POPULARITY_PRIOR_STRENGTH": 0.1,
    }
    articles = make_catalog(per_category=20)
    users = populate(articles)
    rec = embrec.registry.get(Article)
    log = interactions_from_database(rec)
    split = Split(
        train=log,
        test_users=np.arange(log.n_users, dtype=np.int32),
        test_items=[np.array([], dtype=np.int32)] * log.n_users,
        holdout=0,
    )
    (method,) = build_methods(
        ["hashing:deployed=1"],
        lambda alias: content_vectors(rec, alias, log.items),
        k=K,
    )
    assert (method.last, method.pool, method.popular_pool) == (3, 2 * K, 6)
    assert method.uniform is (weighting == "uniform")
    assert method.prior == prior
    assert method.popularity == 0.6  # the blend comes from RECOMMEND_POPULARITY too
    method.fit(split)
    scores = method.score(split.test_users)
    ranked = top_k(scores, K, seen_items(split, split.test_users))
    position = {k: n for n, k in enumerate(log.items)}
    personal = exact = 0
    for row, key in enumerate(log.users):
        user = next(u for u in users if str(u.pk) == key)
        results = embrec.recommend(user, model=Article, limit=K, explain=False)
        expected = [log.items[i] for i in ranked[row]]
        got = [r.pk for r in results]
        assert len(got) == K
        for g, e in zip(got, expected, strict=True):
            # Same item, or an exact tie (the read path breaks ties by key as a string, the
            # evaluation by catalog position).
            assert g == e or scores[row, position[g]] == pytest.approx(
                scores[row, position[e]], abs=1e-6
            ), f"user {key}: {got} != {expected}"
        exact += got == expected
        if results[0].source == "personal":
            personal += 1
            np.testing.assert_allclose(
                [r.score for r in results], scores[row, ranked[row]], atol=1e-5
            )
    assert exact >= len(users) - 3
    # Users of 1998 data get personal results, not the popularity fallback.
    assert personal >= len(users) - 2
    if prior is None:
        # The pool restriction mattered: ranking the whole catalog gives other lists.
        method.pool = None
        whole = top_k(method.score(split.test_users), K, seen_items(split, split.test_users))
        assert (whole != ranked).any()
