"""``manage.py embrec_evaluate`` on a small synthetic site, and the intrinsic comparison."""

import json
import random
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from embrec.evaluation import intrinsic
from embrec.models import Interaction
from tests.testapp.models import Article, Note

pytestmark = pytest.mark.django_db

TOPICS = {
    "space": "rocket orbit planet astronaut galaxy",
    "food": "recipe oven garlic pasta sauce",
    "sport": "football goal match team league",
}


def make_site(users=36, seed=4):
    """Articles on three topics; each user reads articles of one topic, in time order."""
    rng = random.Random(seed)
    articles = {
        topic: [
            Article.objects.create(
                title=f"{topic} {i}", body=" ".join(rng.sample(words.split(), 3))
            )
            for i in range(8)
        ]
        for topic, words in TOPICS.items()
    }
    User = get_user_model()
    ct = ContentType.objects.get_for_model(Article)
    start = timezone.now() - timedelta(days=30)
    rows = []
    for n in range(users):
        user = User.objects.create(username=f"reader{n}")
        topic = list(TOPICS)[n % 3]
        for t, article in enumerate(rng.sample(articles[topic], 6)):
            rows.append(
                Interaction(
                    user=user,
                    content_type=ct,
                    object_pk=str(article.pk),
                    kind="view",
                    weight=1.0,
                    created_at=start + timedelta(hours=n * 24 + t),
                )
            )
    Interaction.objects.bulk_create(rows)
    return articles


