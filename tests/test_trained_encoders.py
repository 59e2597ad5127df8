"""ALS and adaptive hybrid encoders: training from the Interaction table, storage in pgvector,
ALS's own ranking reproduced by the read path, rare and new items placed by their content, and
the evaluation adapters."""

import random
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from scipy import sparse

import embrec
from embrec.encoders import get_encoder
from embrec.encoders.adaptive import (
    UNCERTAINTY_DIMS,
    AdaptiveHybridEncoder,
    blend,
    fit_content_map,
)
from embrec.encoders.als import (
    ALSEncoder,
    exact_item_vectors,
    fold_in,
    interaction_matrix,
    train_factors,
)
from embrec.encoders.item2vec import Item2VecEncoder
from embrec.encoders.trained import dependent_aliases, item_token, trained_aliases
from embrec.evaluation.methods import (
    AdaptiveItemVectors,
    ALSItemVectors,
    EmbeddingMethod,
    FixedItemVectors,
    TrainedItemVectors,
)
from embrec.evaluation.runner import evaluate_method
from embrec.evaluation.split import InteractionLog, Split
from embrec.models import Embedding, Interaction
from embrec.registry import registry
from embrec.switching import drain_and_switch
from embrec.versions import live_identity
from tests.testapp.models import Article

GROUPS = {"red": "crimson fire", "green": "forest leaf", "blue": "ocean wave"}


@pytest.fixture
def trained(settings, tmp_path, monkeypatch):
    encoders = dict(settings.EMBREC["ENCODERS"])
    models = str(tmp_path / "models")
    encoders["als"] = {
        "CLASS": "embrec.encoders.als.ALSEncoder",
        "OPTIONS": {"model_dir": models, "factors": 8, "iterations": 10, "regularization": 0.1},
    }
    encoders["item2vec"] = {
        "CLASS": "embrec.encoders.item2vec.Item2VecEncoder",
        "OPTIONS": {"model_dir": models, "vector_size": 16, "epochs": 40, "min_count": 3},
    }
    encoders["adaptive"] = {
        "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
        "OPTIONS": {
            "behaviour": "item2vec",
            "content": "hashing",
            "shrinkage": 5,
            "min_support": 3,
            "fit_support": 3,
            "ridge": 0.1,
        },
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders, "AUTO_KICK": False}
    monkeypatch.setattr(
        registry.get(Article), "encoders", ["hashing", "als", "item2vec", "adaptive"]
    )
    return tmp_path / "models"


def make_articles(per_group=6):
    articles = {
        g: [
            Article.objects.create(title=f"{words} story {i}", body=f"{g} {words} tale")
            for i in range(per_group)
        ]
        for g, words in GROUPS.items()
    }
    return articles


def consume(users, articles, start, seed=5, per_user=None):
    rng = random.Random(seed)
    ct = ContentType.objects.get_for_model(Article)
    rows = []
    names = list(GROUPS)
    for n, user in enumerate(users):
        items = list(articles[names[n % len(names)]])
        rng.shuffle(items)
        for t, article in enumerate(items[:per_user]):
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


def stored(alias):
    """{pk: vector} of the vectors queries read (the live version's)."""
    ct = ContentType.objects.get_for_model(Article)
    rows = Embedding.objects.filter(content_type=ct, encoder=alias)
    if live_identity(alias):
        rows = rows.filter(identity=live_identity(alias))
    return {
        pk: np.asarray(v, dtype=np.float32) for pk, v in rows.values_list("object_pk", "vector")
    }


# ----------------------------------------------------------------------------- ALS


