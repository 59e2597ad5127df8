"""The read path's Python API on real PostgreSQL + pgvector with real (hashing) vectors."""

import re
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import embrec
from embrec import popularity, queries
from embrec.exceptions import NotEmbedded, QueryError
from embrec.interactions import record_interaction
from embrec.models import Embedding
from embrec.read import options, retrieval
from embrec.read.scope import Exclusions
from tests.readpath import (
    article_spec,
    brute_force,
    load_random_vectors,
    make_catalog,
    make_user,
    text_vector,
)
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


@pytest.fixture
def exact_search(settings):
    # ef_search above the catalog size makes HNSW exact, so numpy and pgvector must agree.
    settings.EMBREC = {**settings.EMBREC, "EF_SEARCH": 400}


def assert_same_ranking(got, expected, limit):
    """Same scores in the same order; pks must match wherever scores are not tied."""
    exp = expected[:limit]
    assert len(got) == limit
    np.testing.assert_allclose([s for _, s in got], [s for _, s in exp], atol=1e-5)
    tied = {
        pk
        for i, (pk, s) in enumerate(expected)
        for j in (i - 1, i + 1)
        if 0 <= j < len(expected) and abs(expected[j][1] - s) < 1e-5
    }
    for (gpk, _), (epk, _) in zip(got, exp, strict=True):
        if epk not in tied:
            assert gpk == epk


def test_pgvector_supports_iterative_scans():
    assert retrieval.pgvector_version() >= (0, 8)


def test_similar_matches_brute_force(exact_search):
    articles = make_catalog()
    for source in articles[::17]:
        results = embrec.similar(source, limit=10)
        assert all(r.source == "similar" for r in results)
        others = [a for a in articles if a.pk != source.pk]
        expected = brute_force(text_vector(registry_text(source)), others)
        assert_same_ranking([(r.pk, r.score) for r in results], expected, 10)
        assert str(source.pk) not in {r.pk for r in results}


def registry_text(obj):
    return embrec.registry.get(obj).get_text(obj)


def test_search_matches_brute_force_and_ranks_topic_first(exact_search):
    articles = make_catalog()
    results = embrec.search("robot starship galaxy laser", model=Article, limit=15)
    expected = brute_force(text_vector("robot starship galaxy laser"), articles)
    assert_same_ranking([(r.pk, r.score) for r in results], expected, 15)
    # 64 hashed dimensions collide a little; the topic still dominates the top of the list.
    assert {r.object.category for r in results[:5]} == {"scifi"}
    assert sum(r.object.category == "scifi" for r in results[:10]) >= 8
    assert all(r.source == "search" for r in results)


def test_search_rejects_bad_text():
    make_catalog(per_category=2)
    with pytest.raises(QueryError) as empty:
        embrec.search("   ", model=Article)
    assert empty.value.code == "empty_query"
    with pytest.raises(QueryError) as long:
        embrec.search("x" * 513, model=Article)
    assert long.value.code == "query_too_long"
    with pytest.raises(QueryError):
        embrec.search("!!! ???", model=Article)  # no word the encoder can hash


@pytest.mark.parametrize("bad", ["abc", 0, -3, 101, "1.5", True])
def test_limit_is_validated(bad):
    with pytest.raises(QueryError) as exc:
        options.clean_limit(bad)
    assert exc.value.field == "limit"


def test_limit_default_and_max(settings):
    assert options.clean_limit(None) == 10
    assert options.clean_limit("100") == 100
    settings.EMBREC = {**settings.EMBREC, "MAX_LIMIT": 5}
    with pytest.raises(QueryError):
        options.clean_limit(6)


def test_filters_are_whitelisted_and_converted():
    rec = embrec.registry.get(Article)
    q = options.parse_filters(rec, {"category": "scifi", "price__gte": "10", "price__lte": 50})
    assert Article.objects.filter(q).query.where
    for bad, code in [
        ({"title": "x"}, "unknown_filter"),
        ({"published": "false"}, "unknown_filter"),
        ({"price__regex": ".*"}, "unknown_filter"),
        ({"price__gte": "cheap"}, "invalid_filter"),
        ({"category; DROP TABLE x": "1"}, "unknown_filter"),
    ]:
        with pytest.raises(QueryError) as exc:
            options.parse_filters(rec, bad)
        assert exc.value.code == code


