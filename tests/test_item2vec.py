"""item2vec and hybrid encoders: planted co-consumption groups, training through the Celery task,
storage in pgvector and similar() on the behavioural and hybrid vectors."""

import random
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

import embrec
from embrec import tasks
from embrec.encoders import get_encoder
from embrec.encoders.hybrid import HybridEncoder, combine
from embrec.encoders.item2vec import Item2VecEncoder, dependent_aliases
from embrec.models import Embedding, Interaction, OutboxEntry
from embrec.registry import registry
from embrec.switching import drain_and_switch
from embrec.versions import live_identity
from tests.testapp.models import Article

GROUPS = ["red", "green", "blue"]


def planted_sequences(seed=11, groups=5, per_group=10, users=300, per_user=8, noise=0.05):
    rng = random.Random(seed)
    sequences = []
    for _ in range(users):
        g = rng.randrange(groups)
        seq = [f"{g}-{i}" for i in rng.sample(range(per_group), per_user)]
        if rng.random() < noise:  # an occasional item from another group
            seq.insert(rng.randrange(len(seq)), f"{(g + 1) % groups}-{rng.randrange(per_group)}")
        sequences.append(seq)
    return sequences


def test_item2vec_neighbours_recover_planted_groups():
    encoder = Item2VecEncoder("planted", vector_size=16, epochs=15, window=5, workers=1)
    tokens, vectors = encoder.fit(planted_sequences())
    assert len(tokens) == 50
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    group = np.array([t.split("-")[0] for t in tokens])
    precision = []
    for row in range(len(tokens)):
        nearest = np.argsort(-sims[row])[:5]
        precision.append(np.mean(group[nearest] == group[row]))
    assert np.mean(precision) >= 0.95, np.mean(precision)
    # Reproducible: the same data and seed give the same vectors.
    tokens2, vectors2 = encoder.fit(planted_sequences())
    assert tokens2 == tokens
    assert np.allclose(vectors2, vectors)


def test_combine_falls_back_to_the_parts_that_exist():
    a = [np.array([3.0, 4.0]), None, None]
    b = [np.array([0.0, 2.0, 0.0]), np.array([1.0, 0.0, 0.0]), None]
    out = combine([a, b], [1.0, 0.5], [2, 3], "concat")
    assert np.allclose(out[0], np.array([0.6, 0.8, 0.0, 0.5, 0.0]) / np.sqrt(1.25))
    assert np.allclose(out[1], [0, 0, 1, 0, 0])  # content only: a new item still has a vector
    assert out[2] is None
    summed = combine([[np.array([1.0, 0.0])], [np.array([0.0, 3.0])]], [1.0, 1.0], [2, 2], "sum")
    assert np.allclose(summed[0], np.array([1.0, 1.0]) / np.sqrt(2))


# ----------------------------------------------------------------------------- through the DB


@pytest.fixture
def behavioural(settings, tmp_path, monkeypatch):
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["item2vec"] = {
        "CLASS": "embrec.encoders.item2vec.Item2VecEncoder",
        "OPTIONS": {
            "model_dir": str(tmp_path / "models"),
            "vector_size": 16,
            "epochs": 40,
            "workers": 1,
        },
    }
    encoders["mix"] = {
        "CLASS": "embrec.encoders.hybrid.HybridEncoder",
        "OPTIONS": {"parts": [{"encoder": "item2vec"}, {"encoder": "hashing", "weight": 0.5}]},
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders, "AUTO_KICK": False}
    monkeypatch.setattr(registry.get(Article), "encoders", ["hashing", "item2vec", "mix"])
    return tmp_path / "models"


def make_articles():
    articles = {}
    for g in GROUPS:
        articles[g] = [
            Article.objects.create(title=f"{g} story {i}", body=f"{g} words {i}") for i in range(6)
        ]
    new = Article.objects.create(title="red story brand new", body="red words")
    return articles, new


def consume(users, groups_articles, start, seed=3):
    rng = random.Random(seed)
    ct = ContentType.objects.get_for_model(Article)
    rows = []
    for n, user in enumerate(users):
        items = list(groups_articles[GROUPS[n % len(GROUPS)]])
        rng.shuffle(items)
        for t, article in enumerate(items):
            rows.append(
                Interaction(
                    user=user,
                    content_type=ct,
                    object_pk=str(article.pk),
                    kind="view",
                    weight=1.0,
                    created_at=start + timedelta(minutes=n * 10 + t),
                )
            )
    Interaction.objects.bulk_create(rows)