@pytest.mark.django_db
def test_als_encoder_ranking_is_implicits_own(trained):
    User = get_user_model()
    articles = make_articles()
    users = [User.objects.create(username=f"als{n}") for n in range(30)]
    consume(users, articles, timezone.now() - timedelta(days=2), per_user=4)
    out = StringIO()
    call_command("embrec_train", "als", stdout=out)
    assert "als: revision" in out.getvalue()
    drain_and_switch()
    encoder = get_encoder("als")
    vectors = stored("als")
    assert len(vectors) == 18
    assert encoder.dimensions == 9  # 8 factors + the exact-ranking dimension
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-4 for v in vectors.values())

    # The same data and parameters through implicit directly give the same factors.
    ct = ContentType.objects.get_for_model(Article)
    histories, _ = encoder.histories_from_database([ct.id])
    matrix, tokens = interaction_matrix(histories)
    model = train_factors(matrix, encoder.params)
    row = {t: n for n, t in enumerate(encoder.model_arrays()["keys"])}
    assert np.allclose(
        np.asarray(model.item_factors), encoder.model_arrays()["factors"][[row[t] for t in tokens]]
    )

    # A new user, folded in: embrec's top 6 (pgvector cosine on the stored vectors) is
    # implicit's own recommend(..., recalculate_user=True).
    probe = User.objects.create(username="probe")
    mine = [articles["green"][0], articles["green"][1], articles["red"][0]]
    for article in mine:
        embrec.record_interaction(probe, article, "view")
    results = embrec.recommend(probe, model=Article, encoder="als", popularity=0.0, limit=6)
    assert {r.source for r in results} == {"personal"}
    column = {t: n for n, t in enumerate(tokens)}
    liked = sparse.csr_matrix(
        (np.ones(3, np.float32), ([0, 0, 0], [column[item_token(ct.id, a.pk)] for a in mine])),
        shape=(1, len(tokens)),
    )
    ids, _ = model.recommend(0, liked, N=6, recalculate_user=True, filter_already_liked_items=True)
    expected = [tokens[i].split(":")[1] for i in ids]
    assert [str(r.object.pk) for r in results] == expected

    # The stored user vector is the folded-in factor in its exact form.
    factor = encoder.fold_in_tokens({item_token(ct.id, a.pk): 1.0 for a in mine})
    np.testing.assert_allclose(
        np.asarray(model.recalculate_user(0, liked)).ravel() / np.linalg.norm(factor),
        factor / np.linalg.norm(factor),
        atol=1e-4,
    )


def test_exact_vectors_turn_dot_products_into_cosines():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(50, 6)).astype(np.float32) * rng.uniform(0.1, 3, (50, 1))
    items, _ = exact_item_vectors(factors)
    assert np.allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    user = rng.normal(size=6)
    query = np.append(user / np.linalg.norm(user), 0.0)
    assert list(np.argsort(-(items @ query))) == list(np.argsort(-(factors @ user)))


def test_als_options_are_checked():
    with pytest.raises(ImproperlyConfigured, match="similarity"):
        ALSEncoder("x", similarity="dot")
    with pytest.raises(ImproperlyConfigured, match="unknown als option"):
        ALSEncoder("x", factor=3)
    with pytest.raises(ImproperlyConfigured, match="behaviour"):
        AdaptiveHybridEncoder("x", content="hashing")


# ----------------------------------------------------------------------------- adaptive


@pytest.mark.django_db
def test_adaptive_hybrid_places_rare_and_new_items_by_content(trained):
    User = get_user_model()
    articles = make_articles()
    users = [User.objects.create(username=f"ad{n}") for n in range(45)]
    consume(users, articles, timezone.now() - timedelta(days=3))
    # A rare red article: one reader.
    rare = Article.objects.create(title="crimson fire story rare", body="red crimson fire tale")
    ct = ContentType.objects.get_for_model(Article)
    Interaction.objects.create(
        user=users[0], content_type=ct, object_pk=str(rare.pk), kind="view", weight=1.0,
        created_at=timezone.now() - timedelta(days=1),
    )  # fmt: skip
    assert "adaptive" in dependent_aliases("item2vec")
    assert trained_aliases() == ["als", "item2vec"]
    call_command("embrec_train", "item2vec", stdout=StringIO())
    new = Article.objects.create(title="crimson fire story new", body="red crimson fire tale")
    drain_and_switch()

    item2vec, adaptive = stored("item2vec"), stored("adaptive")
    assert str(rare.pk) not in item2vec  # below min_count: no behavioural vector of its own
    assert str(new.pk) not in item2vec
    assert str(rare.pk) in adaptive and str(new.pk) in adaptive
    assert len(adaptive) == 20

    # The rare item's vector is its content mapped into the behavioural space...
    encoder = get_encoder("adaptive")
    content_map = encoder.content_map(registry.get(Article))
    content = get_encoder("hashing").encode([registry.get(Article).get_text(rare)])
    np.testing.assert_allclose(adaptive[str(rare.pk)], content_map.apply(content)[0], atol=1e-4)
    # ...which lies among the red articles' (behavioural) vectors.
    reds = np.stack([adaptive[str(a.pk)] for a in articles["red"]])
    others = np.stack([adaptive[str(a.pk)] for g in ("green", "blue") for a in articles[g]])
    assert (reds @ adaptive[str(rare.pk)]).mean() > (others @ adaptive[str(rare.pk)]).mean() + 0.3

    # A new item with no interactions ranks in a red reader's recommendations and similar lists.
    probe = User.objects.create(username="probe")
    for article in articles["red"][:3]:
        embrec.record_interaction(probe, article, "view")
    personal = embrec.recommend(probe, model=Article, encoder="adaptive", popularity=0.0, limit=5)
    assert new.pk in {r.object.pk for r in personal}
    assert {r.object.pk for r in personal} <= {a.pk for a in articles["red"]} | {new.pk, rare.pk}
    similar = embrec.similar(articles["red"][0], encoder="adaptive", limit=7)
    assert new.pk in {r.object.pk for r in similar}