def test_filters_restrict_similar_and_search(exact_search):
    articles = make_catalog()
    source = articles[0]
    filters = {"category__in": "romance,cooking", "price__gte": 20, "price__lte": 80}
    results = embrec.similar(source, limit=10, filters=filters)
    allowed = [
        a
        for a in articles
        if a.category in {"romance", "cooking"} and 20 <= a.price <= 80 and a.pk != source.pk
    ]
    assert len(results) == min(10, len(allowed))
    expected = brute_force(text_vector(registry_text(source)), allowed)
    assert_same_ranking([(r.pk, r.score) for r in results], expected, len(results))
    found = embrec.search("pasta", model=Article, filters={"category": "sports"}, limit=5)
    assert found and {r.object.category for r in found} == {"sports"}


def test_not_embedded_says_why():
    article = Article.objects.create(title="fresh", body="not embedded yet")
    with pytest.raises(NotEmbedded) as exc:
        embrec.similar(article)
    assert exc.value.state == "pending"  # the save wrote an outbox row


def test_hidden_items_never_returned(exact_search):
    articles = make_catalog(per_category=10)
    scifi = [a for a in articles if a.category == "scifi"]
    # Embedded, then hidden without signals: the vector is still there.
    Article.objects.filter(pk=scifi[1].pk).update(published=False)
    Article.objects.filter(pk=scifi[2].pk).update(tenant="acme")
    hidden = {str(scifi[1].pk), str(scifi[2].pk)}
    user = make_user("u")
    record_interaction(user, scifi[3], "like")
    record_interaction(make_user("v"), scifi[1], "purchase")  # popular but hidden
    for results in (
        embrec.similar(scifi[0], limit=39),
        embrec.search("robot galaxy", model=Article, limit=39),
        embrec.recommend(user, model=Article, limit=38),
        queries.popular(Article, limit=39),
    ):
        assert len(results) >= 37
        assert not hidden & {r.pk for r in results}


def test_hnsw_index_serves_filtered_queries_and_fills_limit(settings):
    """On a planner-sized table (6000 rows) the HNSW index orders every query shape we run, and
    iterative scans keep filtered, excluded queries full."""
    rows = load_random_vectors(6000)
    spec = article_spec()
    rec = embrec.registry.get(Article)
    ct = ContentType.objects.get_for_model(Article)
    user = make_user("explain")
    record_interaction(user, rows[0][0], "view")
    visible = rec.get_visible_queryset(None).filter(
        options.parse_filters(rec, {"category": "a", "price__lte": 50})
    )
    exclusions = Exclusions(pks=["1", "2"], user_id=user.pk, content_type_id=ct.id, seen=True)
    query = np.ones(spec.dimensions, dtype=np.float32)
    for kwargs in ({}, {"visible": visible}, {"visible": visible, "exclusions": exclusions}):
        plan = retrieval.explain(spec, query, 10, **kwargs)
        assert f"Index Scan using {spec.name}" in plan, plan
        assert "Seq Scan on embrec_embedding" not in plan, plan
        assert "Sort" not in plan.split("Index Scan")[0], plan  # the index gives the order
    analyzed = retrieval.explain(
        spec, query, 10, visible=visible, exclusions=exclusions, analyze=True
    )
    assert f"Index Scan using {spec.name}" in analyzed
    # PostgreSQL 18 prints "rows=10.00", older versions "rows=10".
    assert re.search(r"rows=10(\.00)?\b", analyzed.splitlines()[0]), analyzed

    # Exclude the 50 nearest rows of any category; keep only category "a" (a quarter).
    rng = np.random.default_rng(5)
    query = rng.standard_normal(spec.dimensions).astype(np.float32)
    everything = brute_force_vectors(query, rows)
    excluded = [pk for pk, _ in everything[:50]]
    only_a = Article.objects.filter(category="a")
    in_a = {str(a.pk) for a, _ in rows if a.category == "a"}
    expected = [pk for pk, _ in everything if pk not in excluded and pk in in_a][:20]
    got = retrieval.nearest(
        spec, query, 20, exclusions=Exclusions(pks=excluded), visible=only_a, ef_search=20
    )
    assert len(got) == 20
    assert {c.pk for c in got} <= in_a
    assert not {c.pk for c in got} & set(excluded)
    recall = len({c.pk for c in got} & set(expected)) / 20
    assert recall >= 0.8, recall
    # Without iterative scans the same query comes back short: that is what they fix.
    settings.EMBREC = {**settings.EMBREC, "ITERATIVE_SCAN": "off"}
    short = retrieval.nearest(
        spec, query, 20, exclusions=Exclusions(pks=excluded), visible=only_a, ef_search=20
    )
    assert len(short) < 20