def vectors_of(alias):
    """{pk: identity} of the vectors queries read (the live version's)."""
    ct = ContentType.objects.get_for_model(Article)
    rows = Embedding.objects.filter(content_type=ct, encoder=alias)
    if live_identity(alias):
        rows = rows.filter(identity=live_identity(alias))
    return dict(rows.values_list("object_pk", "identity"))


@pytest.mark.django_db
def test_training_task_stores_behavioural_vectors_used_by_similar(behavioural):
    User = get_user_model()
    articles, new = make_articles()
    users = [User.objects.create(username=f"i2v{n}") for n in range(45)]
    consume(users, articles, timezone.now() - timedelta(days=3))
    drain_and_switch()
    # Untrained: no behavioural vectors, and no failures either.
    assert vectors_of("item2vec") == {}
    assert len(vectors_of("mix")) == 19  # content part only, for now
    assert not OutboxEntry.objects.filter(state=OutboxEntry.FAILED).exists()

    summary = tasks.train_item2vec.apply(args=["item2vec"]).get()
    assert summary["revision"] != "untrained"
    assert summary["items"] == 18
    assert summary["queued"] == 2 * 19  # item2vec and the hybrid that includes it
    assert (behavioural / "item2vec" / "meta.json").exists()
    drain_and_switch()

    identity = get_encoder("item2vec").identity.as_string()
    stored = vectors_of("item2vec")
    assert set(stored) == {str(a.pk) for g in GROUPS for a in articles[g]}  # not the new one
    assert set(stored.values()) == {identity}
    assert not OutboxEntry.objects.exists()

    # Neighbours by behaviour are the articles consumed by the same users.
    for g in GROUPS:
        for article in articles[g][:2]:
            results = embrec.similar(article, encoder="item2vec", limit=5)
            same = {str(a.pk) for a in articles[g]} - {str(article.pk)}
            assert {str(r.object.pk) for r in results} == same

    # The hybrid covers the new article through its content part.
    mix = vectors_of("mix")
    assert str(new.pk) in mix and len(mix) == 19
    assert embrec.similar(new, encoder="mix", limit=3)
    red_neighbours = embrec.similar(articles["red"][0], encoder="mix", limit=5)
    assert {r.object.pk for r in red_neighbours} <= {a.pk for a in articles["red"]} | {new.pk}

    # Same interactions, same revision: nothing to do.
    again = tasks.train_item2vec.apply(args=["item2vec"]).get()
    assert again["revision"] == summary["revision"] and again["queued"] == 0

    # Personal recommendations from behavioural vectors: a reader of two green articles gets
    # the other green ones.
    probe = User.objects.create(username="probe")
    for article in articles["green"][:2]:
        embrec.record_interaction(probe, article, "view")
    personal = embrec.recommend(probe, model=Article, encoder="item2vec", limit=4)
    assert {r.object.pk for r in personal} == {a.pk for a in articles["green"][2:]}
    assert {r.source for r in personal} == {"personal"}

    # New interactions (someone reads the new article) retrain to a new revision: every stored
    # vector of the alias becomes stale and is recomputed.
    late = [User.objects.create(username=f"late{n}") for n in range(3)]
    consume(late, {**articles, "red": [*articles["red"][:3], new]}, timezone.now())
    third = tasks.train_item2vec.apply(args=["item2vec"]).get()
    assert third["revision"] != summary["revision"]
    assert get_encoder("item2vec").identity.as_string() != identity
    drain_and_switch()
    stored = vectors_of("item2vec")
    assert str(new.pk) in stored
    assert set(stored.values()) == {get_encoder("item2vec").identity.as_string()}


@pytest.mark.django_db
def test_train_command_and_configuration_errors(behavioural, settings):
    from io import StringIO

    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not trained on interactions"):
        call_command("embrec_train", "hashing")
    with pytest.raises(CommandError, match="two or more interactions"):
        call_command("embrec_train", "item2vec", stdout=StringIO())
    assert dependent_aliases("item2vec") == {"item2vec", "mix"}
    with pytest.raises(ImproperlyConfigured, match="unknown item2vec option"):
        Item2VecEncoder("x", windw=3)
    with pytest.raises(ImproperlyConfigured, match="cannot include itself"):
        HybridEncoder("loop", parts=[{"encoder": "loop"}])
    with pytest.raises(ImproperlyConfigured, match="cannot encode text"):
        get_encoder("item2vec").encode(["some text"])
