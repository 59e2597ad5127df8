"""The co-occurrence encoder (item-kNN's cosine as stored vectors) and the popularity prior that
lets a new item into a popularity-blended personal list."""

from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone
from scipy import sparse

import embrec
from embrec import indexing
from embrec.encoders import get_encoder
from embrec.encoders.als import interaction_matrix
from embrec.encoders.cooccurrence import CooccurrenceEncoder, cooccurrence_vectors
from embrec.encoders.trained import item_token
from embrec.popularity import forget_popularity
from embrec.registry import registry
from embrec.scoring import normalized_popularity, popularity_prior, smoothed_popularity
from tests.test_trained_encoders import consume, make_articles, stored
from tests.testapp.models import Article


@pytest.fixture
def cooc(settings, tmp_path, monkeypatch):
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["cooc"] = {
        "CLASS": "embrec.encoders.cooccurrence.CooccurrenceEncoder",
        "OPTIONS": {"model_dir": str(tmp_path / "models"), "dimensions": 64},
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders, "AUTO_KICK": False}
    monkeypatch.setattr(registry.get(Article), "encoders", ["hashing", "cooc"])
    forget_popularity()
    yield
    forget_popularity()


def knn_cosines(matrix: sparse.csr_matrix) -> np.ndarray:
    x = matrix.toarray().T.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


@pytest.mark.django_db
def test_cooccurrence_similar_lists_are_item_knn(cooc, monkeypatch):
    User = get_user_model()
    articles = make_articles()
    users = [User.objects.create(username=f"co{n}") for n in range(30)]
    consume(users, articles, timezone.now() - timedelta(days=2), per_user=4)
    # Some readers cross groups, so lists mix groups and cosines differ.
    ct = ContentType.objects.get_for_model(Article)
    for n, user in enumerate(users[:12]):
        embrec.record_interaction(user, articles["blue"][n % 6], "view")
    call_command("embrec_train", "cooc", stdout=StringIO())
    indexing.drain()
    encoder = get_encoder("cooc")
    vectors = stored("cooc")
    assert len(vectors) == 18 and encoder.dimensions == 64
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-4 for v in vectors.values())

    histories, _ = encoder.histories_from_database([ct.id])
    matrix, tokens = interaction_matrix(histories)
    cosine = knn_cosines(matrix)
    column = {t: n for n, t in enumerate(tokens)}
    # Fewer users than dimensions: the stored cosines are item-kNN's exactly, so every similar
    # list is item-kNN's top list (same items up to ties, same similarities in the same order).
    for group in articles.values():
        for article in group:
            row = column[item_token(ct.id, article.pk)]
            results = embrec.similar(article, encoder="cooc", limit=8)
            got = [r.similarity for r in results]
            truth = np.delete(cosine[row], row)
            np.testing.assert_allclose(got, np.sort(truth)[::-1][:8], atol=1e-4)
            for r in results:
                assert (
                    abs(r.similarity - cosine[row, column[item_token(ct.id, r.object.pk)]]) < 1e-4
                )

    # A registration may serve similar items from another encoder than its first.
    rec = registry.get(Article)
    article = articles["red"][0]
    assert rec.get_encoders()[0] == "hashing"
    by_hashing = [r.object.pk for r in embrec.similar(article, limit=8)]
    by_cooc = [r.object.pk for r in embrec.similar(article, encoder="cooc", limit=8)]
    assert by_hashing != by_cooc
    monkeypatch.setattr(rec, "similar_encoder", "cooc", raising=False)
    assert [r.object.pk for r in embrec.similar(article, limit=8)] == by_cooc
    assert [r.object.pk for r in embrec.similar(article, encoder="hashing", limit=8)] == by_hashing
    monkeypatch.setattr(rec, "similar_encoder", "unknown", raising=False)  # not used: the first
    assert [r.object.pk for r in embrec.similar(article, limit=8)] == by_hashing


def test_truncated_vectors_approximate_the_cosine_and_options_are_checked():
    rng = np.random.default_rng(3)
    matrix = sparse.csr_matrix((rng.random((200, 60)) < 0.15).astype(np.float32))
    matrix = matrix[:, np.asarray(matrix.sum(axis=0)).ravel() > 0]
    cosine = knn_cosines(matrix)
    full = cooccurrence_vectors(matrix, 80)
    np.testing.assert_allclose(full @ full.T, cosine, atol=1e-5)
    # Truncated: the best rank-d approximation, so lists agree with item-kNN's for most items.
    small = cooccurrence_vectors(matrix, 30)
    assert small.shape[1] == 30
    agree = np.mean(
        [
            np.argsort(-np.delete(small @ small[i], i))[0]
            == np.argsort(-np.delete(cosine[i], i))[0]
            for i in range(len(cosine))
        ]
    )
    assert agree > 0.6
    with pytest.raises(ImproperlyConfigured, match="dimensions"):
        CooccurrenceEncoder("x", dimensions=0)
    with pytest.raises(ImproperlyConfigured, match="unknown cooc option"):
        CooccurrenceEncoder("x", factors=3)


# ----------------------------------------------------------------------------- popularity prior


def test_smoothed_popularity_shrinks_little_history_towards_the_prior():
    counts = np.array([0, 1, 4, 10, 10, 10, 100], dtype=float)
    assert popularity_prior(counts, 0.5) == 10.0
    top = 100.0
    plain = normalized_popularity(counts, top)
    smoothed = smoothed_popularity(counts, top, prior=10.0, strength=5.0)
    assert smoothed[0] == pytest.approx(normalized_popularity(10.0, top))  # new item: the prior
    assert smoothed[1] > plain[1]  # one user: mostly the prior
    assert np.allclose(smoothed[3:6], plain[3:6])  # at the prior: unchanged
    assert abs(smoothed[6] - plain[6]) < 0.05 * plain[6]  # well known: nearly its own
    np.testing.assert_allclose(smoothed_popularity(counts, top, 0.0, 5.0), plain)  # off
    assert popularity_prior(np.zeros(3), 0.5) == 0.0


@pytest.mark.django_db
def test_new_item_enters_a_popularity_blended_list_with_the_prior(cooc, settings):
    User = get_user_model()
    articles = make_articles()
    users = [User.objects.create(username=f"pp{n}") for n in range(30)]
    consume(users, articles, timezone.now() - timedelta(days=2))
    new = Article.objects.create(title="crimson fire story new", body="red crimson fire tale")
    indexing.drain()
    probe = User.objects.create(username="probe")
    for article in articles["red"][:3]:
        embrec.record_interaction(probe, article, "view")

    def top(limit=4):
        results = embrec.recommend(
            probe, model=Article, encoder="hashing", popularity=0.6, limit=limit
        )
        assert {r.source for r in results} == {"personal"}
        return [r.object.pk for r in results]

    # Without a prior the new item's popularity is 0: every popular item outranks it.
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_PRIOR": None}
    assert new.pk not in top()
    # With the median as prior it competes on its similarity, ahead of popular off-topic items.
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_PRIOR": 0.5, "POPULARITY_PRIOR_STRENGTH": 5}
    ranked = top()
    assert new.pk in ranked
    assert set(ranked) <= {a.pk for a in articles["red"]} | {new.pk}