def test_mmr_diversifies_results(exact_search):
    make_catalog()
    vector = text_vector("robot kiss recipe goal")
    plain = embrec.search("robot kiss recipe goal", model=Article, limit=8)
    same = embrec.search("robot kiss recipe goal", model=Article, limit=8, mmr_lambda=1.0)
    diverse = embrec.search("robot kiss recipe goal", model=Article, limit=8, mmr_lambda=0.2)
    assert [r.pk for r in same] == [r.pk for r in plain]
    assert [r.pk for r in diverse] != [r.pk for r in plain]

    def mean_pairwise(results):
        vs = np.stack([text_vector(registry_text(r.object)) for r in results])
        sims = vs @ vs.T
        return (sims.sum() - np.trace(sims)) / (len(results) * (len(results) - 1))

    assert mean_pairwise(diverse) < mean_pairwise(plain)
    assert vector is not None


def test_popularity_and_recency_blend(exact_search):
    articles = make_catalog()
    plain = embrec.search("robot galaxy", model=Article, limit=10)
    last = plain[-1].object
    fans = [make_user(f"fan{i}") for i in range(3)]
    for fan in fans:
        record_interaction(fan, last, "purchase")
    blended = embrec.search("robot galaxy", model=Article, limit=10, popularity=0.5)
    assert blended[0].pk == str(last.pk)
    assert blended[0].score > blended[0].similarity

    # Age every vector but one by a year: a recency blend lifts the fresh one.
    ct = ContentType.objects.get_for_model(Article)
    Embedding.objects.filter(content_type=ct).exclude(object_pk=str(last.pk)).update(
        created_at=timezone.now() - timedelta(days=365)
    )
    recent = embrec.search("robot galaxy", model=Article, limit=10, recency=0.5)
    assert recent[0].pk == str(last.pk)
    with pytest.raises(QueryError):
        embrec.search("robot", model=Article, popularity=0.7, recency=0.6)
    with pytest.raises(QueryError):
        embrec.search("robot", model=Article, mmr_lambda=1.5)
    assert len(articles) == 80


def test_popular_fallback_labels_sources():
    articles = make_catalog(per_category=3)
    user = make_user("p")
    record_interaction(user, articles[4], "like")
    record_interaction(make_user("q"), articles[4], "view")
    record_interaction(make_user("r"), articles[7], "view")
    results = queries.popular(Article, limit=5)
    assert [r.pk for r in results[:2]] == [str(articles[4].pk), str(articles[7].pk)]
    assert [r.source for r in results] == ["popular", "popular", "recent", "recent", "recent"]
    assert results[0].score == pytest.approx(1.0)


# -- helpers for the large random table --------------------------------------------------


def brute_force_vectors(query, rows):
    matrix = np.stack([v for _, v in rows]).astype(np.float64)
    q = query.astype(np.float64) / np.linalg.norm(query)
    scores = matrix @ q
    order = np.argsort(-scores)
    return [(str(rows[i][0].pk), float(scores[i])) for i in order]


def test_search_uses_a_text_encoder(settings, monkeypatch):
    make_catalog(per_category=2)
    rec = embrec.registry.get(Article)
    from embrec.encoders import get_encoder

    monkeypatch.setattr(type(get_encoder("hashing")), "uses_text", False)
    with pytest.raises(QueryError) as exc:
        embrec.search("robot", model=Article)
    assert exc.value.code == "search_unavailable"
    with pytest.raises(QueryError) as exc:
        embrec.search("robot", model=Article, encoder="hashing")
    assert exc.value.code == "unknown_encoder"
    with pytest.raises(QueryError):
        embrec.search("robot", model=Article, encoder="default")  # not one of its encoders
    assert rec.get_encoders() == ["hashing"]


def test_text_primary_keys_and_their_visibility(exact_search):
    from embrec import indexing
    from tests.testapp.models import Note

    texts = {
        "alpha": "robot galaxy starship",
        "beta": "robot galaxy laser",
        "gamma": "pasta garlic oven",
        "delta": "robot starship orbit",
    }
    Note.objects.bulk_create([Note(slug=slug, text=text) for slug, text in texts.items()])
    indexing.enqueue(Note, list(texts), kick=False)
    indexing.drain()
    ct = ContentType.objects.get_for_model(Note)
    spec = retrieval.index_spec(embrec.registry.get(Note), "hashing", 64)
    assert spec.content_type_id == ct.id
    all_notes = embrec.similar(Note.objects.get(slug="alpha"), limit=3)
    assert [r.pk for r in all_notes][-1] == "gamma"
    restricted = retrieval.nearest(
        spec,
        text_vector("robot galaxy starship"),
        3,
        visible=Note.objects.exclude(slug="beta"),
    )
    assert [c.pk for c in restricted] == ["alpha", "delta", "gamma"]