def test_blend_weights_behaviour_by_support():
    own = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
    mapped = np.array([[0.0, 1.0]] * 4, np.float32)
    vectors, has = blend(
        own, np.array([True, True, True, False]), mapped, np.array([100, 10, 2, 0]),
        shrinkage=10, min_support=5,
    )  # fmt: skip
    assert has.all()
    assert vectors[0][0] > 0.99  # well supported: behaviour
    assert np.allclose(vectors[1], np.array([1.0, 1.0]) / np.sqrt(2))  # n = k: half and half
    assert np.allclose(vectors[2], [0.0, 1.0])  # below min_support: content only
    assert np.allclose(vectors[3], [0.0, 1.0])  # nothing of its own: content only


def test_uncertainty_scales_a_content_only_item_down_in_other_lists():
    rng = np.random.default_rng(3)
    own = l2(rng.normal(size=(6, 5)))
    mapped = l2(rng.normal(size=(6, 5)))
    has_own = np.array([True] * 5 + [False])
    support = np.array([50, 50, 50, 50, 50, 0])
    keys = [f"1:{n}" for n in range(6)]
    plain, _ = blend(own, has_own, mapped, support, shrinkage=0, min_support=1, keys=keys)
    vectors, has = blend(
        own, has_own, mapped, support, shrinkage=0, min_support=1, uncertainty=0.36, keys=keys
    )
    assert has.all() and vectors.shape == (6, 5 + UNCERTAINTY_DIMS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The cold item's cosine with a warm one is scaled by √(1 − 0.36) = 0.8 ...
    np.testing.assert_allclose(vectors[:5] @ vectors[5], 0.8 * (plain[:5] @ plain[5]), atol=1e-5)
    # ... and its own neighbours keep their order.
    assert list(np.argsort(-(vectors[:5] @ vectors[5]))) == list(
        np.argsort(-(plain[:5] @ plain[5]))
    )
    with pytest.raises(ImproperlyConfigured, match="uncertainty"):
        AdaptiveHybridEncoder("x", behaviour="a", content="b", uncertainty=1.5)


def l2(matrix):
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def test_content_map_recovers_a_linear_relation():
    rng = np.random.default_rng(1)
    content = rng.normal(size=(200, 10)).astype(np.float32)
    truth = rng.normal(size=(10, 4))
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)
    w = fit_content_map(content, unit @ truth, ridge=1e-6)
    assert np.allclose(w[:-1], truth, atol=1e-3)


# ----------------------------------------------------------------------------- evaluation


def planted_split(groups=3, per_group=8, users=90, seed=2):
    rng = random.Random(seed)
    records, test_users, test_items = [], [], []
    catalog = [f"{g}-{i}" for g in range(groups) for i in range(per_group)] + ["0-cold"]
    for u in range(users):
        g = u % groups
        items = rng.sample(range(per_group), 5)
        for t, i in enumerate(items):
            records.append((f"u{u}", f"{g}-{i}", 1000 * u + t, 1.0))
    log = InteractionLog.from_records(records, catalog=catalog)
    for u in range(0, users, 3):
        test_users.append(log.users.index(f"u{u}"))
        test_items.append(np.array([catalog.index("0-cold")], np.int32))
    return Split(log, np.array(test_users, np.int32), test_items, 1), catalog