def test_command_writes_table_json_and_png(tmp_path):
    make_site()
    out, err = StringIO(), StringIO()
    call_command(
        "embrec_evaluate",
        "testapp.article",
        holdout=2,
        validation=1,
        k=5,
        budget=3,
        bootstrap=200,
        protocol=["all"],
        cold_share=0.2,
        coherence_field="title",
        famous=2,
        methods=[
            "random",
            "popularity",
            "item-knn",
            "recent-knn",
            "ease",
            "als",
            "hashing",
            "hashing:last=2,popularity=0.3",
        ],
        json=str(tmp_path / "out" / "results.json"),
        png=str(tmp_path / "out" / "results.png"),
        markdown=str(tmp_path / "out" / "results.md"),
        stdout=out,
        stderr=err,
    )
    text = out.getvalue()
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "### cold-items" in markdown and "| recent-knn |" in markdown
    assert "whole-catalog Recall@5" in markdown and "| similar items |" in markdown
    assert "test: 36 users, 72 held-out pairs; validation: 36 users" in text
    for name in ("random", "popularity", "item-knn", "recent-knn", "ease", "als", "hashing"):
        assert f"| {name} " in text
    assert "| hashing:last=2,popularity=0.3 " in text
    assert "ndcg@5" in text and "next_item_hit@5" in text and "coherence" in text
    assert "Similar items of the most popular items" in text
    assert "evaluating" in err.getvalue()  # the progress bar

    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["model"] == "testapp.article" and payload["k"] == 5
    assert set(payload["protocols"]) == {"leave-last", "global-time", "cold-items"}
    leave_last = payload["protocols"]["leave-last"]
    assert leave_last["stats"]["test"]["evaluated_users"] == 36
    results = {r["name"]: r for r in leave_last["results"]}
    assert len(results) == 8
    for r in results.values():
        assert set(r["metrics"]) == {"ndcg@5", "recall@5", "hit_rate@5", "coverage@5"}
        assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
        # A comparable budget: nothing tries more than 3 configurations.
        assert 1 <= len(r["searched"]) <= 3
    assert len(results["als"]["searched"]) == 3 and len(results["hashing"]["searched"]) == 3
    assert results["hashing:last=2,popularity=0.3"]["chosen"] == {}
    assert results["hashing"]["chosen"] in [s["params"] for s in results["hashing"]["searched"]]
    # Readers stay on their topic: collaborative filtering and topic words beat chance.
    metrics = {name: r["metrics"] for name, r in results.items()}
    assert metrics["item-knn"]["hit_rate@5"] > metrics["random"]["hit_rate@5"]
    assert metrics["hashing"]["ndcg@5"] > metrics["random"]["ndcg@5"]
    intervals = leave_last["intervals"]
    assert intervals["reference"] in {"popularity", "item-knn", "recent-knn", "ease", "als"}
    assert set(intervals["methods"]) == {"hashing", "hashing:last=2,popularity=0.3"}
    assert set(leave_last["similar"]) >= {"item-knn", "ease", "als", "hashing"}
    # Cold items: only the content encoder can find them; the whole catalog is reported too.
    cold = {r["name"]: r for r in payload["protocols"]["cold-items"]["results"]}
    assert cold["hashing"]["metrics"]["recall@5"] > 0
    assert "whole_catalog" in cold["hashing"]
    assert payload["run"]["date"] and payload["run"]["machine"]
    assert (tmp_path / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_evaluates_item2vec_and_hybrid_without_training_a_stored_model(settings, tmp_path):
    make_site()
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["i2v"] = {
        "CLASS": "embrec.encoders.item2vec.Item2VecEncoder",
        "OPTIONS": {"model_dir": str(tmp_path / "models"), "vector_size": 8, "epochs": 20},
    }
    encoders["both"] = {
        "CLASS": "embrec.encoders.hybrid.HybridEncoder",
        "OPTIONS": {"parts": [{"encoder": "i2v"}, {"encoder": "hashing", "weight": 0.5}]},
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders}
    out = StringIO()
    call_command(
        "embrec_evaluate",
        holdout=2,
        validation=1,
        k=5,
        budget=2,
        no_similar=True,
        methods=["i2v:last=2", "both:name=hybrid"],
        json=str(tmp_path / "r.json"),
        stdout=out,
        stderr=StringIO(),
        verbosity=0,
    )
    payload = json.loads((tmp_path / "r.json").read_text())
    results = {r["name"]: r for r in payload["protocols"]["leave-last"]["results"]}
    assert set(results) == {"i2v:last=2", "hybrid"}
    assert results["i2v:last=2"]["metrics"]["hit_rate@5"] > 0.5
    # The hybrid's part weights are part of its search space.
    assert all("weights" in s["params"] for s in results["hybrid"]["searched"])
    # Evaluation retrains in memory on the training split; it never writes the site's model.
    assert not (tmp_path / "models").exists()


def test_command_rejects_bad_input():
    with pytest.raises(CommandError, match="No interactions are recorded"):
        call_command("embrec_evaluate", "testapp.article", stdout=StringIO())
    make_site(users=6)
    with pytest.raises(CommandError, match="--k must be at least 1"):
        call_command("embrec_evaluate", "testapp.article", k=0)
    with pytest.raises(CommandError, match="Unknown method 'magic'"):
        call_command(
            "embrec_evaluate", "testapp.article", holdout=2, methods=["magic"], stdout=StringIO()
        )
    with pytest.raises(CommandError, match="Bad option"):
        call_command(
            "embrec_evaluate",
            "testapp.article",
            holdout=2,
            methods=["hashing:lats=3"],
            stdout=StringIO(),
        )
    with pytest.raises(CommandError, match="No user of testapp.article has at least 61"):
        call_command("embrec_evaluate", "testapp.article", holdout=30, stdout=StringIO())
    with pytest.raises(CommandError, match="--coherence-field: testapp.article has no field"):
        call_command(
            "embrec_evaluate",
            "testapp.article",
            holdout=2,
            validation=1,
            methods=["popularity"],
            coherence_field="nothing",
            stdout=StringIO(),
        )
    with pytest.raises(CommandError, match="global-time"):
        call_command(
            "embrec_evaluate",
            "testapp.article",
            protocol=["global-time"],
            test_share=0.7,
            validation_share=0.5,
            stdout=StringIO(),
        )
    with pytest.raises(CommandError, match="not registered"):
        call_command("embrec_evaluate", "testapp.nothing", stdout=StringIO())
    note = Note.objects.create(slug="n", text="a note")
    Interaction.objects.create(
        user=get_user_model().objects.first(),
        content_type=ContentType.objects.get_for_model(Note),
        object_pk=note.pk,
        kind="view",
        weight=1.0,
    )
    with pytest.raises(CommandError, match="Several registered models have interactions"):
        call_command("embrec_evaluate", stdout=StringIO())


# ----------------------------------------------------------------------------- intrinsic


def test_intrinsic_tasks_on_a_hand_made_vocabulary(tmp_path):
    vectors = {
        "king": np.array([1.0, 1.0, 0.0]),
        "queen": np.array([1.0, -1.0, 0.0]),
        "man": np.array([0.0, 1.0, 0.0]),
        "woman": np.array([0.0, -1.0, 0.0]),
        "cat": np.array([0.0, 0.0, 1.0]),
    }

    def words(ws):
        return [vectors.get(w) for w in ws]

    pairs = [("king", "queen", 5.0), ("man", "woman", 3.0), ("king", "man", 8.0), ("cat", "x", 1)]
    rho, used = intrinsic.word_similarity(words, pairs)
    assert used == 3  # "x" is unknown
    assert rho == pytest.approx(1.0)  # cosines 0, -1, 0.707 rank like 5, 3, 8
    questions = [("family", "man", "king", "woman", "queen"), ("x", "man", "king", "cat", "woman")]
    accuracy, answered, groups = intrinsic.analogies(words, questions)
    assert answered == 2 and accuracy == pytest.approx(0.5)
    assert groups == {"semantic": 0.5}


def test_intrinsic_command_reports_glove_on_gensim_test_sets(tmp_path, monkeypatch):
    glove = intrinsic.GloVeVectors()
    monkeypatch.setattr(
        intrinsic, "default_encoders", lambda: {"glove-6b-50d": (glove.words, glove.documents)}
    )
    out = StringIO()
    call_command(
        "embrec_evaluate",
        intrinsic=True,
        json=str(tmp_path / "i.json"),
        png=str(tmp_path / "i.png"),
        stdout=out,
        stderr=StringIO(),
    )
    assert "glove-6b-50d" in out.getvalue() and "wordsim353_spearman" in out.getvalue()
    (result,) = json.loads((tmp_path / "i.json").read_text())["intrinsic"]
    scores = result["scores"]
    # Published GloVe 6B 50d figures: WordSim353 ≈ 0.50, SimLex-999 ≈ 0.26.
    assert 0.45 < scores["wordsim353_spearman"] < 0.56
    assert 0.2 < scores["simlex999_spearman"] < 0.32
    assert scores["analogy_accuracy"] > 0.4
    assert 0.2 < scores["lee_pearson"] < 0.6
    assert result["coverage"]["wordsim353"] == "353/353"
    assert (tmp_path / "i.png").read_bytes()[:4] == b"\x89PNG"


def test_intrinsic_command_compares_configured_encoders(tmp_path, monkeypatch, settings):
    """--encoders adds EMBREC aliases: a static word-vector alias reads its vocabulary (GloVe's
    figures again), any other text encoder embeds words as text; others are refused."""
    monkeypatch.setattr(intrinsic, "default_encoders", lambda: {})
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["image"] = {"CLASS": "embrec.encoders.image.ImageEncoder", "OPTIONS": {}}
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders}
    call_command(
        "embrec_evaluate",
        intrinsic=True,
        encoders=["glove", "hashing"],
        json=str(tmp_path / "i.json"),
        stdout=StringIO(),
        stderr=StringIO(),
    )
    results = {r["encoder"]: r for r in json.loads((tmp_path / "i.json").read_text())["intrinsic"]}
    assert set(results) == {"glove", "hashing"}
    assert 0.45 < results["glove"]["scores"]["wordsim353_spearman"] < 0.56
    assert results["glove"]["coverage"]["wordsim353"] == "353/353"
    # Hashing knows no word meanings: every pair is scored, near-zero correlation.
    assert results["hashing"]["coverage"]["simlex999"] == "999/999"
    assert abs(results["hashing"]["scores"]["wordsim353_spearman"]) < 0.2
    with pytest.raises(CommandError, match="does not embed text"):
        call_command("embrec_evaluate", intrinsic=True, encoders=["image"], stdout=StringIO())
    with pytest.raises(CommandError, match="Unknown encoder alias 'nope'"):
        call_command("embrec_evaluate", intrinsic=True, encoders=["nope"], stdout=StringIO())
    with pytest.raises(CommandError, match="--encoders selects encoders for --intrinsic"):
        call_command("embrec_evaluate", encoders=["glove"], stdout=StringIO())