def test_popularity_counts_distinct_users_and_normalises_by_the_visible_maximum():
    articles = make_catalog(per_category=3)
    heavy, shared, other = articles[0], articles[3], articles[6]
    buyer = make_user("heavy")
    for _ in range(5):
        record_interaction(buyer, heavy, "purchase")  # one user, weight 25
    for n in range(3):
        record_interaction(make_user(f"s{n}"), shared, "view")  # three users, weight 3
    record_interaction(make_user("o"), other, "view")
    record_interaction(make_user("neg"), other, "dislike")  # negative: not popularity
    ct = ContentType.objects.get_for_model(Article)
    assert popularity.popularity_scores(ct.id, [str(a.pk) for a in articles]) == {
        str(heavy.pk): 1.0,
        str(shared.pk): 3.0,
        str(other.pk): 1.0,
    }
    visible = Article.objects.all()
    assert popularity.max_popularity(ct.id, visible) == 3.0
    assert popularity.max_popularity(ct.id, visible.exclude(pk=shared.pk)) == 1.0
    results = queries.popular(Article, limit=3)
    assert [r.pk for r in results[:1]] == [str(shared.pk)]
    assert results[0].score == pytest.approx(1.0)
    assert results[1].score == pytest.approx(np.log1p(1) / np.log1p(3))


def test_blend_reaches_popular_items_outside_the_nearest_pool(settings, exact_search):
    settings.EMBREC = {
        **settings.EMBREC,
        "EF_SEARCH": 400,
        "RERANK_POOL_FACTOR": 1,
        "RERANK_POPULAR_CANDIDATES": 5,
    }
    make_catalog()
    query = "robot galaxy starship"
    plain = embrec.search(query, model=Article, limit=80)
    far = [r.object for r in plain[-6:]]  # the least similar: never in a pool of 3
    hit, hidden, disliked, filtered = far[0], far[1], far[2], far[3]
    hidden.published = False
    hidden.save()
    fan = make_user("fan")
    record_interaction(fan, disliked, "dislike")
    for n in range(6):
        user = make_user(f"p{n}")
        for item in (hit, hidden, disliked, filtered):
            record_interaction(user, item, "purchase")
    Article.objects.filter(pk=filtered.pk).update(price=999)

    blended = embrec.search(query, model=Article, limit=3, popularity=0.9, user=fan)
    pks = [r.pk for r in blended]
    assert pks[0] == str(hit.pk)  # far from the query, but popular enough to win
    assert blended[0].similarity == pytest.approx(plain[-6].similarity, abs=1e-5)
    # The extra candidates keep visibility, exclusions and filters.
    assert str(hidden.pk) not in pks and str(disliked.pk) not in pks
    cheap = embrec.search(
        query, model=Article, limit=3, popularity=0.9, user=fan, filters={"price__lt": 500}
    )
    assert str(filtered.pk) not in {r.pk for r in cheap}
    assert str(hit.pk) == cheap[0].pk
    # Without the popular candidates the blend only re-orders the 3 nearest.
    settings.EMBREC = {**settings.EMBREC, "RERANK_POPULAR_CANDIDATES": 0}
    nearest_only = embrec.search(query, model=Article, limit=3, popularity=0.9, user=fan)
    assert {r.pk for r in nearest_only} == {r.pk for r in plain[:3]}


def test_popularity_follows_new_interactions_and_ranks_visible_objects_in_one_query():
    articles = make_catalog(per_category=3)
    ct = ContentType.objects.get_for_model(Article)
    for n, article in enumerate(articles[:4]):
        for u in range(n + 1):
            record_interaction(make_user(f"p{n}-{u}"), article, "view")
    visible = Article.objects.all()
    first = popularity.popularity_ranking(ct.id, visible, Exclusions(), 3)
    assert first.top[0] == (str(articles[3].pk), 4.0)

    # A new interaction is counted at once (the counts are written with it).
    for u in range(5):
        record_interaction(make_user(f"late{u}"), articles[8], "like")
    assert popularity.popularity_ranking(ct.id, visible, Exclusions(), 1).top == [
        (str(articles[8].pk), 5.0)
    ]

    # Visibility, exclusions and the skipped candidates are applied in the same statement.
    hidden = Article.objects.exclude(pk=articles[8].pk)
    with CaptureQueriesContext(connection) as captured:
        ranking = popularity.popularity_ranking(
            ct.id, hidden, Exclusions(pks=[str(articles[2].pk)]), 3, skip=[str(articles[1].pk)]
        )
    assert len(captured) == 1
    assert ranking.top == [(str(articles[3].pk), 4.0), (str(articles[0].pk), 1.0)]
    assert ranking.maximum == 4.0
    assert ranking.scores[str(articles[1].pk)] == 2.0