def test_evaluation_adapters_fold_in_als_and_cover_cold_items():
    split, catalog = planted_split()
    encoder = ALSEncoder("als", factors=6, iterations=10, regularization=0.1)
    method = EmbeddingMethod("als", ALSItemVectors(encoder))
    method.fit(split)
    fitted = method.source.fitted
    assert "0-cold" not in fitted.tokens and not method.mask[catalog.index("0-cold")]
    # Scores rank exactly as the folded-in ALS factors' dot products.
    user = int(split.test_users[0])
    histories = [(k, 1.0) for k in {split.train.items[i] for i in split.train.sequences()[user]}]
    row = {t: n for n, t in enumerate(fitted.tokens)}
    x = fold_in(
        fitted.arrays["factors"], fitted.arrays["gram"], [row[k] for k, _ in histories],
        [1.0] * len(histories), 0.1, 1.0,
    )  # fmt: skip
    dots = np.full(len(catalog), -np.inf)
    for token, n in row.items():
        dots[catalog.index(token)] = fitted.arrays["factors"][n] @ x
    scores = method.score(np.array([user]))[0]
    warm = method.mask
    assert list(np.argsort(-scores[warm])) == list(np.argsort(-dots[warm]))

    # The adaptive hybrid gives the cold item a vector from content close to its group.
    content = np.zeros((len(catalog), 3), np.float32)
    for n, key in enumerate(catalog):
        content[n, int(key.split("-")[0])] = 1.0
        content[n] += np.random.default_rng(n).normal(scale=0.05, size=3)
    i2v = TrainedItemVectors(Item2VecEncoder("i2v", vector_size=8, epochs=30))
    source = AdaptiveItemVectors(i2v, FixedItemVectors(content), fit_support=1, min_support=1)
    matrix, mask = source.vectors(split)
    cold = catalog.index("0-cold")
    assert mask[cold] and mask.all()
    sims = matrix[: 3 * 8] @ matrix[cold]
    assert sims[:8].mean() > sims[8:].mean() + 0.3
    # Personal recommendations for group-0 users now include it.
    result = evaluate_method(EmbeddingMethod("adaptive", source), split, k=5)
    assert result.metrics["recall@5"] > 0.5


@pytest.mark.django_db
def test_train_command_rejects_other_encoders(trained):
    with pytest.raises(CommandError, match="not trained on interactions"):
        call_command("embrec_train", "hashing", stdout=StringIO())
    with pytest.raises(CommandError, match="Unknown encoder alias"):
        call_command("embrec_train", "nope", stdout=StringIO())


def test_evaluation_builds_als_and_adaptive_methods_from_settings(settings):
    from embrec.evaluation.site import build_methods

    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["mf"] = {
        "CLASS": "embrec.encoders.als.ALSEncoder",
        "OPTIONS": {"factors": 6, "iterations": 10, "regularization": 0.1},
    }
    encoders["adaptive"] = {
        "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
        "OPTIONS": {"behaviour": "mf", "content": "hashing", "fit_support": 1, "min_support": 1},
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders}
    split, catalog = planted_split()
    groups = ["alpha", "beta", "gamma"]
    texts = [f"{groups[int(key.split('-')[0])]} film {key}" for key in catalog]
    content = FixedItemVectors(get_encoder("hashing").encode(texts), name="hashing")
    # (An alias "als" would name the ALS baseline in method specifications.)
    als, adaptive = build_methods(["mf", "adaptive:last=3"], lambda alias: content, k=5)
    assert isinstance(als.source, ALSItemVectors)
    assert isinstance(adaptive.source, AdaptiveItemVectors)
    # Every held-out item is the cold one: ALS cannot recommend it, the adaptive hybrid can.
    assert evaluate_method(als, split, k=5).metrics["recall@5"] == 0.0
    assert evaluate_method(adaptive, split, k=5).metrics["recall@5"] > 0.5