def test_fine_tuned_encoders_are_retrained_per_split_never_read_from_storage(settings):
    from embrec.evaluation.methods import FinetunedItemVectors
    from embrec.evaluation.site import content_source
    from embrec.registry import registry

    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["tuned-text"] = {"CLASS": "embrec.encoders.finetune.FinetunedEncoder", "OPTIONS": {}}
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders}
    make_site(users=3)
    rec = registry.get(Article)
    keys = [str(pk) for pk in Article.objects.order_by("pk").values_list("pk", flat=True)]
    content = content_source(rec, keys)
    source = content("tuned-text")
    # Its stored vectors come from a model trained on every interaction: the evaluation
    # fine-tunes the base model on each split's training part instead.
    assert isinstance(source, FinetunedItemVectors)
    assert content("tuned-text") is source
    assert source.texts(keys[:2]) == [rec.get_text(a) for a in Article.objects.order_by("pk")[:2]]
    assert not isinstance(content("hashing"), FinetunedItemVectors)


def test_any_trained_encoder_is_retrained_on_the_split(settings, tmp_path):
    make_site()
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["cc"] = {
        "CLASS": "embrec.encoders.cooccurrence.CooccurrenceEncoder",
        "OPTIONS": {"dimensions": 8, "model_dir": str(tmp_path / "models")},
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders}
    call_command(
        "embrec_evaluate",
        holdout=2,
        validation=1,
        k=5,
        methods=["cc:last=2"],
        json=str(tmp_path / "r.json"),
        stdout=StringIO(),
        stderr=StringIO(),
        verbosity=0,
    )
    payload = json.loads((tmp_path / "r.json").read_text())
    (result,) = payload["protocols"]["leave-last"]["results"]
    assert result["metrics"]["hit_rate@5"] > 0.3
    assert "cc:last=2" in payload["protocols"]["leave-last"]["similar"]
    assert not (tmp_path / "models").exists()
